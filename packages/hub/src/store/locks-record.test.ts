/**
 * Records that hold locks: the hub's ChannelRecord (latest lock list, and the outstanding proposal's lock list and
 * lock transition) written to a real LMDB store and read back, and a route record of a conditional route.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { hashPreimage, lockCommitment, type Lock } from '@trickle/protocol/locks';
import type { Address, Bytes32, ChannelId, SignatureHex } from '@trickle/protocol/types';
import { openLmdbStore } from './lmdb.js';
import { decodeRecord, encodeChannelRecord, type ChannelRecord } from './types.js';
import { testRecord, testRoute, testState } from './records.fixture.js';

const dir = mkdtempSync(join(tmpdir(), 'trickle-locks-record-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const h = (n: number, bytes = 32) => ('0x' + n.toString(16).padStart(bytes * 2, '0')) as `0x${string}`;
const locks: Lock[] = [
  { amount: 700n, hash: hashPreimage(h(1) as Bytes32), expiry: 1_900_000_000n, payer: 'device' },
  { amount: (1n << 200n) + 3n, hash: hashPreimage(h(2) as Bytes32), expiry: 1_900_000_100n, payer: 'hub' },
];
const channelId = h(9) as ChannelId;
const record: ChannelRecord = testRecord(channelId, 7n, {
  state: { paidByDevice: 10n, ...lockCommitment(locks) },
  latest: { deviceSig: h(1, 65) as SignatureHex, hubSig: h(2, 65) as SignatureHex },
  funding: { device: 1000n, hub: 1n << 90n },
  hubSignedVersion: 8n,
  locks,
  outgoing: {
    state: testState(channelId, 8n, { paidByDevice: 10n, ...lockCommitment(locks.slice(0, 1)) }),
    hubSig: h(3, 65) as SignatureHex,
    locks: locks.slice(0, 1),
    unlock: { hash: locks[1]!.hash },
  },
});

describe('records with locks', () => {
  it('a channel record with locks and an outstanding unlock round-trips through the encoder', () => {
    expect(decodeRecord(encodeChannelRecord(record))).toEqual(record);
    // Without locks the record keeps its fast, lock-free shape.
    const { locks: _l, outgoing: _o, ...plain } = record;
    expect(Object.keys(decodeRecord<ChannelRecord>(encodeChannelRecord(plain)))).not.toContain('locks');
  });

  it('LMDB stores and loads the lock lists, and a conditional route with its lock', async () => {
    const store = openLmdbStore({ path: join(dir, 'db') });
    const route = testRoute(h(4) as Bytes32, {
      to: h(7, 20) as Address,
      fromChannel: channelId,
      amount: 700n,
      status: 'pending',
      lock: locks[0],
    });
    await store.commit([
      { kind: 'channel', record },
      { kind: 'route', route },
      { kind: 'meta', key: `preimage/${locks[0]!.hash}`, value: h(1) },
    ]);
    await store.close();
    const again = openLmdbStore({ path: join(dir, 'db') });
    expect(await again.loadChannels()).toEqual([record]);
    expect(await again.loadPendingRoutes()).toEqual([route]);
    expect(await again.getMeta(`preimage/${locks[0]!.hash}`)).toBe(h(1));
    await again.close();
  });
});
