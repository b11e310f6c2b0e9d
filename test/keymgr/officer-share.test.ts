import test from 'ava';
import type { ExecutionContext } from 'ava';
import { randomBytes, randomUUID } from 'node:crypto';
import { crc32 } from 'node:zlib';
import { ErrorCode, StripvaultError } from '../../appliance/errors.ts';
import {
  encodeOfficerShare,
  officerShareBytes,
  officerSharePayloadBytes,
  officerShareTextChars,
  officerShareTextPrefix,
  officersMax,
  parseOfficerShare,
} from '../../keymgr/officer-share.ts';
import type { OfficerShareFields, OfficerShareMalformedReason } from '../../keymgr/officer-share.ts';

// Payload offsets, restated from the table in keymgr/officer-share.ts so a silent layout change fails here.
const at = { version: 0, keySetId: 1, officerIndex: 17, threshold: 18, officerCount: 19, share: 20, crc: 53 } as const;
const garbageRounds = 2000;

function sampleShare(overrides: Partial<OfficerShareFields> = {}): OfficerShareFields {
  const shareBytes = new Uint8Array(randomBytes(officerShareBytes));
  shareBytes[officerShareBytes - 1] = 7;
  return { keySetId: randomUUID(), officerIndex: 2, threshold: 2, officerCount: 3, shareBytes, ...overrides };
}

/** Every string that would betray the share if it showed up in an error. */
function secretsOf(text: string, share: OfficerShareFields): string[] {
  const body = text.slice(officerShareTextPrefix.length);
  const bytes = Buffer.from(share.shareBytes);
  return [text, body, body.slice(0, 24), bytes.toString('hex'), bytes.toString('base64'), bytes.toString('base64url')];
}

function expectMalformed(t: ExecutionContext, input: unknown, reason: OfficerShareMalformedReason, secrets: string[], what: string): void {
  const err = t.throws(() => parseOfficerShare(input), { instanceOf: StripvaultError }, what);
  if (!(err instanceof StripvaultError)) return;
  t.is(err.code, ErrorCode.OfficerShareMalformed, what);
  t.is(err.detail?.reason, reason, what);
  const said = `${err.message} ${JSON.stringify(err.detail)} ${err.stack ?? ''}`;
  for (const s of secrets) t.false(said.includes(s), `${what}: error quotes share material`);
}

/** Re-encodes a payload after `mutate`, with a correct CRC, so it gets past the checksum. */
function forge(text: string, mutate: (payload: Buffer) => void): string {
  const payload = Buffer.from(text.slice(officerShareTextPrefix.length), 'base64url');
  mutate(payload);
  payload.writeUInt32BE(crc32(payload.subarray(0, at.crc)), at.crc);
  return officerShareTextPrefix + payload.toString('base64url');
}

// Deterministic, so a failure reproduces.
function xorshift(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
}

test('round trip: every field survives, the text has the documented shape', (t) => {
  for (const [officerIndex, threshold, officerCount] of [
    [1, 1, 1],
    [3, 2, 3],
    [16, 16, 16],
    [1, 5, officersMax],
  ] as const) {
    const share = sampleShare({ officerIndex, threshold, officerCount });
    const text = encodeOfficerShare(share);
    t.true(text.startsWith('svshare1.'));
    t.is(text.length, officerShareTextChars);
    t.regex(text.slice(officerShareTextPrefix.length), /^[A-Za-z0-9_-]+$/);
    const back = parseOfficerShare(text);
    t.deepEqual({ ...back, shareBytes: [...back.shareBytes] }, { ...share, shareBytes: [...share.shareBytes] });
    // A plain Uint8Array: shamir-secret-sharing refuses Buffers.
    t.is(back.shareBytes.constructor, Uint8Array);
  }
});

