import test from 'ava';
import { randomBytes } from 'node:crypto';
import { ErrorCode, StripvaultError } from '../../appliance/errors.ts';
import { createDecipheriv } from 'node:crypto';
import { aontDecode } from '../../appliance/split/aont.ts';
import { ShareKind, shareAad, shareNonce } from '../../appliance/split/share-binding.ts';
import {
  fragmentBytes,
  NotEnoughSharesError,
  openBlock,
  sealBlock,
  type OpenRequest,
  type SealedShare,
  type ShareCandidate,
} from '../../appliance/split/split.ts';

const volumeId = randomBytes(16);

function keysFor(n: number): Buffer[] {
  return Array.from({ length: n }, () => randomBytes(32));
}

function seal(m: number, n: number, keys: Buffer[], block: Buffer | null, address = 7, generation = 5, blockBytes = 4096) {
  return sealBlock({
    volumeId,
    m,
    n,
    blockBytes,
    address,
    generation,
    epoch: 1,
    block,
    sessionKey: (i) => ({ key: keys[i]!, keySlot: 0 }),
  });
}

function cand(s: SealedShare, over: Partial<ShareCandidate> = {}): ShareCandidate {
  return { stripIndex: s.stripIndex, generation: s.generation, epoch: s.epoch, keySlot: s.keySlot, kind: s.kind, body: s.body, ...over };
}

function open(m: number, n: number, keys: Buffer[], shares: ShareCandidate[], extra: Partial<OpenRequest> = {}) {
  return openBlock({
    volumeId,
    m,
    n,
    blockBytes: 4096,
    address: 7,
    shares,
    sessionKey: (i, slot) => (slot === 0 ? keys[i] : undefined),
    complete: shares.length === n,
    ...extra,
  });
}

function* subsets(n: number, k: number, start = 0): Generator<number[]> {
  if (k === 0) {
    yield [];
    return;
  }
  for (let i = start; i <= n - k; i++) for (const rest of subsets(n, k - 1, i + 1)) yield [i, ...rest];
}

const geometries: Array<[number, number]> = [];
for (let n = 1; n <= 6; n++) for (let m = 1; m <= n; m++) geometries.push([m, n]);

test('every M-subset of shares opens the block, for every geometry with N <= 6', (t) => {
  let opened = 0;
  for (const [m, n] of geometries) {
    const keys = keysFor(n);
    const block = randomBytes(4096);
    const shares = seal(m, n, keys, block);
    t.is(shares.length, n);
    for (const subset of subsets(n, m)) {
      const r = open(m, n, keys, subset.map((i) => cand(shares[i]!)));
      t.true(r.block.equals(block), `${m}-of-${n} subset ${subset}`);
      t.is(r.generation, 5);
      opened++;
    }
  }
  t.true(opened > 100);
});

test('fewer than M shares never open, and say so with a typed error', (t) => {
  for (const [m, n] of geometries) {
    if (m === 1) continue;
    const keys = keysFor(n);
    const shares = seal(m, n, keys, randomBytes(4096));
    for (const subset of subsets(n, m - 1)) {
      const e = t.throws(() => open(m, n, keys, subset.map((i) => cand(shares[i]!)), { complete: false }));
      t.true(e instanceof NotEnoughSharesError);
      t.is((e as StripvaultError).code, ErrorCode.NotEnoughShares);
    }
  }
});

test('a flipped bit anywhere in a share is rejected and named; the block still opens from the others', (t) => {
  const [m, n] = [2, 3];
  const keys = keysFor(n);
  const block = randomBytes(4096);
  const shares = seal(m, n, keys, block);
  for (let victim = 0; victim < n; victim++) {
    for (const bit of [0, 7, 100 * 8 + 3, shares[victim]!.body.length * 8 - 1]) {
      const body = Buffer.from(shares[victim]!.body);
      body[bit >> 3]! ^= 1 << (bit & 7);
      const list = shares.map((s) => cand(s, s.stripIndex === victim ? { body } : {}));
      // Put the victim first so it is among the M tried.
      list.sort((a, b) => (a.stripIndex === victim ? -1 : b.stripIndex === victim ? 1 : 0));
      const r = open(m, n, keys, list, { verifyAll: true });
      t.true(r.block.equals(block));
      t.deepEqual(
        r.rejected.filter((x) => x.reason === 'auth').map((x) => x.stripIndex),
        [victim],
      );
    }
  }
});

