import test from 'ava';
import { BlockIndex } from '../../appliance/volume/block-index.ts';

/** A small deterministic generator, so a failing sequence can be replayed. */
function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 4294967296;
  };
}

/** Every key of `model` is found with its value, and nothing else is. */
function agrees(index: BlockIndex, model: Map<number, number>, probes: readonly number[]): boolean {
  if (index.size !== model.size) return false;
  for (const [k, v] of model) if (index.get(k) !== v) return false;
  for (const p of probes) if (!model.has(p) && (index.get(p) !== -1 || index.has(p))) return false;
  return true;
}

test('the block index agrees with a Map through random sets, overwrites and deletes', (t) => {
  // Key sets that stress different things: a cache's sliding window of consecutive blocks (long probe
  // runs and many backward shifts), a few hot addresses, and addresses past 2^32 (the hash's high half).
  const shapes: Array<[string, (r: () => number, step: number) => number]> = [
    ['sliding window', (r, step) => step + Math.floor(r() * 300)],
    ['hot few', (r) => Math.floor(r() * 40)],
    ['wide', (r) => Math.floor(r() * 2 ** 40)],
    ['multiples of 2^32', (r) => Math.floor(r() * 50) * 4294967296 + Math.floor(r() * 3)],
  ];
  for (const [name, key] of shapes) {
    for (let seed = 1; seed <= 4; seed++) {
      const r = lcg(seed * 7919);
      const index = new BlockIndex();
      const model = new Map<number, number>();
      const probes: number[] = [];
      let ok = true;
      for (let step = 0; step < 6000 && ok; step++) {
        const k = key(r, step);
        probes.push(k);
        const op = r();
        if (op < 0.55) {
          const v = Math.floor(r() * 100000);
          index.set(k, v);
          model.set(k, v);
        } else {
          ok = index.delete(k) === model.delete(k);
        }
        if (step % 500 === 0 || !ok) ok = ok && agrees(index, model, probes.slice(-200));
      }
      t.true(ok && agrees(index, model, probes), `${name}, seed ${seed}`);
    }
  }
});

test('the block index empties and refills, and refuses keys and values it cannot hold', (t) => {
  const index = new BlockIndex();
  for (let i = 0; i < 10000; i++) index.set(i, i * 2);
  t.is(index.size, 10000);
  t.is(index.get(9999), 19998);
  for (let i = 0; i < 10000; i += 2) t.true(index.delete(i));
  t.is(index.size, 5000);
  t.is(index.get(4), -1);
  t.is(index.get(5), 10);
  t.false(index.delete(4), 'deleting an absent key says so');
  t.is(index.get(-1), -1, 'the empty-slot sentinel is never found');
  t.false(index.has(-1));
  t.false(index.delete(-1));
  t.is(index.size, 5000);
  index.clear();
  t.is(index.size, 0);
  t.is(index.get(5), -1);
  index.set(5, 1);
  t.is(index.get(5), 1);
  for (const bad of [-1, 0.5, Number.NaN, 2 ** 53]) t.throws(() => index.set(bad, 0), undefined, `key ${bad}`);
  for (const bad of [-1, 0.5, 2 ** 31]) t.throws(() => index.set(1, bad), undefined, `value ${bad}`);
});
