import { afterEach, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openLmdbStore } from './lmdb.js';
import type { ChannelRecord } from './types.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
const tmp = () => {
  const d = mkdtempSync(join(tmpdir(), 'trickle-lmdb-'));
  dirs.push(d);
  return d;
};

const record = (n: number): ChannelRecord => ({
  params: {
    chainId: 31337n,
    adjudicator: '0x5FbDB2315678afecb367f032d93F642f64180aa3' as never,
    device: '0x19E7E376E7C213B7E7e7e46cc70A5dD086DAff2A' as never,
    hub: '0x1563915e194D8CfBA1943570603F7606A3115508' as never,
    token: '0x0000000000000000000000000000000000000000' as never,
    challengeDuration: 3600n,
    salt: `0x${n.toString(16).padStart(64, '0')}` as never,
  },
  channelId: `0x${(n + 1).toString(16).padStart(64, '0')}` as never,
  funding: { device: 10n ** 30n, hub: 5n },
  status: 'open',
  latest: { state: { channelId: `0x${(n + 1).toString(16).padStart(64, '0')}` as never, version: 2n ** 63n, paidByDevice: (1n << 255n) + 7n, paidByHub: 0n, round: 3n, isFinal: false } },
  hubSignedVersion: 2n ** 63n,
});

describe('LMDB store', () => {
  it('round-trips channel records exactly (uint256 counters, uint64 versions) across a reopen', async () => {
    const path = tmp();
    const s1 = openLmdbStore({ path });
    await s1.commit([{ kind: 'channel', record: record(1) }, { kind: 'channel', record: record(2) }, { kind: 'meta', key: 'lastBlock', value: '42' }]);
    await s1.close();
    const s2 = openLmdbStore({ path });
    const all = await s2.loadChannels();
    expect(all).toEqual([record(1), record(2)]);
    expect(await s2.getMeta('lastBlock')).toBe('42');
    await s2.close();
  });
  it('meta prefixes and deletes', async () => {
    const s = openLmdbStore({ path: tmp() });
    await s.commit([{ kind: 'meta', key: 'market/order/1', value: 'a' }, { kind: 'meta', key: 'market/order/2', value: 'b' }, { kind: 'meta', key: 'other', value: 'c' }]);
    await s.commit([{ kind: 'deleteMeta', key: 'market/order/1' }]);
    expect(await s.loadMetaPrefix('market/order/')).toEqual([{ key: 'market/order/2', value: 'b' }]);
    await s.close();
  });
  it('keeps only pending routes for recovery', async () => {
    const s = openLmdbStore({ path: tmp() });
    const base = { from: record(1).params.device, to: record(1).params.hub, fromChannel: record(1).channelId, amount: 5n };
    await s.commit([
      { kind: 'route', route: { ...base, paymentId: `0x${'01'.repeat(32)}` as never, status: 'pending' } },
      { kind: 'route', route: { ...base, paymentId: `0x${'02'.repeat(32)}` as never, status: 'delivered' } },
    ]);
    expect((await s.loadPendingRoutes()).map((r) => r.paymentId)).toEqual([`0x${'01'.repeat(32)}`]);
    await s.close();
  });
});
