/**
 * Names that end up inside certificates. They are matched by other programs (OpenSSL, qemu, the
 * NBD server's COI lookup) and printed in logs and the admin UI, so they are held to a small, boring
 * alphabet: no spaces, no DN metacharacters (`,=+<>#;"\`), no Unicode look-alikes, no case games.
 */
import { isIP } from 'node:net';
import { ErrorCode, fail } from '../appliance/errors.ts';

/** X.520 ub-common-name: a CN longer than this is not a valid certificate subject. */
export const commonNameCharsMax = 64;
/** RFC 1035: a host name's textual length and one label's. */
export const hostNameCharsMax = 253;
const hostLabelCharsMax = 63;
/** The longest IPv6 literal, with an embedded IPv4 tail. */
const ipAddressCharsMax = 45;

// Lower-case alphanumerics separated by single '.', '_' or '-': `db-01`, `backup.nightly`, `coi_finance`.
const clientNamePattern = /^[a-z0-9]+(?:[._-][a-z0-9]+)*$/;
// The CA's CN is only ever shown to people, so it may have inner spaces and capitals.
const caCommonNamePattern = /^[A-Za-z0-9]+(?:[ ._-][A-Za-z0-9]+)*$/;
const hostLabelPattern = /^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$/;

function boundedString(value: unknown, what: string, max: number): string {
  if (typeof value !== 'string') fail(ErrorCode.InvalidArgument, `${what} must be a string`, { what });
  if (value.length === 0 || value.length > max) {
    fail(ErrorCode.InvalidArgument, `${what} must be 1..${max} characters`, { what, length: value.length });
  }
  return value;
}

/** A client's name: its certificate CN and the tail of its `urn:stripvault:client:` SAN. */
export function validateClientName(value: unknown, what = 'client name'): string {
  const name = boundedString(value, what, commonNameCharsMax);
  if (!clientNamePattern.test(name)) {
    fail(ErrorCode.InvalidArgument, `${what} may hold only a-z, 0-9 and single '.', '_' or '-' between them`, { what });
  }
  return name;
}

/** COI names follow the client-name alphabet so they can be listed next to client names safely. */
export function validateCoiName(value: unknown): string {
  return validateClientName(value, 'COI name');
}

export function validateCaCommonName(value: unknown): string {
  const name = boundedString(value, 'CA common name', commonNameCharsMax);
  if (!caCommonNamePattern.test(name)) {
    fail(ErrorCode.InvalidArgument, "CA common name may hold only A-Z, a-z, 0-9 and single ' ', '.', '_' or '-'");
  }
  return name;
}

/** A DNS name for a server certificate's SAN: lower-case LDH labels, no wildcards, no trailing dot. */
export function validateHostName(value: unknown): string {
  const name = boundedString(value, 'host name', hostNameCharsMax);
  const labels = name.split('.');
  for (const label of labels) {
    if (label.length > hostLabelCharsMax || !hostLabelPattern.test(label)) {
      fail(ErrorCode.InvalidArgument, `host name ${JSON.stringify(name)} is not a lower-case DNS name`, { name });
    }
  }
  // An all-numeric name would be read as an IPv4 address by some verifiers; those belong in `ips`.
  if (labels.every((l) => /^[0-9]+$/.test(l))) {
    fail(ErrorCode.InvalidArgument, `host name ${JSON.stringify(name)} looks like an address; list it in ips`, { name });
  }
  return name;
}

/** An IPv4 or IPv6 literal for an iPAddress SAN. Zone ids (`%eth0`) cannot be encoded, so they are refused. */
export function validateIpAddress(value: unknown): string {
  const ip = boundedString(value, 'IP address', ipAddressCharsMax);
  if (isIP(ip) === 0 || ip.includes('%')) fail(ErrorCode.InvalidArgument, `${JSON.stringify(ip)} is not an IP address`);
  return ip;
}
