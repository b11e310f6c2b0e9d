import test from 'ava';
import type { ExecutionContext } from 'ava';
import { createHash, createHmac, randomBytes } from 'node:crypto';
import { ErrorCode, StripvaultError } from '../../appliance/errors.ts';
import { unwrapKey } from '../../appliance/split/keywrap.ts';
import {
  checkKeySetRecord,
  combineOfficerShares,
  initMasterKey,
  masterKeyBytes,
  recoverMasterKey,
  splitMasterKey,
  unwrapUnderMaster,
  wrapUnderMaster,
} from '../../keymgr/master-key.ts';
import type { KeySetRecord, MasterKeySplit } from '../../keymgr/master-key.ts';
import { encodeOfficerShare, officerShareTextPrefix, officersMax, parseOfficerShare } from '../../keymgr/officer-share.ts';
import { SealedState } from '../../keymgr/sealed-state.ts';

// Every T-subset of K officers is tried for these; (16, 16) is the widest key set allowed.
const geometries: readonly (readonly [threshold: number, officers: number])[] = [
  [1, 1],
  [1, 3],
  [2, 2],
  [2, 3],
  [3, 5],
  [5, 8],
  [16, 16],
];

const toHex = (b: Uint8Array) => Buffer.from(b).toString('hex');

function names(count: number): string[] {
  return Array.from({ length: count }, (_, i) => `officer-${String.fromCharCode(97 + i)}`);
}

function subsets<T>(items: readonly T[], size: number): T[][] {
  if (size === 0) return [[]];
  if (items.length < size) return [];
  const [first, ...rest] = items as [T, ...T[]];
  return [...subsets(rest, size - 1).map((s) => [first, ...s]), ...subsets(rest, size)];
}

/** Everything that would betray a share or the key if it showed up in an error. */
function secretsOf(split: MasterKeySplit, masterKey?: Uint8Array): string[] {
  const out: string[] = [];
  for (const s of split.shares) {
    const body = s.text.slice(officerShareTextPrefix.length);
    const bytes = Buffer.from(parseOfficerShare(s.text).shareBytes);
    out.push(s.text, body, body.slice(0, 24), bytes.toString('hex'), bytes.toString('base64'), bytes.subarray(0, 32).toString('hex'));
  }
  if (masterKey !== undefined) {
    const k = Buffer.from(masterKey);
    out.push(k.toString('hex'), k.toString('base64'), k.toString('base64url'));
  }
  return out;
}

async function expectRejects(
  t: ExecutionContext,
  p: Promise<unknown> | (() => unknown),
  code: ErrorCode,
  secrets: readonly string[],
  what: string,
): Promise<StripvaultError | undefined> {
  const err =
    typeof p === 'function'
      ? t.throws(p, { instanceOf: StripvaultError }, what)
      : await t.throwsAsync(p, { instanceOf: StripvaultError }, what);
  if (!(err instanceof StripvaultError)) return undefined;
  t.is(err.code, code, `${what}: ${err.message}`);
  const said = `${err.message} ${JSON.stringify(err.detail)} ${err.stack ?? ''}`;
  for (const s of secrets) t.false(said.includes(s), `${what}: error quotes share or key material`);
  return err;
}

/** A share of `split` with one bit of its Shamir bytes flipped, re-encoded with a valid checksum. */
function flipBit(text: string, byte: number, bit: number): string {
  const f = parseOfficerShare(text);
  const shareBytes = new Uint8Array(f.shareBytes);
  shareBytes[byte] = (shareBytes[byte] as number) ^ (1 << bit);
  return encodeOfficerShare({ ...f, shareBytes });
}

