import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { open as openLmdb } from 'lmdb';
import { openLmdbStore } from '@trickle/hub/store/lmdb';
import type { Hub } from '@trickle/hub';
import { hashPreimage } from '@trickle/protocol/locks';
import type { Bytes32 } from '@trickle/protocol/types';
import { createWorld, type World } from './helpers/harness.js';
import { leaveRunning, waitFor } from './helpers/wait.js';

const delivered = async (hub: Hub) =>
  (await hub.metrics.routes.get()).values.find((v) => v.labels['result'] === 'delivered')?.value ?? 0;
/** Poll an asynchronous condition (a metric's value) until it holds, for at most 10 s. */
async function until(cond: () => Promise<boolean>): Promise<void> {
  const end = Date.now() + 10_000;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}
const newKey = () => `0x${randomBytes(32).toString('hex')}` as Bytes32;
const prunedCount = async (hub: Hub) => (await hub.metrics.routesPruned.get()).values[0]?.value ?? 0;

/**
 * A real hub on LMDB with its clock injected: routed payments that finished are deleted (route record, credit
 * markers) once the clock passes the retention window; a route still pending keeps its record. Conditional ones go
 * once their payer's lock has expired too, with their lock hash's keys (`preimage/`, `lock-claimed/`,
 * `lock-revealed/`) when no route on the hash is left; a hash with a pending route keeps its keys.
 */
describe('route retention', () => {
  let w: World;
  beforeAll(async () => {
    w = await createWorld();
  });
  afterAll(async () => w?.close());

  it('deletes finished routes past the window, keeps a pending one, and the hub restarts on what is left', async () => {
    const storePath = join(w.dir, 'hub-retention');
    let now = Date.now();
    const routeRetention = { hours: 1, everyMs: 20, now: () => now };
    const hub = await w.startHub({ storePath, more: { routeRetention } });
    const payer = await w.client(2);
    const payee = await w.client(3);
    // This payee never countersigns a credit: its route stays pending.
    const holder = await w.client(4, { creditGuard: () => new Promise<void>(() => {}) });
    const pch = await payer.openChannel({ token: w.token, deposit: 5_000_000n });
    const ech = await payee.openChannel({ token: w.token, deposit: 1_000_000n });
    const hch = await holder.openChannel({ token: w.token, deposit: 1_000_000n });
    await w.hubDeposit(ech.channelId, 2_000_000n);
    await w.hubDeposit(hch.channelId, 2_000_000n);
    const first = await pch.pay(1_000n, { to: payee.address });
    const second = await pch.pay(2_000n, { to: payee.address });
    // Both finished (their outcome written) before the clock moves: `pay` resolves on the payer's own state.
    await until(async () => (await delivered(hub)) === 2);
    // Answered only once the restarted hub has delivered it: kept, and its outcome checked at the end.
    const held = pch.pay(3_000n, { to: holder.address });
    await waitFor(() => hub.channels.get(hch.channelId)?.outgoing !== undefined); // pending, durable

    // Conditional payments, locks for 2 h (the hub's lock to the payee: 1 h challenge + 60 s margin earlier). On h1 one
    // route, claimed. On h2 two: one to a payee that holds the lock and never claims (pending, from another payer: a
    // channel holds one lock per hash), then one claimed — the hub knows h2's preimage, the pending route keeps it.
    const keys = new Map<Bytes32, Bytes32>();
    ech.onConditionalPayment((p) => void p.claim(keys.get(p.hash)!));
    const [k1, k2] = [newKey(), newKey()];
    for (const k of [k1, k2]) keys.set(hashPreimage(k), k);
    const [h1, h2] = [hashPreimage(k1), hashPreimage(k2)];
    const payer2 = await w.client(5);
    const waiter = await w.client(6);
    const p2ch = await payer2.openChannel({ token: w.token, deposit: 1_000_000n });
    const wch = await waiter.openChannel({ token: w.token, deposit: 1_000_000n });
    await w.hubDeposit(wch.channelId, 1_000_000n);
    let waitingId: Bytes32 | undefined;
    wch.onConditionalPayment((p) => void (waitingId = p.paymentId)); // never claims
    const waiting = p2ch.pay(800n, { to: waiter.address, lock: { hash: h2, expiresIn: 7200 } });
    await waiting.locked;
    await waitFor(() => waitingId !== undefined && (hub.channels.get(wch.channelId)?.locks ?? []).length === 1);
    leaveRunning(waiting.result, 'DISCONNECTED'); // refunded or still locked when the world closes: not this test's
    for (const hash of [h1, h2]) {
      const claimed = pch.pay(700n, { to: payee.address, lock: { hash, expiresIn: 7200 } });
      await expect(claimed).resolves.toEqual({ status: 'claimed', preimage: keys.get(hash) });
    }
    await until(async () => (await delivered(hub)) === 4);

    // Past the window and the locks' expiry (the pruner runs every 20 ms), the four finished routes go; the pending
    // ones do not.
    expect(await prunedCount(hub)).toBe(0);
    now += 4 * 3_600_000;
    await until(async () => (await prunedCount(hub)) >= 4);
    const pendingId = hub.channels.get(hch.channelId)!.outgoing!.paymentId!;
    await hub.close();
    w.hub = undefined;

    // Read beside the store: only the pending route's record is left, and no marker of the pruned payments.
    const env = openLmdb({ path: storePath, readOnly: true });
    const routeIds = [...env.openDB<Buffer, string>({ name: 'routes', encoding: 'binary' }).getKeys()];
    await env.close();
    expect(routeIds.sort()).toEqual([pendingId, waitingId!].sort());
    const store = openLmdbStore({ path: storePath });
    const markers = (await store.loadMetaPrefix('credited/')).map((e) => e.key);
    expect(markers.filter((k) => k.includes(first.paymentId!) || k.includes(second.paymentId!))).toEqual([]);
    expect((await store.loadPendingRoutes()).map((r) => r.paymentId).sort()).toEqual([pendingId, waitingId!].sort());
    // h1's route is gone, and its keys with it; h2 keeps its preimage and claim while its pending route is left.
    const hashKeys = async (hash: Bytes32) =>
      [
        ...(await store.loadMetaPrefix(`preimage/${hash}`)),
        ...(await store.loadMetaPrefix(`lock-claimed/${hash}/`)),
        ...(await store.loadMetaPrefix(`lock-revealed/${hash}`)),
      ].map((e) => e.key.toLowerCase());
    expect(await hashKeys(h1)).toEqual([]);
    expect(await hashKeys(h2)).toEqual([`preimage/${h2}`, `lock-claimed/${h2}/${payee.address}`.toLowerCase()]);
    await store.close();

    // The restarted hub resumes the pending route and delivers it once the payee countersigns.
    // Same port: the payer's client reconnects by itself.
    const again = await w.startHub({ storePath, more: { routeRetention, port: hub.port } });
    await holder.disconnect();
    await w.client(4);
    await waitFor(() => again.channels.get(hch.channelId)!.latest.state.paidByHub >= 3_000n, 10_000);
    expect(again.channels.get(hch.channelId)!.latest.state.paidByHub).toBe(3_000n);
    // The payer's payment resolves with the id of the route the pruner kept.
    await expect(held).resolves.toMatchObject({ paymentId: pendingId, amount: 3_000n });
  });
});
