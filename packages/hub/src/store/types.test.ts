import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { decodeRecord, encodeChannelRecord, encodeRecord, type ChannelRecord } from './types.js';

const hex = (bytes: number) =>
  fc.uint8Array({ minLength: bytes, maxLength: bytes }).map((b) => `0x${Buffer.from(b).toString('hex')}`);
const u = fc.bigInt({ min: 0n, max: (1n << 256n) - 1n });
const state = fc.record({
  channelId: hex(32),
  version: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
  paidByDevice: u,
  paidByHub: u,
  round: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
  locksRoot: hex(32),
  lockedByDevice: u,
  lockedByHub: u,
  isFinal: fc.boolean(),
});
const record = fc.record(
  {
    params: fc.record({
      chainId: u,
      adjudicator: hex(20),
      device: hex(20),
      hub: hex(20),
      token: hex(20),
      challengeDuration: fc.bigInt({ min: 1n, max: 1n << 40n }),
      salt: hex(32),
    }),
    channelId: hex(32),
    funding: fc.record({ device: u, hub: u }),
    status: fc.constantFrom('open', 'closing', 'closed'),
    latest: fc.record({ state, deviceSig: hex(65), hubSig: hex(65) }, { requiredKeys: ['state'] }),
    hubSignedVersion: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
    outgoing: fc.record({ state, hubSig: hex(65), paymentId: hex(32) }, { requiredKeys: ['state', 'hubSig'] }),
  },
  { requiredKeys: ['params', 'channelId', 'funding', 'status', 'latest', 'hubSignedVersion'] },
) as unknown as fc.Arbitrary<ChannelRecord>;

describe('channel record encoding', () => {
  it('the direct encoder gives back exactly what the generic one does (1,000 random records)', () => {
    fc.assert(
      fc.property(record, (r) => {
        const fast = encodeChannelRecord(r);
        expect(() => JSON.parse(fast.toString('utf8'))).not.toThrow();
        expect(decodeRecord(fast)).toEqual(decodeRecord(encodeRecord(r)));
      }),
      { numRuns: 1000 },
    );
  });
  it('a channel whose funding or status changes is written with the new values (the unchanged parts are cached)', () => {
    fc.assert(
      fc.property(record, u, u, (r, device, hub) => {
        const first = decodeRecord(encodeChannelRecord(r));
        expect(first).toEqual(decodeRecord(encodeRecord(r)));
        const moved: ChannelRecord = {
          ...r,
          funding: { device, hub },
          status: r.status === 'open' ? 'closing' : 'open',
        };
        expect(decodeRecord(encodeChannelRecord(moved))).toEqual(decodeRecord(encodeRecord(moved)));
        const other: ChannelRecord = { ...moved, channelId: `0x${'ee'.repeat(32)}` as ChannelRecord['channelId'] };
        expect(decodeRecord(encodeChannelRecord(other))).toEqual(decodeRecord(encodeRecord(other)));
      }),
      { numRuns: 200 },
    );
  });
  it('decoding (which keeps values records share once in memory) gives back exactly the record written', () => {
    fc.assert(
      fc.property(record, record, (a, b) => {
        // two records decoded one after the other share the values they have in common; each stays exact
        const da = decodeRecord(encodeChannelRecord(a));
        const db = decodeRecord(encodeChannelRecord(b));
        expect(da).toEqual(a);
        expect(db).toEqual(b);
        expect(decodeRecord(encodeRecord({ ...a, status: 'closing', funding: { device: 0n, hub: 0n } }))).toEqual({
          ...a,
          status: 'closing',
          funding: { device: 0n, hub: 0n },
        });
      }),
      { numRuns: 500 },
    );
  });
  it('a record of another shape (a field it does not know) takes the generic path and keeps the field', () => {
    fc.assert(
      fc.property(record, (r) => {
        const extra = { ...r, note: 'kept' } as ChannelRecord;
        expect(decodeRecord<Record<string, unknown>>(encodeChannelRecord(extra)).note).toBe('kept');
        const extraState = { ...r, latest: { ...r.latest, state: { ...r.latest.state, extra: '1' } } } as ChannelRecord;
        expect(decodeRecord<ChannelRecord>(encodeChannelRecord(extraState)).latest.state).toHaveProperty('extra', '1');
      }),
      { numRuns: 100 },
    );
  });
});
