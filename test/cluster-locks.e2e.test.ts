import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { hashPreimage } from '@trickle/protocol/locks';
import { TrickleError } from '@trickle/protocol/errors';
import { nobleSigner } from '@trickle/protocol/signer';
import type { Address, Bytes32, ChannelId } from '@trickle/protocol/types';
import { Adjudicator } from '@trickle/chain/adjudicator';
import { balanceOf } from '@trickle/chain/erc20';
import { adjudicatorClientChain } from '@trickle/client/chain';
import type { ChannelRecord } from '@trickle/hub/store/types';
import type { ClientChannel } from '@trickle/client/channel';
import { waitFor } from './helpers/wait.js';
import { RawDevice } from './helpers/raw-device.js';
import { channelRecords, clusterWorld, sql, until } from './helpers/cluster-world.js';

/**
 * Conditional (hashlocked) routed payments between devices served by different `trickle-hub` processes of one
 * cluster (three processes on one PostgreSQL database behind a TCP balancer; device k on process k mod 3). The
 * payer's process writes the outbox row with the hub's lock terms (T − Δ, Δ = challenge 2 s + margin 1 s), the
 * payee's process locks toward the payee, the payee's claim makes the preimage durable in the outbox row, and
 * whoever holds the payer channel claims the payer's lock with it. Each outcome is checked to the base unit in the
 * devices, the channel rows, the outbox row and the route record.
 */
