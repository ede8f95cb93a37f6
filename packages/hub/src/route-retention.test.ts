import { describe, expect, it } from 'vitest';
import { openLmdbStore } from './store/lmdb.js';
import type { RouteRecord } from './store/types.js';
import { resolveRouteRetention, startRoutePruner } from './route-retention.js';
import { tempDirs } from '../../../test/helpers/temp-dirs.mjs';

const tmp = tempDirs('trickle-retention-');
const route = (n: number, more: Partial<RouteRecord>): RouteRecord => ({
  paymentId: `0x${n.toString(16).padStart(64, '0')}` as never,
  from: `0x${'1'.repeat(40)}` as never,
  to: `0x${'2'.repeat(40)}` as never,
  fromChannel: `0x${'3'.repeat(64)}` as never,
  amount: BigInt(n),
  status: 'delivered',
  ...more,
});

describe('route retention', () => {
  it('defaults to 7 days every 10 minutes in batches of 250, and refuses bad options', () => {
    const now = () => 5;
    expect(resolveRouteRetention({ now })).toEqual({ windowMs: 168 * 3_600_000, everyMs: 600_000, batch: 250, now });
    expect(resolveRouteRetention({ hours: 0 }).windowMs).toBe(0);
    for (const bad of [{ hours: -1 }, { hours: NaN }, { everyMs: 0 }, { batch: 0 }, { batch: 1001 }, { batch: 1.5 }])
      expect(() => resolveRouteRetention(bad)).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
  });

  it('a pass prunes a backlog in batches until one is not full; pending routes stay; a window of 0 prunes nothing', async () => {
    const path = tmp();
    const store = openLmdbStore({ path });
    const writes = Array.from({ length: 2_500 }, (_, k) => ({
      kind: 'route' as const,
      route: route(k + 1, { finishedAt: 1_000 + k }),
    }));
    await store.commit([...writes, { kind: 'route', route: route(9_999, { status: 'pending' }) }]);
    const hour = 3_600_000;
    // Off: nothing is started, nothing deleted.
    const off = startRoutePruner({
      store,
      retention: resolveRouteRetention({ hours: 0, now: () => 10 * hour }),
      onPruned: () => expect.fail('pruned with a window of 0'),
      log: () => undefined,
    });
    await off.stop();
    const batches: number[] = [];
    let done!: () => void;
    const finished = new Promise<void>((r) => (done = r));
    const logs: Record<string, unknown>[] = [];
    const pruner = startRoutePruner({
      store,
      retention: resolveRouteRetention({ hours: 1, everyMs: 3_600_000, batch: 1000, now: () => 1_000 + 2_000 + hour }),
      onPruned: (n) => batches.push(n),
      log: (_level, _msg, fields) => {
        logs.push(fields);
        done();
      },
    });
    await finished; // the pass at start logs once it is over
    await pruner.stop();
    // finishedAt 1,000 … 3,499 and the window ends at 3,000: 2,001 routes, in batches of at most 1,000.
    expect(batches).toEqual([1000, 1000, 1]);
    expect(logs).toEqual([{ pruned: 2001, stamped: 0, retentionHours: 1 }]);
    expect((await store.loadPendingRoutes()).map((r) => r.amount)).toEqual([9_999n]);
    expect(await store.pruneRoutes!({ before: 3_499, now: 0, limit: 1000 })).toMatchObject({ pruned: 499 });
    await store.close();
  });
});