test('the key set record is public: names, digests and verifier, no share or key bytes', async (t) => {
  const masterKey = new Uint8Array(randomBytes(masterKeyBytes));
  const when = new Date('2030-01-02T03:04:05.000Z');
  const split = await splitMasterKey(masterKey, { officers: ['alice', 'bob', 'carol'], threshold: 2, now: () => when });
  const { keySet } = split;
  t.is(keySet.version, 1);
  t.regex(keySet.keySetId, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  t.is(keySet.threshold, 2);
  t.deepEqual(keySet.officers, [
    { name: 'alice', index: 1 },
    { name: 'bob', index: 2 },
    { name: 'carol', index: 3 },
  ]);
  t.is(keySet.createdAt, when.toISOString());
  t.deepEqual(
    split.shares.map((s) => [s.officer, s.officerIndex]),
    [
      ['alice', 1],
      ['bob', 2],
      ['carol', 3],
    ],
  );
  // The digest and verifier formulas are part of the stored format: pin them independently.
  const id = Buffer.from(keySet.keySetId.replaceAll('-', ''), 'hex');
  for (const s of split.shares) {
    const f = parseOfficerShare(s.text);
    t.is(f.keySetId, keySet.keySetId);
    t.deepEqual([f.threshold, f.officerCount], [2, 3]);
    const digest = createHash('sha256')
      .update('stripvault/officer-share-digest/v1\0')
      .update(id)
      .update(Uint8Array.of(s.officerIndex))
      .update(f.shareBytes)
      .digest('hex');
    t.is(keySet.shareDigests[s.officerIndex - 1], digest);
  }
  t.is(keySet.verifier, createHmac('sha256', masterKey).update('stripvault/master-key-verifier/v1\0').update(id).digest('hex'));
  const stored = JSON.stringify(keySet);
  for (const s of secretsOf(split, masterKey)) t.false(stored.includes(s));
  // Round trip through the metadata store's JSON.
  t.deepEqual(checkKeySetRecord(JSON.parse(stored)), keySet);
  t.true(Object.isFrozen(keySet) && Object.isFrozen(keySet.officers) && Object.isFrozen(keySet.shareDigests));
});

test('every T-subset of K officers unseals to the same key; T-1 do not', async (t) => {
  for (const [threshold, officerCount] of geometries) {
    const masterKey = new Uint8Array(randomBytes(masterKeyBytes));
    const split = await splitMasterKey(masterKey, { officers: names(officerCount), threshold });
    const secrets = secretsOf(split, masterKey);
    let tried = 0;
    for (const subset of subsets(split.shares, threshold)) {
      const state = new SealedState(split.keySet);
      // Arrival order must not matter.
      const order = tried % 2 === 0 ? subset : [...subset].reverse();
      for (const [i, share] of order.entries()) {
        t.true(state.isSealed());
        await expectRejects(t, () => state.masterKey(), ErrorCode.Sealed, secrets, 'masterKey() before the T-th share');
        const progress = await state.submitShare(share.text);
        t.is(progress.received, i + 1 === threshold ? threshold : i + 1);
        t.deepEqual(progress.officers, order.slice(0, i + 1).map((s) => s.officer));
        t.is(progress.sealed, i + 1 < threshold);
      }
      t.is(toHex(state.masterKey()), toHex(masterKey), `(${threshold},${officerCount}) subset ${subset.map((s) => s.officerIndex)}`);
      t.is(toHex(await recoverMasterKey(split.keySet, order.map((s) => s.text))), toHex(masterKey));
      tried++;
    }
    t.true(tried >= 1);
    if (threshold > 1) {
      const short = split.shares.slice(0, threshold - 1);
      await expectRejects(t, recoverMasterKey(split.keySet, short.map((s) => s.text)), ErrorCode.UnsealInsufficient, secrets, 'T-1');
      const state = new SealedState(split.keySet);
      for (const s of short) await state.submitShare(s.text);
      t.deepEqual({ ...state.progress(), officers: [...state.progress().officers] }, {
        sealed: true,
        keySetId: split.keySet.keySetId,
        threshold,
        received: threshold - 1,
        officers: short.map((s) => s.officer),
      });
      await expectRejects(t, () => state.masterKey(), ErrorCode.Sealed, secrets, 'T-1 shares');
    }
  }
});

test('initMasterKey: a random key, recoverable by T officers and matching the verifier', async (t) => {
  const a = await initMasterKey({ officers: ['alice', 'bob', 'carol'], threshold: 2 });
  const b = await initMasterKey({ officers: ['alice', 'bob', 'carol'], threshold: 2 });
  const keyA = await recoverMasterKey(a.keySet, [a.shares[0]!.text, a.shares[2]!.text]);
  const keyB = await recoverMasterKey(b.keySet, [b.shares[1]!.text, b.shares[0]!.text]);
  t.is(keyA.length, masterKeyBytes);
  t.not(toHex(keyA), toHex(keyB));
  t.not(a.keySet.keySetId, b.keySet.keySetId);
  const id = Buffer.from(a.keySet.keySetId.replaceAll('-', ''), 'hex');
  t.is(createHmac('sha256', keyA).update('stripvault/master-key-verifier/v1\0').update(id).digest('hex'), a.keySet.verifier);
});

test('a share with one flipped bit is rejected and its officer named; the good shares still unseal', async (t) => {
  const masterKey = new Uint8Array(randomBytes(masterKeyBytes));
  const split = await splitMasterKey(masterKey, { officers: ['alice', 'bob', 'carol'], threshold: 2 });
  const secrets = secretsOf(split, masterKey);
  const bob = split.shares[1]!;
  const state = new SealedState(split.keySet);
  await state.submitShare(split.shares[0]!.text);
  // Every byte of the Shamir share, the x coordinate (last byte) included.
  for (let byte = 0; byte <= masterKeyBytes; byte++) {
    let bit = byte % 8;
    const x = parseOfficerShare(bob.text).shareBytes[masterKeyBytes] as number;
    if (byte === masterKeyBytes && (x ^ (1 << bit)) === 0) bit = (bit + 1) % 8;
    const bad = flipBit(bob.text, byte, bit);
    const err = await expectRejects(t, state.submitShare(bad), ErrorCode.OfficerShareInvalid, [...secrets, bad], `byte ${byte}`);
    t.is(err?.detail?.officer, 'bob');
    t.is(err?.detail?.officerIndex, 2);
    t.true(err?.message.includes('"bob"'));
    t.true(state.isSealed());
    t.is(state.progress().received, 1, 'a rejected share leaves the accepted ones in place');
  }
  await state.submitShare(bob.text);
  t.is(toHex(state.masterKey()), toHex(masterKey));
});

test('a share relabelled as another officer, or with the wrong T or K, is rejected as invalid', async (t) => {
  const masterKey = new Uint8Array(randomBytes(masterKeyBytes));
  const split = await splitMasterKey(masterKey, { officers: ['alice', 'bob', 'carol'], threshold: 2 });
  const secrets = secretsOf(split, masterKey);
  const alice = parseOfficerShare(split.shares[0]!.text);
  const state = new SealedState(split.keySet);
  const asBob = encodeOfficerShare({ ...alice, officerIndex: 2 });
  const err = await expectRejects(t, state.submitShare(asBob), ErrorCode.OfficerShareInvalid, secrets, 'alice as bob');
  t.is(err?.detail?.officer, 'bob');
  await expectRejects(t, state.submitShare(encodeOfficerShare({ ...alice, threshold: 3 })), ErrorCode.OfficerShareInvalid, secrets, 'T');
  await expectRejects(t, state.submitShare(encodeOfficerShare({ ...alice, officerCount: 4 })), ErrorCode.OfficerShareInvalid, secrets, 'K');
  t.is(state.progress().received, 0);
});

test('a share of another key set is named foreign; a forged key set id fails the digest', async (t) => {
  const officers = ['alice', 'bob', 'carol'];
  const ours = await initMasterKey({ officers, threshold: 2 });
  const theirs = await initMasterKey({ officers, threshold: 2 });
  const secrets = [...secretsOf(ours), ...secretsOf(theirs)];
  const state = new SealedState(ours.keySet);
  await state.submitShare(ours.shares[0]!.text);
  const foreign = theirs.shares[1]!.text;
  const err = await expectRejects(t, state.submitShare(foreign), ErrorCode.OfficerShareForeign, secrets, 'foreign');
  t.is(err?.detail?.shareKeySetId, theirs.keySet.keySetId);
  t.is(err?.detail?.keySetId, ours.keySet.keySetId);
  t.is(err?.detail?.officerIndex, 2);
  const relabelled = encodeOfficerShare({ ...parseOfficerShare(foreign), keySetId: ours.keySet.keySetId });
  await expectRejects(t, state.submitShare(relabelled), ErrorCode.OfficerShareInvalid, secrets, 'foreign share under our id');
  t.deepEqual(state.progress().officers, ['alice']);
  await state.submitShare(ours.shares[1]!.text);
  t.false(state.isSealed());
});

test('a second share from the same officer is refused, the first kept', async (t) => {
  const split = await initMasterKey({ officers: ['alice', 'bob', 'carol'], threshold: 3 });
  const secrets = secretsOf(split);
  const state = new SealedState(split.keySet);
  await state.submitShare(split.shares[1]!.text);
  // Same text, and the same text re-wrapped with whitespace: still bob.
  for (const again of [split.shares[1]!.text, `  ${split.shares[1]!.text}\n`]) {
    const err = await expectRejects(t, state.submitShare(again), ErrorCode.OfficerShareDuplicate, secrets, 'duplicate');
    t.is(err?.detail?.officer, 'bob');
  }
  t.deepEqual(state.progress().officers, ['bob']);
  const dup = parseOfficerShare(split.shares[0]!.text);
  await expectRejects(t, combineOfficerShares(split.keySet, [dup, dup, parseOfficerShare(split.shares[1]!.text)]), ErrorCode.OfficerShareDuplicate, secrets, 'combine');
});

test('garbage texts are refused with typed errors and do not disturb progress', async (t) => {
  const split = await initMasterKey({ officers: ['alice', 'bob'], threshold: 2 });
  const secrets = secretsOf(split);
  const state = new SealedState(split.keySet);
  await state.submitShare(split.shares[0]!.text);
  const text = split.shares[1]!.text;
  for (const g of ['', 'hello', 'svshare1.', text.slice(0, -3), text.slice(0, -1) + (text.endsWith('A') ? 'B' : 'A'), 'svshare9.' + text.slice(9), text + '='] as const) {
    await expectRejects(t, state.submitShare(g), ErrorCode.OfficerShareMalformed, secrets, `garbage ${g.length}`);
  }
  await expectRejects(t, state.submitShare(42 as unknown as string), ErrorCode.OfficerShareMalformed, secrets, 'not a string');
  t.deepEqual(state.progress().officers, ['alice']);
  await state.submitShare(text);
  t.false(state.isSealed());
});

test('seal() zeroes the master key and forgets the shares; unsealing again works', async (t) => {
  const masterKey = new Uint8Array(randomBytes(masterKeyBytes));
  const split = await splitMasterKey(masterKey, { officers: ['alice', 'bob', 'carol'], threshold: 2 });
  const secrets = secretsOf(split, masterKey);
  const state = new SealedState(split.keySet);
  await state.submitShare(split.shares[0]!.text);
  await state.submitShare(split.shares[2]!.text);
  const held = state.masterKey();
  t.is(toHex(held), toHex(masterKey));
  t.deepEqual(state.progress().officers, ['alice', 'carol']);
  await expectRejects(t, state.submitShare(split.shares[1]!.text), ErrorCode.AlreadyUnsealed, secrets, 'third share');

  state.seal();
  t.true(held.every((b) => b === 0), 'the key buffer is zeroed');
  t.true(state.isSealed());
  await expectRejects(t, () => state.masterKey(), ErrorCode.Sealed, secrets, 'after seal');
  t.deepEqual({ ...state.progress(), officers: [...state.progress().officers] }, {
    sealed: true,
    keySetId: split.keySet.keySetId,
    threshold: 2,
    received: 0,
    officers: [],
  });
  state.seal(); // idempotent

  // alice was part of the last unseal; that must not count now.
  await state.submitShare(split.shares[0]!.text);
  t.true(state.isSealed());
  await state.submitShare(split.shares[1]!.text);
  t.is(toHex(state.masterKey()), toHex(masterKey));
  t.not(state.masterKey(), held, 'a fresh buffer, not the zeroed one');
});

test('seal() and reset() discard pending shares, including shares submitted just before', async (t) => {
  const masterKey = new Uint8Array(randomBytes(masterKeyBytes));
  const split = await splitMasterKey(masterKey, { officers: ['alice', 'bob', 'carol'], threshold: 2 });
  const secrets = secretsOf(split, masterKey);
  const [alice, bob, carol] = split.shares as [(typeof split.shares)[0], (typeof split.shares)[0], (typeof split.shares)[0]];
  const state = new SealedState(split.keySet);

  await state.submitShare(alice.text);
  state.reset();
  t.is(state.progress().received, 0);
  // After reset alice may submit again: her old share is gone, not a duplicate.
  await state.submitShare(alice.text);

  // Bob's share is handed in, then the officers seal before it is processed: it must not unseal.
  const late = state.submitShare(bob.text);
  state.seal();
  await expectRejects(t, late, ErrorCode.Sealed, secrets, 'share submitted before seal()');
  t.true(state.isSealed());
  t.is(state.progress().received, 0);

  const late2 = state.submitShare(carol.text);
  state.reset();
  await expectRejects(t, late2, ErrorCode.Sealed, secrets, 'share submitted before reset()');
  t.is(state.progress().received, 0);

  await state.submitShare(carol.text);
  await state.submitShare(bob.text);
  t.is(toHex(state.masterKey()), toHex(masterKey));
  state.reset(); // no effect once unsealed
  t.false(state.isSealed());
});

test('shares arriving together: exactly T are used, the rest are told it is already unsealed', async (t) => {
  const masterKey = new Uint8Array(randomBytes(masterKeyBytes));
  const split = await splitMasterKey(masterKey, { officers: names(5), threshold: 3 });
  const state = new SealedState(split.keySet);
  const results = await Promise.allSettled(split.shares.map((s) => state.submitShare(s.text)));
  t.deepEqual(
    results.map((r) => (r.status === 'fulfilled' ? 'ok' : (r.reason as StripvaultError).code)),
    ['ok', 'ok', 'ok', ErrorCode.AlreadyUnsealed, ErrorCode.AlreadyUnsealed],
  );
  t.is(toHex(state.masterKey()), toHex(masterKey));
  t.deepEqual(state.progress().officers, names(3));
});

test('an inconsistent key set record (verifier of another set) fails the unseal without blaming a share', async (t) => {
  const masterKey = new Uint8Array(randomBytes(masterKeyBytes));
  const split = await splitMasterKey(masterKey, { officers: ['alice', 'bob'], threshold: 2 });
  const other = await initMasterKey({ officers: ['alice', 'bob'], threshold: 2 });
  const secrets = secretsOf(split, masterKey);
  const tampered: KeySetRecord = { ...split.keySet, verifier: other.keySet.verifier };
  const state = new SealedState(tampered);
  await state.submitShare(split.shares[0]!.text);
  await expectRejects(t, state.submitShare(split.shares[1]!.text), ErrorCode.UnsealVerifyFailed, secrets, 'verifier');
  t.true(state.isSealed());
  t.is(state.progress().received, 0, 'the set that failed together is dropped');
  // Digests of another key set: the genuine share no longer matches.
  const swapped = new SealedState({ ...split.keySet, shareDigests: other.keySet.shareDigests });
  await expectRejects(t, swapped.submitShare(split.shares[0]!.text), ErrorCode.OfficerShareInvalid, secrets, 'digests');
});

test('wrapUnderMaster / unwrapUnderMaster: only while unsealed, only with this master key', async (t) => {
  const masterKey = new Uint8Array(randomBytes(masterKeyBytes));
  const split = await splitMasterKey(masterKey, { officers: ['alice', 'bob'], threshold: 2 });
  const secrets = secretsOf(split, masterKey);
  const state = new SealedState(split.keySet);
  const workgroupKey = new Uint8Array(randomBytes(32));
  await expectRejects(t, () => wrapUnderMaster(state, workgroupKey), ErrorCode.Sealed, secrets, 'wrap while sealed');
  for (const s of split.shares) await state.submitShare(s.text);

  const wrapped = wrapUnderMaster(state, workgroupKey);
  t.is(wrapped.length, 40);
  t.is(toHex(unwrapUnderMaster(state, wrapped)), toHex(workgroupKey));
  // The master key itself is not the KEK (a key derived for wrapping is).
  t.throws(() => unwrapKey(masterKey, wrapped), { instanceOf: StripvaultError });

  // Re-splitting the same master key to new officers keeps wrapped keys readable.
  const resplit = await splitMasterKey(state.masterKey(), { officers: ['dave', 'erin', 'frank'], threshold: 2 });
  const state2 = new SealedState(resplit.keySet);
  await state2.submitShare(resplit.shares[2]!.text);
  await state2.submitShare(resplit.shares[0]!.text);
  t.is(toHex(unwrapUnderMaster(state2, wrapped)), toHex(workgroupKey));

  const stranger = await initMasterKey({ officers: ['x'], threshold: 1 });
  const state3 = new SealedState(stranger.keySet);
  await state3.submitShare(stranger.shares[0]!.text);
  await expectRejects(t, () => unwrapUnderMaster(state3, wrapped), ErrorCode.KeyUnwrap, secrets, 'other master key');
  await expectRejects(t, () => wrapUnderMaster(state, new Uint8Array(16).fill(1)), ErrorCode.InvalidArgument, secrets, 'short key');
  await expectRejects(t, () => unwrapUnderMaster(state, wrapped.subarray(0, 39)), ErrorCode.InvalidArgument, secrets, 'short wrapped');

  state.seal();
  await expectRejects(t, () => unwrapUnderMaster(state, wrapped), ErrorCode.Sealed, secrets, 'unwrap after seal');
});

test('init refuses bad officer lists and thresholds', async (t) => {
  const bad: [string, unknown[], number][] = [
    ['no officers', [], 1],
    ['too many officers', names(officersMax + 1), 2],
    ['duplicate name', ['alice', 'bob', 'alice'], 2],
    ['names differing in case only', ['alice', 'Alice'], 1],
    ['empty name', ['alice', ''], 1],
    ['padded name', [' alice'], 1],
    ['control character', ['ali\nce'], 1],
    ['overlong name', ['a'.repeat(65)], 1],
    ['not a string', ['alice', 7], 1],
    ['threshold 0', ['alice', 'bob'], 0],
    ['threshold > K', ['alice', 'bob'], 3],
    ['fractional threshold', ['alice', 'bob'], 1.5],
  ];
  for (const [what, officers, threshold] of bad) {
    const err = await t.throwsAsync(initMasterKey({ officers: officers as string[], threshold }), { instanceOf: StripvaultError }, what);
    t.is(err?.code, ErrorCode.InvalidArgument, what);
  }
  await t.throwsAsync(splitMasterKey(new Uint8Array(masterKeyBytes), { officers: ['a'], threshold: 1 }), { instanceOf: StripvaultError }, 'zero key');
  await t.throwsAsync(splitMasterKey(new Uint8Array(16).fill(1), { officers: ['a'], threshold: 1 }), { instanceOf: StripvaultError }, 'short key');
});

test('checkKeySetRecord refuses damaged records; SealedState will not start from one', async (t) => {
  const { keySet } = await initMasterKey({ officers: ['alice', 'bob', 'carol'], threshold: 2 });
  const bad: [string, unknown][] = [
    ['null', null],
    ['string', 'keyset'],
    ['version', { ...keySet, version: 2 }],
    ['key set id', { ...keySet, keySetId: 'KS-1' }],
    ['threshold > K', { ...keySet, threshold: 4 }],
    ['threshold 0', { ...keySet, threshold: 0 }],
    ['no officers', { ...keySet, officers: [], shareDigests: [] }],
    ['officer index', { ...keySet, officers: [keySet.officers[0], { name: 'bob', index: 3 }, keySet.officers[2]] }],
    ['duplicate name', { ...keySet, officers: [keySet.officers[0], { name: 'alice', index: 2 }, keySet.officers[2]] }],
    ['digest count', { ...keySet, shareDigests: keySet.shareDigests.slice(1) }],
    ['digest hex', { ...keySet, shareDigests: ['zz'.repeat(32), ...keySet.shareDigests.slice(1)] }],
    ['verifier', { ...keySet, verifier: keySet.verifier.toUpperCase() }],
    ['createdAt', { ...keySet, createdAt: 'yesterday' }],
  ];
  for (const [what, record] of bad) {
    t.is(t.throws(() => checkKeySetRecord(record), { instanceOf: StripvaultError }, what)?.code, ErrorCode.KeySetInvalid, what);
    t.is(t.throws(() => new SealedState(record as KeySetRecord), { instanceOf: StripvaultError }, what)?.code, ErrorCode.KeySetInvalid, what);
  }
});
