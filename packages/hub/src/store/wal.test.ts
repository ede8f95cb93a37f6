import { describe, expect, it } from 'vitest';
import { encodeEntry, readEntries, type WalOp } from './wal.js';

const ops = (n: number): WalOp[] => [
  { db: 0, key: `0x${n.toString(16).padStart(64, '0')}`, value: Buffer.from(`{"n":${n}}`) },
  { db: 3, key: `market/ordér/${n}`, value: Buffer.alloc(0) },
  { db: 3, key: 'gone', value: undefined },
];

describe('write-ahead log entries', () => {
  it('read back in order, whole: puts, empty values, removes, non-ASCII keys', () => {
    const log = Buffer.concat([encodeEntry(7, ops(1)), encodeEntry(7, ops(2)), Buffer.alloc(64)]);
    expect(readEntries(log, 7)).toEqual([ops(1), ops(2)]);
  });
  it('end at a torn entry: every truncation of the last entry keeps exactly the whole ones before it', () => {
    const first = encodeEntry(1, ops(1));
    const second = encodeEntry(1, ops(2));
    for (let cut = 0; cut < second.length; cut++) {
      const log = Buffer.concat([first, second.subarray(0, cut), Buffer.alloc(8)]);
      expect(readEntries(log, 1)).toEqual([ops(1)]);
    }
  });
  it('end at any flipped byte of an entry (checksum, header or payload)', () => {
    const first = encodeEntry(1, ops(1));
    const second = encodeEntry(1, ops(2));
    for (let at = 0; at < second.length; at++) {
      const bad = Buffer.from(second);
      bad[at]! ^= 0x01;
      expect(readEntries(Buffer.concat([first, bad, encodeEntry(1, ops(3))]), 1)).toEqual([ops(1)]);
    }
  });
  it("end at another epoch's entry: a reused file's leftovers are never replayed", () => {
    const log = Buffer.concat([encodeEntry(5, ops(1)), encodeEntry(3, ops(2)), encodeEntry(5, ops(3))]);
    expect(readEntries(log, 5)).toEqual([ops(1)]);
    expect(readEntries(log, 3)).toEqual([]);
  });
  it('log text values as UTF-8, byte for byte what the same value as bytes logs, and hand back views of them', () => {
    const text = [
      { db: 0, key: 'k1', value: '{"a":"é€😀"}' },
      { db: 3, key: 'k2', value: '' },
      { db: 3, key: 'gone', value: undefined },
    ];
    const bytes = text.map((op) => ({ ...op, value: op.value === undefined ? undefined : Buffer.from(op.value) }));
    const views: (Buffer | undefined)[] = [];
    const entry = encodeEntry(9, text, views);
    expect(entry.equals(encodeEntry(9, bytes))).toBe(true);
    expect(readEntries(entry, 9)).toEqual([bytes]);
    expect(views).toEqual(bytes.map((op) => op.value));
    expect(views[0]!.buffer).toBe(entry.buffer); // a view, not a copy
  });
  it('refuse keys LMDB could not take anyway rather than truncate them', () => {
    expect(() => encodeEntry(1, [{ db: 0, key: 'x'.repeat(70_000), value: undefined }])).toThrow(RangeError);
  });
});