test('a share moved to another address, strip, volume or generation fails authentication', (t) => {
  const [m, n] = [3, 5];
  const keys = keysFor(n);
  const block = randomBytes(4096);
  const shares = seal(m, n, keys, block);
  // Same key everywhere so only the binding (not the key) can catch a move between strips.
  const shared = keysFor(1)[0]!;
  const sameKey = Array.from({ length: n }, () => shared);
  const sharesSameKey = seal(m, n, sameKey, block);

  // moved address
  let e = t.throws(() => open(m, n, keys, shares.slice(0, 3).map((s) => cand(s)), { address: 8 }));
  t.deepEqual((e as NotEnoughSharesError).rejected.map((r) => r.reason), ['auth', 'auth', 'auth']);
  // swapped strips (0 <-> 1), same keys: only the binding can tell
  const swapped = [cand(sharesSameKey[1]!, { stripIndex: 0 }), cand(sharesSameKey[0]!, { stripIndex: 1 }), cand(sharesSameKey[2]!)];
  e = t.throws(() => open(m, n, sameKey, swapped));
  t.deepEqual(
    (e as NotEnoughSharesError).rejected.filter((r) => r.reason === 'auth').map((r) => r.stripIndex).sort(),
    [0, 1],
  );
  // another volume
  e = t.throws(() => open(m, n, keys, shares.slice(0, 3).map((s) => cand(s)), { volumeId: randomBytes(16) }));
  t.is((e as NotEnoughSharesError).rejected.length, 3);
  // claimed generation or epoch edited
  const edited = [cand(shares[0]!, { generation: 6 }), cand(shares[1]!), cand(shares[2]!), cand(shares[3]!)];
  const r = open(m, n, keys, edited);
  t.true(r.block.equals(block));
  t.deepEqual(r.rejected.map((x) => [x.stripIndex, x.reason]), [[0, 'auth']]);
  const edEpoch = [cand(shares[0]!, { epoch: 2 }), cand(shares[1]!), cand(shares[2]!), cand(shares[3]!)];
  t.deepEqual(open(m, n, keys, edEpoch).rejected.map((x) => x.reason), ['auth']);
});

test('an older-generation share is reported stale and the newest generation wins', (t) => {
  const [m, n] = [2, 3];
  const keys = keysFor(n);
  const oldBlock = randomBytes(4096);
  const newBlock = randomBytes(4096);
  const old = seal(m, n, keys, oldBlock, 7, 5);
  const cur = seal(m, n, keys, newBlock, 7, 9);
  for (let victim = 0; victim < n; victim++) {
    const list = cur.map((s) => cand(s.stripIndex === victim ? old[victim]! : s));
    const r = open(m, n, keys, list);
    t.true(r.block.equals(newBlock));
    t.is(r.generation, 9);
    t.deepEqual(r.rejected, [{ stripIndex: victim, reason: 'stale', generation: 5 }]);
  }
});