test('payload layout matches the documented offsets', (t) => {
  const share = sampleShare({ officerIndex: 3, threshold: 2, officerCount: 5 });
  const payload = Buffer.from(encodeOfficerShare(share).slice(officerShareTextPrefix.length), 'base64url');
  t.is(payload.length, officerSharePayloadBytes);
  t.is(payload[at.version], 1);
  t.is(payload.subarray(at.keySetId, at.keySetId + 16).toString('hex'), share.keySetId.replaceAll('-', ''));
  t.deepEqual([payload[at.officerIndex], payload[at.threshold], payload[at.officerCount]], [3, 2, 5]);
  t.deepEqual([...payload.subarray(at.share, at.crc)], [...share.shareBytes]);
  t.is(payload.readUInt32BE(at.crc), crc32(payload.subarray(0, at.crc)));
});

test('whitespace from printing, wrapping or indenting is ignored', (t) => {
  const share = sampleShare();
  const text = encodeOfficerShare(share);
  const wrapped = '  ' + (text.match(/.{1,20}/g) ?? []).join('\n\t ') + '\r\n';
  t.deepEqual([...parseOfficerShare(wrapped).shareBytes], [...share.shareBytes]);
});

test('non-text, empty and oversized input are refused by reason', (t) => {
  const share = sampleShare();
  const text = encodeOfficerShare(share);
  const secrets = secretsOf(text, share);
  for (const v of [undefined, null, 42, {}, Buffer.from(text)]) expectMalformed(t, v, 'not-text', secrets, `input ${typeof v}`);
  expectMalformed(t, '', 'empty', secrets, 'empty');
  expectMalformed(t, ' \n\t ', 'empty', secrets, 'whitespace only');
  expectMalformed(t, text + ' '.repeat(2000), 'too-long', secrets, 'oversized');
});

test('wrong prefix and unknown versions are told apart', (t) => {
  const share = sampleShare();
  const text = encodeOfficerShare(share);
  const body = text.slice(officerShareTextPrefix.length);
  const secrets = secretsOf(text, share);
  for (const p of ['', 'svshare.', 'svshare1', 'SVSHARE1.', 'svshare1:', 'xvshare1.', 'svkey1.']) {
    expectMalformed(t, p + body, 'prefix', secrets, `prefix "${p}"`);
  }
  for (const p of ['svshare2.', 'svshare0.', 'svshare10.']) expectMalformed(t, p + body, 'version', secrets, `prefix "${p}"`);
  // Prefix says 1 but the payload (with a good checksum) says 2.
  expectMalformed(t, forge(text, (p) => (p[at.version] = 2)), 'version', secrets, 'payload version 2');
});

test('characters outside base64url are refused, not skipped', (t) => {
  const share = sampleShare();
  const text = encodeOfficerShare(share);
  const secrets = secretsOf(text, share);
  const i = officerShareTextPrefix.length + 10;
  for (const c of ['+', '/', '=', '!', '.', 'é', '\u0000']) {
    expectMalformed(t, text.slice(0, i) + c + text.slice(i + 1), 'base64', secrets, `char ${JSON.stringify(c)}`);
  }
  // Node's decoder would silently drop the '!' and decode the rest; we must not.
  expectMalformed(t, text.slice(0, i) + '!' + text.slice(i), 'base64', secrets, 'inserted char');
});

test('truncated at every length, and one character too long', (t) => {
  const share = sampleShare();
  const text = encodeOfficerShare(share);
  const secrets = secretsOf(text, share);
  for (let n = officerShareTextPrefix.length; n < text.length; n++) {
    expectMalformed(t, text.slice(0, n), 'length', secrets, `truncated to ${n}`);
  }
  expectMalformed(t, text + 'A', 'length', secrets, 'one extra char');
  expectMalformed(t, text + text.slice(officerShareTextPrefix.length), 'length', secrets, 'body twice');
});

