import { describe, expect, it } from 'vitest';
import { decodeFrame, encodeFrame, DEFAULT_MAX_FRAME_BYTES, type MessageOf } from '@trickle/protocol/codec';
import { WIRE_LIMITS } from '@trickle/protocol/wire-schema';
import { joinClearing, MAX_CLEARING_PARTS, splitClearing, type HeldClearing } from './clearingParts.js';

const BLOB = WIRE_LIMITS.maxBlobBytes;
const sig = new Uint8Array(65).fill(7);
const otherSig = new Uint8Array(65).fill(8);
/** `n` bytes that differ from one position to the next (so a part in the wrong place shows). */
const bytes = (n: number, seed = 0): Uint8Array => {
  const b = new Uint8Array(n);
  for (let k = 0; k < n; k++) b[k] = (k * 31 + seed) & 0xff;
  return b;
};
/** The records joined, as hex (a quick comparison of large byte arrays). */
const hex = (records: Uint8Array[]): string[] => records.map((r) => Buffer.from(r).toString('hex'));

/** Feed frames one by one, as a device would; returns the whole record once joined, and what is held after each. */
function feed(frames: MessageOf<'clearing'>[], held?: HeldClearing) {
  let h = held;
  const records: Uint8Array[] = [];
  for (const f of frames) {
    const j = joinClearing(h, f);
    h = j.held;
    if (j.record) records.push(j.record);
  }
  return { held: h, records };
}

describe('a clearing record in parts', () => {
  it('a record that fits one blob goes whole, as before (no part fields)', () => {
    const record = bytes(BLOB);
    const frames = splitClearing(3n, record, sig);
    expect(frames).toEqual([{ t: 'clearing', id: 0, round: 3n, record, sig }]);
    expect(hex(feed(frames).records)).toEqual(hex([record]));
  });

  it('a record of about 150 KB goes in 3 frames, each within the default frame limit, and joins back byte for byte', () => {
    const record = bytes(150_000);
    const frames = splitClearing(9n, record, sig);
    expect(frames.map((f) => [f.part, f.parts, f.record.length])).toEqual([
      [0, 3, BLOB],
      [1, 3, BLOB],
      [2, 3, 150_000 - 2 * BLOB],
    ]);
    // through the real codec, with the limit a device decodes with
    const wire = frames.map((f) => decodeFrame(encodeFrame(f), { maxFrameBytes: DEFAULT_MAX_FRAME_BYTES }));
    for (const f of frames) expect(encodeFrame(f).length).toBeLessThanOrEqual(DEFAULT_MAX_FRAME_BYTES);
    const out = feed(wire as MessageOf<'clearing'>[]);
    expect(hex(out.records)).toEqual(hex([record]));
    expect(out.held).toBeUndefined();
    // in any order, and a part sent twice (a re-send) changes nothing
    const shuffled = feed([frames[2]!, frames[0]!, frames[2]!, frames[1]!]);
    expect(hex(shuffled.records)).toEqual(hex([record]));
  });

  it('parts of another round, signature or count start over: never mixed into the record held', () => {
    const a = splitClearing(9n, bytes(130_000, 1), sig);
    const b = splitClearing(9n, bytes(130_000, 2), otherSig); // same round and count, another signature
    const c = splitClearing(10n, bytes(130_000, 1), sig);
    const d = splitClearing(9n, bytes(200_000, 1), sig); // 4 parts
    // a whole record ends the parts held
    expect(feed([a[0]!, ...splitClearing(9n, bytes(10), sig)]).held).toBeUndefined();
    for (const other of [b, c, d]) {
      const out = feed([a[0]!, a[1]!, other[0]!, a[2]!]);
      expect(out.records).toEqual([]); // a's first two parts were dropped for the other record's
      const again = feed([a[0]!, a[1]!], out.held);
      expect(hex(again.records)).toEqual(hex([bytes(130_000, 1)]));
    }
  });

  it('a part out of range or without its count, or a record in too many parts, is MALFORMED and changes nothing held', () => {
    const frames = splitClearing(9n, bytes(130_000), sig);
    const held = feed([frames[0]!]).held!;
    const snapshot = { key: held.key, parts: [...held.parts] };
    const bad: MessageOf<'clearing'>[] = [
      { ...frames[1]!, part: 3 }, // part = parts
      { ...frames[1]!, part: 4_000_000_000 },
      { ...frames[1]!, parts: undefined }, // part without parts
      { ...frames[1]!, part: undefined }, // parts without part
      { ...frames[1]!, parts: 0, part: 0 },
      { ...frames[1]!, part: 1, parts: MAX_CLEARING_PARTS + 1 }, // a flood of slots: refused before any is made
      { ...frames[1]!, part: 0, parts: 0xffffffff },
    ];
    for (const f of bad) {
      expect(() => joinClearing(held, f)).toThrow(expect.objectContaining({ code: 'MALFORMED' }));
      expect(held.key).toBe(snapshot.key);
      expect(held.parts.every((p, k) => p === snapshot.parts[k])).toBe(true);
    }
    // what was held still completes
    expect(hex(feed([frames[1]!, frames[2]!], held).records)).toEqual(hex([bytes(130_000)]));
  });

  it('what a device holds is bounded: at most MAX_CLEARING_PARTS slots of one blob, whatever a hub sends', () => {
    // a hostile hub floods parts of ever-new records, each one short of complete: one record's slots are held at a time
    let held: HeldClearing | undefined;
    for (let round = 1n; round <= 200n; round++) {
      const parts = MAX_CLEARING_PARTS;
      const frame: MessageOf<'clearing'> = { t: 'clearing', id: 0, round, record: bytes(BLOB), sig, part: 0, parts };
      held = joinClearing(held, frame).held;
      expect(held!.parts.length).toBeLessThanOrEqual(MAX_CLEARING_PARTS);
      expect(held!.parts.filter((p) => p !== undefined)).toHaveLength(1);
    }
  });

  it('the hub refuses to split a record needing more than MAX_CLEARING_PARTS parts (FRAME_TOO_LARGE)', () => {
    expect(splitClearing(1n, new Uint8Array(MAX_CLEARING_PARTS * BLOB), sig)).toHaveLength(MAX_CLEARING_PARTS);
    expect(() => splitClearing(1n, new Uint8Array(MAX_CLEARING_PARTS * BLOB + 1), sig)).toThrow(
      expect.objectContaining({ code: 'FRAME_TOO_LARGE' }),
    );
  });
});