test('a torn newer write (fewer than M shares) rolls back only when every strip answered authentically', (t) => {
  const [m, n] = [3, 5];
  const keys = keysFor(n);
  const oldBlock = randomBytes(4096);
  const old = seal(m, n, keys, oldBlock, 7, 5);
  const cur = seal(m, n, keys, randomBytes(4096), 7, 9);
  // strips 0,1 got the new write, 2,3,4 did not: 2 < M new shares
  const torn = [cand(cur[0]!), cand(cur[1]!), cand(old[2]!), cand(old[3]!), cand(old[4]!)];
  const r = open(m, n, keys, torn);
  t.true(r.block.equals(oldBlock));
  t.deepEqual(r.rejected.map((x) => x.reason).sort(), ['incomplete', 'incomplete']);
  // the same situation with one strip not read: cannot rule out a complete newer write
  const e = t.throws(() => open(m, n, keys, torn.slice(0, 4), { complete: false }));
  t.true((e as NotEnoughSharesError).needMore);
  // ... or with an unauthentic old share among them
  const bad = Buffer.from(old[4]!.body);
  bad[0]! ^= 1;
  t.throws(() => open(m, n, keys, [...torn.slice(0, 4), cand(old[4]!, { body: bad })]), { instanceOf: NotEnoughSharesError });
});

test('zero blocks are tag-only shares that read back as zeros and still authenticate', (t) => {
  const [m, n] = [2, 3];
  const keys = keysFor(n);
  const shares = seal(m, n, keys, null);
  for (const s of shares) {
    t.is(s.kind, ShareKind.Zero);
    t.is(s.body.length, 16);
  }
  const r = open(m, n, keys, shares.map((s) => cand(s)));
  t.true(r.block.equals(Buffer.alloc(4096)));
  // claiming a data share is a zero marker fails: kind is bound
  const data = seal(m, n, keys, randomBytes(4096), 7, 6);
  const forged = data.map((s) => cand(s, { kind: ShareKind.Zero, body: s.body.subarray(s.body.length - 16) }));
  t.throws(() => open(m, n, keys, forged), { instanceOf: NotEnoughSharesError });
});

test('never-written slots read as zeros; an empty claim loses to any authentic newer share', (t) => {
  const [m, n] = [2, 3];
  const keys = keysFor(n);
  const empty = (i: number): ShareCandidate => ({ stripIndex: i, generation: 0, epoch: 0, keySlot: 0, kind: ShareKind.Data, body: Buffer.alloc(0) });
  const r = open(m, n, keys, [empty(0), empty(1)], { complete: false });
  t.is(r.kind, 'empty');
  t.true(r.block.equals(Buffer.alloc(4096)));
  const block = randomBytes(4096);
  const shares = seal(m, n, keys, block);
  const r2 = open(m, n, keys, [empty(0), cand(shares[1]!), cand(shares[2]!)]);
  t.true(r2.block.equals(block));
  t.deepEqual(r2.rejected.map((x) => [x.stripIndex, x.reason]), [[0, 'stale']]);
});

test('same block sealed twice never produces the same shares (fresh AONT key every write)', (t) => {
  const keys = keysFor(3);
  const block = randomBytes(4096);
  const a = seal(2, 3, keys, block, 7, 5);
  const b = seal(2, 3, keys, block, 7, 6);
  for (let i = 0; i < 3; i++) t.false(a[i]!.body.equals(b[i]!.body));
});