test('every single-character typo and every swap of neighbours fails the checksum', (t) => {
  const share = sampleShare();
  const text = encodeOfficerShare(share);
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
  let typos = 0;
  for (let i = officerShareTextPrefix.length; i < text.length; i++) {
    for (const c of alphabet) {
      if (c === text[i]) continue;
      typos++;
      const bad = text.slice(0, i) + c + text.slice(i + 1);
      const err = t.throws(() => parseOfficerShare(bad), { instanceOf: StripvaultError });
      if (err?.detail?.reason !== 'checksum') t.fail(`typo at ${i} not caught by the checksum (${String(err?.detail?.reason)})`);
    }
    if (i + 1 < text.length && text[i] !== text[i + 1]) {
      const swapped = text.slice(0, i) + text[i + 1] + text[i] + text.slice(i + 2);
      const err = t.throws(() => parseOfficerShare(swapped), { instanceOf: StripvaultError });
      t.is(err?.detail?.reason, 'checksum', `swap at ${i}`);
    }
  }
  t.is(typos, (text.length - officerShareTextPrefix.length) * 63);
});

test('fields outside their ranges are refused even with a good checksum', (t) => {
  const share = sampleShare({ officerIndex: 2, threshold: 2, officerCount: 3 });
  const text = encodeOfficerShare(share);
  const secrets = secretsOf(text, share);
  const cases: [string, (p: Buffer) => void][] = [
    ['officer index 0', (p) => (p[at.officerIndex] = 0)],
    ['officer index > K', (p) => (p[at.officerIndex] = 4)],
    ['threshold 0', (p) => (p[at.threshold] = 0)],
    ['threshold > K', (p) => (p[at.threshold] = 4)],
    ['officer count 0', (p) => (p[at.officerCount] = 0)],
    ['officer count > max', (p) => ((p[at.officerCount] = officersMax + 1), (p[at.threshold] = 2))],
    ['x coordinate 0', (p) => (p[at.crc - 1] = 0)],
  ];
  for (const [what, mutate] of cases) expectMalformed(t, forge(text, mutate), 'field', secrets, what);
  // The forge helper itself produces parseable shares when it changes nothing.
  t.notThrows(() => parseOfficerShare(forge(text, () => undefined)));
});

test('random garbage never parses and only ever fails as a malformed share', (t) => {
  const next = xorshift(0x5eed);
  const alphabets = ['ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_', ' .:+/=!\n\u00e9\u0000svhare1'];
  let valid = 0;
  for (let round = 0; round < garbageRounds; round++) {
    const alphabet = alphabets[round % 2] as string;
    const length = next() % (officerShareTextChars + 20);
    let s = round % 3 === 0 ? officerShareTextPrefix : '';
    for (let i = 0; i < length; i++) s += alphabet[next() % alphabet.length];
    try {
      parseOfficerShare(s);
      valid++;
    } catch (e) {
      if (!(e instanceof StripvaultError) || e.code !== ErrorCode.OfficerShareMalformed) {
        t.fail(`garbage failed with ${(e as Error).message}`);
        return;
      }
    }
  }
  t.is(valid, 0);
});

test('encode refuses what parse would refuse', (t) => {
  const bad: [string, Partial<OfficerShareFields>][] = [
    ['index 0', { officerIndex: 0 }],
    ['index > K', { officerIndex: 4 }],
    ['threshold > K', { threshold: 4 }],
    ['K > max', { officerCount: officersMax + 1 }],
    ['fractional', { threshold: 1.5 }],
    ['short share', { shareBytes: new Uint8Array(officerShareBytes - 1).fill(1) }],
    ['long share', { shareBytes: new Uint8Array(officerShareBytes + 1).fill(1) }],
    ['x = 0', { shareBytes: new Uint8Array(officerShareBytes).fill(1).fill(0, officerShareBytes - 1) }],
    ['uppercase key set id', { keySetId: randomUUID().toUpperCase() }],
    ['not a uuid', { keySetId: 'default' }],
  ];
  for (const [what, o] of bad) {
    const err = t.throws(() => encodeOfficerShare(sampleShare(o)), { instanceOf: StripvaultError }, what);
    t.is(err?.code, ErrorCode.InvalidArgument, what);
  }
});