describe('hub cluster: conditional routes across processes', () => {
  const LEASE_MS = 1500;
  const CHALLENGE = 2n;
  const DEPOSIT = 1_000_000n;
  const HUB_DEPOSIT = 1_000_000n;
  const newKey = () => `0x${randomBytes(32).toString('hex')}` as Bytes32;
  const w = clusterWorld({
    name: 'trickle-cluster-locks',
    accounts: 21,
    firstFunded: 1,
    leaseMs: LEASE_MS,
    client: { minLockSeconds: 0 }, // locks of seconds, to see them expire
  });

  async function record(url: string, id: ChannelId): Promise<ChannelRecord> {
    return (await channelRecords(url)).find((r) => r.channelId === id)!;
  }
  interface Row {
    payment_id: Bytes32;
    from_channel: ChannelId;
    to_channel: ChannelId;
    amount: string;
    status: string;
    settled: boolean;
    lock: Bytes32 | null;
    lock_expiry: string | null;
    preimage: Bytes32 | null;
  }
  const outbox = (url: string) =>
    sql<Row>(
      url,
      'SELECT payment_id, from_channel, to_channel, amount::text, status, settled, lock, lock_expiry::text, preimage FROM trickle_outbox',
    );
  const routes = (url: string) =>
    sql<{ payment_id: Bytes32; status: string }>(url, 'SELECT payment_id, status FROM trickle_routes');

  /** Three processes, payer `a` on the first and payee `b` on the second, each channel funded by the hub too. */
  async function cluster(a: number, b: number, lockMarginSeconds = 1) {
    const { url, ports } = await w.startCluster(['--lock-margin-seconds', String(lockMarginSeconds)]);
    const payer = await w.connect(url, a);
    const ach = await payer.openChannel({ token: w.token, deposit: DEPOSIT, challengeDuration: CHALLENGE });
    const payee = await w.connect(url, b);
    const bch = await payee.openChannel({ token: w.token, deposit: DEPOSIT, challengeDuration: CHALLENGE });
    expect(w.balancer!.placed.slice(0, 2)).toEqual([ports[0], ports[1]]);
    await w.fundByHub(url, [ach.channelId, bch.channelId], HUB_DEPOSIT);
    return { url, ports, payer, payee, ach, bch };
  }

  /** Both channels' rows hold what the devices hold, locks gone, the payment moved `moved` (0: refunded). */
  async function settledBoth(url: string, ach: ClientChannel, bch: ClientChannel, moved: bigint) {
    const [a, b] = [await record(url, ach.channelId), await record(url, bch.channelId)];
    expect(a.latest.state).toMatchObject({ paidByDevice: moved, paidByHub: 0n, lockedByDevice: 0n, lockedByHub: 0n });
    expect(b.latest.state).toMatchObject({ paidByDevice: 0n, paidByHub: moved, lockedByDevice: 0n, lockedByHub: 0n });
    expect(a.locks ?? []).toEqual([]);
    expect(b.locks ?? []).toEqual([]);
    expect(a.latest).toEqual(ach.latest);
    expect(b.latest).toEqual(bch.latest);
  }

  it('A on one process pays B on another with a lock; B claims: both channels end with it, once', async () => {
    const { url, payee, ach, bch } = await cluster(2, 3);
    const key = newKey();
    const offered: { amount: bigint; expiresAt: bigint; hash: Bytes32 }[] = [];
    bch.onConditionalPayment((p) => {
      offered.push({ amount: p.amount, expiresAt: p.expiresAt, hash: p.hash });
      void p.claim(key);
    });
    const handle = ach.pay(700n, { to: payee.address, lock: { hash: hashPreimage(key), expiresIn: 60 } });
    await expect(handle.locked).resolves.toMatchObject({ amount: 700n, paidByDevice: 0n });
    await expect(handle).resolves.toEqual({ status: 'claimed', preimage: key });
    // B was offered the hub's lock with the earlier expiry, computed by A's process: T − (challenge 2 s + margin 1 s).
    expect(offered).toEqual([{ amount: 700n, expiresAt: handle.expiresAt - 3n, hash: hashPreimage(key) }]);
    await waitFor(() => bch.latest.state.paidByHub === 700n && ach.latest.state.paidByDevice === 700n, 10_000);
    let rows: Row[] = [];
    await until(async () => (rows = await outbox(url)).every((r) => r.settled), 10_000);
    expect(rows).toEqual([
      {
        payment_id: rows[0]!.payment_id,
        from_channel: ach.channelId,
        to_channel: bch.channelId,
        amount: '700',
        status: 'claimed',
        settled: true,
        lock: hashPreimage(key),
        lock_expiry: String(handle.expiresAt - 3n),
        preimage: key,
      },
    ]);
    expect(await routes(url)).toEqual([{ payment_id: rows[0]!.payment_id, status: 'delivered' }]);
    // The row is settled by A's process once A's lock is claimed; B's process commits B's claim state when B's
    // countersignature arrives, independently: wait for B's row too.
    await until(async () => (await record(url, bch.channelId)).latest.state.paidByHub === 700n, 10_000);
    await settledBoth(url, ach, bch, 700n);
    expect(ach.balance()).toMatchObject({ paid: 700n, received: 0n, settled: DEPOSIT - 700n });
    expect(bch.balance()).toMatchObject({ paid: 0n, received: 700n, settled: DEPOSIT + 700n });
    // A plain route between the two still works after it.
    await ach.pay(5n, { to: payee.address });
    await waitFor(() => bch.latest.state.paidByHub === 705n, 10_000);
  });

  it('B’s process is SIGKILLed after B’s claim is durable and before the upstream claim: another process claims A’s lock', async () => {
    const { url, payer, payee, ach, bch } = await cluster(4, 5);
    const key = newKey();
    let claim: (() => Promise<unknown>) | undefined;
    bch.onConditionalPayment((p) => {
      claim = () => p.claim(key);
    });
    const handle = ach.pay(1_234n, { to: payee.address, lock: { hash: hashPreimage(key), expiresIn: 120 } });
    await handle.locked;
    await waitFor(() => claim !== undefined, 10_000);
    await until(async () => (await outbox(url))[0]?.status === 'locked', 10_000);
    // A is away, so nobody can claim its lock yet; B claims: its process makes the preimage durable in the row.
    await payer.disconnect();
    const claimed = claim!().catch((e: unknown) => {
      if (!(e instanceof TrickleError && e.code === 'DISCONNECTED')) throw e; // its answer may be lost with the process
    });
    await until(async () => (await outbox(url))[0]?.status === 'claimed', 10_000);
    await w.hubs[1]!.kill('SIGKILL'); // B's process
    await w.hubs[0]!.kill('SIGKILL'); // A's process, which forwarded the route: the claim is left to a third
    await claimed;
    expect((await record(url, ach.channelId)).latest.state).toMatchObject({
      paidByDevice: 0n,
      lockedByDevice: 1_234n,
    });
    // Both come back (to the one process left), which takes their channels over once the dead leases lapse.
    await payee.disconnect();
    const a2 = await w.connect(url, 4);
    const b2 = await w.connect(url, 5);
    const ach2 = a2.channel(ach.channelId)!;
    const bch2 = b2.channel(bch.channelId)!;
    await waitFor(() => ach2.latest.state.paidByDevice === 1_234n && bch2.latest.state.paidByHub === 1_234n, 30_000);
    let rows: Row[] = [];
    await until(async () => (rows = await outbox(url)).every((r) => r.settled), 10_000);
    expect(rows.map((r) => [r.status, r.preimage, r.settled])).toEqual([['claimed', key, true]]);
    expect(await routes(url)).toEqual([{ payment_id: rows[0]!.payment_id, status: 'delivered' }]);
    // B's device holds the claim both signed (durable before its ack); the process left records it once B's sync is
    // served there, after the dead process's lease of B's channel lapsed.
    await until(async () => (await record(url, bch.channelId)).latest.state.paidByHub === 1_234n, 15_000);
    await new Promise((r) => setTimeout(r, 500)); // a second claim or a return would have landed by now
    await settledBoth(url, ach2, bch2, 1_234n);
    expect(ach2.balance()).toMatchObject({ paid: 1_234n, settled: DEPOSIT - 1_234n });
    expect(bch2.balance()).toMatchObject({ received: 1_234n, settled: DEPOSIT + 1_234n });
    // A's lock was claimed, not taken back: the payment id's only outcome is delivered.
    const credited = await sql<{ key: string }>(url, `SELECT key FROM trickle_meta WHERE key LIKE 'credited/%'`);
    expect(credited).toEqual([]);
  });

  it('a griefer locks on the same hash toward a device of its own: A’s route to B is served, and B’s claim claims A’s lock only — the griefer’s returns to it at its expiry', async () => {
    const { url, payee, ach, bch } = await cluster(12, 13);
    const griefer = await w.connect(url, 14);
    const gch = await griefer.openChannel({ token: w.token, deposit: DEPOSIT, challengeDuration: CHALLENGE });
    const own = await w.connect(url, 15);
    const och = await own.openChannel({ token: w.token, deposit: DEPOSIT, challengeDuration: CHALLENGE });
    await w.fundByHub(url, [gch.channelId, och.channelId], HUB_DEPOSIT);
    const key = newKey();
    const hash = hashPreimage(key);
    bch.onConditionalPayment((p) => void p.claim(key));
    const grief = gch.pay(1n, { to: own.address, lock: { hash, expiresIn: 20 } });
    await grief.locked;
    await until(async () => (await outbox(url))[0]?.status === 'locked', 10_000);
    const bought = ach.pay(700n, { to: payee.address, lock: { hash, expiresIn: 60 } });
    await expect(bought.result).resolves.toEqual({ status: 'claimed', preimage: key });
    // Claiming the griefer's lock with B's preimage would sell it the key for 1 unit: it goes back to the griefer.
    await expect(grief.result).resolves.toEqual({ status: 'refunded' });
    await waitFor(() => och.latest.state.lockedByHub === 0n && gch.latest.state.lockedByDevice === 0n, 15_000);
    let rows: Row[] = [];
    await until(async () => (rows = await outbox(url)).length === 2 && rows.every((r) => r.settled), 15_000);
    const byPayer = (id: ChannelId) => rows.find((r) => r.from_channel === id)!;
    expect([byPayer(gch.channelId).status, byPayer(gch.channelId).preimage]).toEqual(['locked', null]);
    expect([byPayer(ach.channelId).status, byPayer(ach.channelId).preimage]).toEqual(['claimed', key]);
    await settledBoth(url, ach, bch, 700n);
    await settledBoth(url, gch, och, 0n);
  });

  it('a griefer’s 1-unit lock toward the seller itself, refused by the seller’s guard: its row is refused and never claimed, and a buyer on another process buys on the same hash', async () => {
    const { url, ports } = await w.startCluster(['--lock-margin-seconds', '1']);
    const griefer = await w.connect(url, 16);
    const gch = await griefer.openChannel({ token: w.token, deposit: DEPOSIT, challengeDuration: CHALLENGE });
    const refused: bigint[] = [];
    const seller = await w.connect(url, 17, undefined, {
      creditGuard: ({ lock }) => {
        if (lock && lock.amount < 700n) {
          refused.push(lock.amount);
          throw new TrickleError('INVALID_ARGUMENT', 'below the price of this offer');
        }
      },
    });
    const sch = await seller.openChannel({ token: w.token, deposit: DEPOSIT, challengeDuration: CHALLENGE });
    const buyer = await w.connect(url, 18);
    const ach = await buyer.openChannel({ token: w.token, deposit: DEPOSIT, challengeDuration: CHALLENGE });
    expect(w.balancer!.placed.slice(0, 3)).toEqual(ports); // griefer, seller and buyer each on a process of its own
    await w.fundByHub(url, [sch.channelId], HUB_DEPOSIT);
    const key = newKey();
    const hash = hashPreimage(key);
    sch.onConditionalPayment((p) => void p.claim(key));
    const grief = gch.pay(1n, { to: seller.address, lock: { hash, expiresIn: 20 } });
    await grief.locked;
    await until(async () => (await outbox(url))[0]?.status === 'refused', 10_000);
    expect(refused).toEqual([1n]);
    // The seller countersigned the hub's next state (nothing moves), with which the refused lock is void.
    expect(sch.latest.state).toMatchObject({ paidByHub: 0n, lockedByHub: 0n });
    // The refused row no longer holds the hash against the seller: the buyer's route on it is served.
    const bought = ach.pay(700n, { to: seller.address, lock: { hash, expiresIn: 60 } });
    await expect(bought.result).resolves.toEqual({ status: 'claimed', preimage: key });
    // The seller's claim of the buyer's route is not the griefer's: its lock goes back to it at its expiry.
    await expect(grief.result).resolves.toEqual({ status: 'refunded' });
    await waitFor(() => gch.latest.state.lockedByDevice === 0n, 15_000);
    let rows: Row[] = [];
    await until(async () => (rows = await outbox(url)).length === 2 && rows.every((r) => r.settled), 15_000);
    const byPayer = (id: ChannelId) => rows.find((r) => r.from_channel === id)!;
    expect([byPayer(gch.channelId).status, byPayer(gch.channelId).preimage]).toEqual(['refused', null]);
    expect([byPayer(ach.channelId).status, byPayer(ach.channelId).preimage]).toEqual(['claimed', key]);
    const g = await record(url, gch.channelId);
    expect(g.latest.state).toMatchObject({ paidByDevice: 0n, paidByHub: 0n, lockedByDevice: 0n });
    expect(g.latest).toEqual(gch.latest);
    await settledBoth(url, ach, sch, 700n);
  });

  it('B never claims: the hub’s lock expires back from B, and A’s lock returns to A at its own expiry', async () => {
    const { url, payee, ach, bch } = await cluster(6, 7);
    const key = newKey();
    let seen = 0;
    bch.onConditionalPayment(() => {
      seen++; // never claimed
    });
    const handle = ach.pay(900n, { to: payee.address, lock: { hash: hashPreimage(key), expiresIn: 8 } });
    await handle.locked;
    await until(async () => (await outbox(url))[0]?.status === 'locked', 10_000);
    expect(seen).toBe(1);
    expect((await record(url, bch.channelId)).latest.state).toMatchObject({ lockedByHub: 900n, paidByHub: 0n });
    await expect(handle.result).resolves.toEqual({ status: 'refunded' });
    await waitFor(() => bch.latest.state.lockedByHub === 0n && ach.latest.state.lockedByDevice === 0n, 15_000);
    let rows: Row[] = [];
    await until(async () => (rows = await outbox(url)).every((r) => r.settled), 10_000);
    expect(rows.map((r) => [r.status, r.preimage, r.settled])).toEqual([['locked', null, true]]);
    expect(await routes(url)).toEqual([{ payment_id: rows[0]!.payment_id, status: 'refunded' }]);
    await settledBoth(url, ach, bch, 0n);
    expect(ach.balance()).toMatchObject({ paid: 0n, settled: DEPOSIT });
    expect(bch.balance()).toMatchObject({ received: 0n, settled: DEPOSIT });
  });

  it('payer and payee on the same process: the route goes through the outbox too, and is claimed once', async () => {
    const { url, ports, payee, ach, bch } = await cluster(8, 9);
    // B moves to A's process: the balancer keeps only that one in rotation, and B's client reconnects there.
    w.balancer!.drop(ports[1]!);
    w.balancer!.drop(ports[2]!);
    await until(
      async () =>
        (
          await sql<{ owner_url: string }>(
            url,
            'SELECT owner_url FROM trickle_leases WHERE channel_id = $1 AND expires_at > clock_timestamp()',
            [bch.channelId],
          )
        )[0]?.owner_url.includes(`:${ports[0]}`) === true,
      15_000,
    );
    const key = newKey();
    bch.onConditionalPayment((p) => void p.claim(key));
    const handle = ach.pay(321n, { to: payee.address, lock: { hash: hashPreimage(key), expiresIn: 60 } });
    await expect(handle).resolves.toEqual({ status: 'claimed', preimage: key });
    await waitFor(() => bch.latest.state.paidByHub === 321n && ach.latest.state.paidByDevice === 321n, 10_000);
    let rows: Row[] = [];
    await until(async () => (rows = await outbox(url)).every((r) => r.settled), 10_000);
    expect(rows.map((r) => [r.status, r.preimage, r.to_channel])).toEqual([['claimed', key, bch.channelId]]);
    expect(await routes(url)).toEqual([{ payment_id: rows[0]!.payment_id, status: 'delivered' }]);
    await new Promise((r) => setTimeout(r, 500)); // a second claim would have landed by now
    await settledBoth(url, ach, bch, 321n);
  });

  it('B refuses the hub’s lock: its process refuses the row, and A’s process gives A’s lock back before its expiry', async () => {
    const { url, payee, ach, bch } = await cluster(10, 11);
    // B comes back as a hand-driven device (on the third process) that refuses the hub's lock, then countersigns the
    // hub's next state (nothing moves), with which the refused lock is void.
    await payee.disconnect();
    const raw = await RawDevice.connect(w.balancer!.url, nobleSigner(w.chain.accounts[11]!));
    await until(
      async () =>
        (
          await sql(url, 'SELECT 1 FROM trickle_leases WHERE channel_id = $1 AND expires_at > clock_timestamp()', [
            bch.channelId,
          ])
        ).length === 1,
      10_000,
    );
    const refusing = raw.refuseThenCountersign(bch.channelId);
    const handle = ach.pay(900n, { to: payee.address, lock: { hash: hashPreimage(newKey()), expiresIn: 8 } });
    await handle.locked;
    await until(async () => (await outbox(url))[0]?.status === 'refused', 10_000);
    expect((await refusing).lock?.amount).toBe(900n);
    await expect(handle.result).resolves.toEqual({ status: 'refunded' });
    // Given back by the hub (the route is dead), not taken back by A at its expiry 8 s after the lock.
    expect(BigInt(Math.floor(Date.now() / 1000))).toBeLessThanOrEqual(handle.expiresAt);
    let rows: Row[] = [];
    await until(async () => (rows = await outbox(url)).every((r) => r.settled), 10_000);
    expect(rows.map((r) => [r.status, r.settled])).toEqual([['refused', true]]);
    expect(await routes(url)).toEqual([{ payment_id: rows[0]!.payment_id, status: 'refunded' }]);
    const a = await record(url, ach.channelId);
    expect(a.latest.state).toMatchObject({ paidByDevice: 0n, paidByHub: 0n, lockedByDevice: 0n, lockedByHub: 0n });
    expect(a.latest).toEqual(ach.latest);
    const b = await record(url, bch.channelId);
    expect([b.latest.state.paidByHub, b.latest.state.lockedByHub, b.outgoing]).toEqual([0n, 0n, undefined]);
    // Nothing was credited by the hub for it anywhere: the payer's lock was given back, no counter moved.
    expect(await sql(url, `SELECT key FROM trickle_meta WHERE key LIKE 'credited/%'`)).toEqual([]);
    raw.ws.close();
  });

  // Before: no process held A's channel once A left (its lease released), so none claimed A's lock or guarded it; the
  // preimage stayed off-chain (revealedAt 0) and A's force close took the lock back although B had been paid.
  it('A goes offline for good after locking, then B claims: a process reveals the preimage on-chain before A’s expiry, and A’s force close pays the lock to the hub', async () => {
    // A margin of 4 s: the reveal (a poll, a transaction, a block) lands by the expiry on a loaded machine too — with
    // 1 s it was mined a second late once in CI, under load.
    const { url, payer, payee, ach, bch } = await cluster(19, 20, 4);
    const hubTxs = () => w.chain.provider.getTransactionCount(w.chain.addresses[1]!);
    const sentBefore = await hubTxs();
    const key = newKey();
    const hash = hashPreimage(key);
    let claim: (() => Promise<unknown>) | undefined;
    bch.onConditionalPayment((p) => {
      claim = () => p.claim(key);
    });
    // A's expiry goes by the chain's clock on-chain, which runs ahead of the wall clock after bursts of blocks.
    const ahead = Math.max(0, Number(await w.chain.latestTimestamp()) - Math.floor(Date.now() / 1000));
    const handle = ach.pay(800n, { to: payee.address, lock: { hash, expiresIn: ahead + 11 } });
    await handle.locked;
    const expiry = handle.expiresAt;
    await waitFor(() => claim !== undefined, 10_000);
    await until(async () => (await outbox(url))[0]?.status === 'locked', 10_000);
    // A leaves for good: its process releases A's channel, which no process holds from now on.
    await payer.disconnect();
    const leased = (id: ChannelId) =>
      sql(url, 'SELECT 1 FROM trickle_leases WHERE channel_id = $1 AND expires_at > clock_timestamp()', [id]);
    await until(async () => (await leased(ach.channelId)).length === 0, 10_000);
    await claim!();
    await until(async () => (await outbox(url))[0]?.status === 'claimed', 10_000);
    expect(await leased(ach.channelId)).toEqual([]);
    // B's process, which made the preimage durable, dies: the two others guard the route.
    await w.hubs[1]!.kill('SIGKILL');
    const reader = new Adjudicator(w.adjudicator, w.chain.provider);
    let revealedAt = 0n;
    while (revealedAt === 0n && Date.now() / 1000 + ahead <= Number(expiry) + 2) {
      await new Promise((r) => setTimeout(r, 200));
      revealedAt = await reader.revealedAt(hash);
    }
    expect(revealedAt).toBeGreaterThan(0n);
    expect(revealedAt).toBeLessThanOrEqual(expiry);

    // Past its expiry A force-closes at its latest state, its lock pending: the adjudicator gives the lock to the hub.
    const chainNow = await w.chain.latestTimestamp();
    if (chainNow <= expiry) await w.chain.increaseTime(expiry + 1n - chainNow);
    expect(ach.latest.state).toMatchObject({ paidByDevice: 0n, lockedByDevice: 800n });
    const wallet = (i: number) => balanceOf(w.chain.provider, w.token, w.chain.addresses[i] as Address);
    const before = { a: await wallet(19), hub: await wallet(1) };
    const asA = adjudicatorClientChain({
      wallet: w.chain.wallet(19),
      chainId: w.chain.chainId,
      adjudicator: w.adjudicator,
    });
    await asA.forceClose(ach.latest, ach.locks);
    await w.chain.increaseTime(CHALLENGE + 1n);
    await asA.settle!(ach.channelId, ach.locks);
    expect((await reader.getChannel(ach.channelId)).status).toBe('closed');
    expect((await wallet(19)) - before.a).toBe(DEPOSIT - 800n);
    expect((await wallet(1)) - before.hub).toBe(HUB_DEPOSIT + 800n);
    // Both processes left guarded the route (neither held A's channel); one revealed: the hub sent one transaction.
    expect((await hubTxs()) - sentBefore).toBe(1);
  }, 60_000);
});
