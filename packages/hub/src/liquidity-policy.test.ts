// The liquidity policy on a real channel table, committer and LMDB store (the chain's deposit answered here): a
// deposit whose record write is fenced does not stop the policy, and the budget bounds policies sharing a store.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import type { ChannelId } from '@trickle/protocol/types';
import { hubChannelRecord } from '../../../test/helpers/hub-channel.mjs';
import type { HubChain } from './chain-watcher.js';
import { heldChannelsView } from './cluster.js';
import { createCommitter } from './committer.js';
import { fencedError, type ChannelLeases } from './leases.js';
import { LiquidityPolicy, resolveLiquidity } from './liquidity.js';
import { openLmdbStore } from './store/lmdb.js';
import type { HubStore } from './store/types.js';
import { adjudicator, device, hubKey, testTable } from './table.fixture.js';

const dir = mkdtempSync(join(tmpdir(), 'trickle-liquidity-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A channel of `device` with nothing of the hub's in it (below any low-water mark). */
const empty = (salt: string) =>
  hubChannelRecord({
    hub: hubKey.address,
    device: device.address,
    adjudicator,
    salt,
    funding: { device: 1000n, hub: 0n },
  });

/** A chain whose deposits are mined at once (each channel's hub deposit starts at 0), and the deposits made. */
function chain(): { chain: HubChain; deposits: { channelId: ChannelId; amount: bigint }[] } {
  const deposits: { channelId: ChannelId; amount: bigint }[] = [];
  const totals = new Map<ChannelId, bigint>();
  const deposit = async (channelId: ChannelId, _token: unknown, amount: bigint) => {
    deposits.push({ channelId, amount });
    const total = (totals.get(channelId) ?? 0n) + amount;
    totals.set(channelId, total);
    return total;
  };
  return { chain: { deposit } as unknown as HubChain, deposits };
}

/** A logger whose lines are kept. */
function logs() {
  const lines: { level: number; msg: string; channelId?: string }[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString('utf8').split('\n')) if (l) lines.push(JSON.parse(l) as (typeof lines)[number]);
      done();
    },
  });
  return { logger: pino({ level: 'info' }, sink), lines };
}

const options = resolveLiquidity({ autoDeposit: 1_000n, budget: 10_000n }); // low-water mark: 500

describe('liquidity policy', () => {
  it('a deposit whose record write is fenced (the lease lost meanwhile) ends with a logged error; the policy goes on', async () => {
    const x = empty('01');
    const y = empty('02');
    const inner = openLmdbStore({ path: join(dir, 'fenced') });
    await inner.commit([
      { kind: 'channel', record: x },
      { kind: 'channel', record: y },
    ]);
    // Both leases held as far as this process knows; the database has given X's to another process meanwhile, so
    // its transaction refuses X's write (as PostgreSQL's fencing does), now and on every retry.
    const leases = { epochOf: () => 1n } as unknown as ChannelLeases;
    const store: HubStore = {
      ...inner,
      loadChannels: () => inner.loadChannels(),
      commit: async (writes) => {
        if (writes.some((w) => w.kind === 'channel' && w.record.channelId === x.channelId))
          throw fencedError([x.channelId]);
        return inner.commit(writes);
      },
    };
    const committer = createCommitter(store, undefined, leases);
    const table = testTable(hubKey, store, { committer });
    table.restore(await store.loadChannels());
    const { chain: c, deposits } = chain();
    const { logger, lines } = logs();
    const policy = new LiquidityPolicy(
      { channels: heldChannelsView(table, leases), chain: c, store, committer, logger, recordWaitMs: 300 },
      options,
    );
    await policy.restore();
    policy.want(x.channelId);
    policy.want(y.channelId);

    // Before: X's record write waited for a thaw that never came, and Y was never topped up.
    await expect.poll(() => table.get(y.channelId)?.funding.hub, { timeout: 5_000 }).toBe(1_000n);
    expect(deposits).toEqual([
      { channelId: x.channelId, amount: 1_000n },
      { channelId: y.channelId, amount: 1_000n },
    ]);
    expect(lines.some((l) => l.level === 50 && l.channelId === x.channelId && /not recorded/.test(l.msg))).toBe(true);
    expect(policy.spent).toBe(2_000n);
    // X still looks low here (its record could not take the deposit): it is not topped up again for it.
    policy.want(x.channelId);
    await new Promise((r) => setTimeout(r, 100));
    expect(deposits).toHaveLength(2);
    await policy.stop();
    await inner.close();
  });

  it('policies on one store reserving at the same time stay within the budget together; an older store’s spend counts', async () => {
    const inner = openLmdbStore({ path: join(dir, 'shared') });
    const records = ['11', '12'].map(empty);
    await inner.commit([
      ...records.map((record) => ({ kind: 'channel' as const, record })),
      { kind: 'meta', key: 'liquidity/spent', value: '200' }, // written by a version before the reservations
    ]);
    const { chain: c, deposits } = chain();
    const budget = resolveLiquidity({ autoDeposit: 1_000n, budget: 1_200n });
    // Two processes' policies, each with its own committer and table (one channel each), on the one store.
    const policies = await Promise.all(
      records.map(async (r) => {
        const committer = createCommitter(inner);
        const table = testTable(hubKey, inner, { committer });
        table.restore([r]);
        const p = new LiquidityPolicy(
          { channels: table, chain: c, store: inner, committer, logger: logs().logger },
          budget,
        );
        await p.restore();
        return { p, r };
      }),
    );
    for (const { p } of policies) expect(p.remaining).toBe(1_000n);
    // Both want 1,000 at once: at most one deposits it (before, each deposited 1,000 from its own count).
    for (const { p, r } of policies) p.want(r.channelId);
    await Promise.all(policies.map(({ p }) => p.stop()));
    expect(deposits.length).toBeLessThanOrEqual(1);
    const sum = () => deposits.reduce((n, d) => n + d.amount, 0n);
    expect(sum()).toBeLessThanOrEqual(1_000n);

    // Again, one after the other (both gave theirs back if both read both reservations): one deposit of 1,000 in all.
    const again = await Promise.all(
      policies.map(async ({ r }) => {
        const committer = createCommitter(inner);
        const table = testTable(hubKey, inner, { committer });
        table.restore([
          { ...r, funding: { ...r.funding, hub: deposits.find((d) => d.channelId === r.channelId)?.amount ?? 0n } },
        ]);
        const p = new LiquidityPolicy(
          { channels: table, chain: c, store: inner, committer, logger: logs().logger },
          budget,
        );
        await p.restore();
        return { p, r };
      }),
    );
    for (const { p, r } of again) {
      p.want(r.channelId);
      await p.stop();
    }
    expect(sum()).toBe(1_000n);
    expect(again[1]!.p.spent).toBe(1_200n);
    const reserved = await inner.loadMetaPrefix('liquidity/reserved/');
    expect(reserved.map((e) => e.value)).toEqual(['1000']);
    await inner.close();
  });
});