test('M-1 shares plus every key reveal nothing: without M fragments the AONT key cannot be recovered', (t) => {
  const [m, n] = [2, 3];
  const keys = keysFor(n);
  const block = Buffer.alloc(4096, 'SECRET-PATTERN-');
  const needle = Buffer.from('SECRET-PATTERN-');
  const shares = seal(m, n, keys, block);
  for (const s of shares) t.is(s.body.indexOf(needle), -1);
  // The attacker holds one share (M-1) and every session key: strip the GCM layer.
  const binding = { volumeId, m, n, blockBytes: 4096, stripIndex: 0, address: 7, generation: 5, epoch: 1, keySlot: 0, kind: ShareKind.Data } as const;
  const d = createDecipheriv('aes-256-gcm', keys[0]!, shareNonce(binding));
  d.setAAD(shareAad(binding));
  d.setAuthTag(shares[0]!.body.subarray(shares[0]!.body.length - 16));
  const fragment = Buffer.concat([d.update(shares[0]!.body.subarray(0, shares[0]!.body.length - 16)), d.final()]);
  // The fragment is half of the AONT package: ciphertext only, no plaintext in it ...
  t.is(fragment.indexOf(needle), -1);
  t.is(fragment.length, fragmentBytes(4096, m));
  // ... and the package key cannot be unmasked without the whole ciphertext: guessing the missing
  // half (zeros here) yields a wrong key and garbage, not the block or any of its pattern.
  const guess = Buffer.concat([fragment, Buffer.alloc(fragment.length)]);
  const wrong = aontDecode(guess, 4096);
  t.false(wrong.equals(block));
  t.is(wrong.indexOf(needle), -1);
  // With the second fragment the same procedure does recover it: the test is not vacuous.
  const d1 = createDecipheriv('aes-256-gcm', keys[1]!, shareNonce({ ...binding, stripIndex: 1 }));
  d1.setAAD(shareAad({ ...binding, stripIndex: 1 }));
  d1.setAuthTag(shares[1]!.body.subarray(shares[1]!.body.length - 16));
  const fragment1 = Buffer.concat([d1.update(shares[1]!.body.subarray(0, shares[1]!.body.length - 16)), d1.final()]);
  t.true(aontDecode(Buffer.concat([fragment, fragment1]), 4096).equals(block));
});

test('geometry and argument validation', (t) => {
  const keys = keysFor(3);
  for (const [m, n] of [[0, 3], [4, 3], [2, 17], [1.5, 3]]) {
    t.throws(() => seal(m!, n!, keys, randomBytes(4096)), { code: ErrorCode.InvalidGeometry } as never);
  }
  t.throws(() => seal(2, 3, keys, randomBytes(4095)), { code: ErrorCode.InvalidArgument } as never);
  t.throws(() => seal(2, 3, keys, randomBytes(4096), 2 ** 40), { code: ErrorCode.OutOfRange } as never);
  t.throws(() => seal(2, 3, keys, randomBytes(4096), 1, 0), { code: ErrorCode.OutOfRange } as never);
  t.throws(() => seal(2, 3, keys, randomBytes(1000), 1, 1, 1000), { code: ErrorCode.InvalidGeometry } as never);
  const shares = seal(2, 3, keys, randomBytes(4096));
  t.throws(() => open(2, 3, keys, [cand(shares[0]!), cand(shares[0]!)]), { code: ErrorCode.InvalidArgument } as never);
  // a truncated body is malformed, not a crash
  const e = t.throws(() => open(2, 3, keys, [cand(shares[0]!, { body: shares[0]!.body.subarray(5) }), cand(shares[1]!)], { complete: false }));
  t.deepEqual((e as NotEnoughSharesError).rejected.map((r) => r.reason), ['malformed']);
  // a key slot with no key is named
  const e2 = t.throws(() => open(2, 3, keys, [cand(shares[0]!, { keySlot: 3 }), cand(shares[1]!)], { complete: false }));
  t.deepEqual((e2 as NotEnoughSharesError).rejected.map((r) => r.reason), ['no-key']);
});

test('larger geometries: random subsets up to 16 strips', (t) => {
  for (const [m, n] of [[8, 16], [1, 16], [16, 16], [5, 9]] as const) {
    const keys = keysFor(n);
    const block = randomBytes(8192);
    const shares = sealBlock({ volumeId, m, n, blockBytes: 8192, address: 1, generation: 1, epoch: 0, block, sessionKey: (i) => ({ key: keys[i]!, keySlot: 0 }) });
    for (let trial = 0; trial < 5; trial++) {
      const idx = [...Array(n).keys()].sort(() => Math.random() - 0.5).slice(0, m);
      const r = openBlock({ volumeId, m, n, blockBytes: 8192, address: 1, shares: idx.map((i) => cand(shares[i]!)), sessionKey: (i) => keys[i], complete: false });
      t.true(r.block.equals(block));
    }
  }
});
