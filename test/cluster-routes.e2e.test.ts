import { describe, expect, it } from 'vitest';
import { isTrickleError } from '@trickle/protocol/errors';
import { nobleSigner } from '@trickle/protocol/signer';
import type { Address, Bytes32, ChannelId } from '@trickle/protocol/types';
import type { ClientChannel } from '@trickle/client/channel';
import { waitFor } from './helpers/wait.js';
import { RawDevice } from './helpers/raw-device.js';
import { channelRecords, clusterWorld, sql, until } from './helpers/cluster-world.js';

/**
 * Routed payments between devices served by different `trickle-hub` processes of one cluster (three processes on
 * one PostgreSQL database behind a TCP balancer): each device pays the next one around a ring, so every route
 * crosses processes and goes through the outbox. After each scenario, every outbox row is checked against every
 * channel row and every device: each payment was credited exactly once (to its payee, or back to its payer), each
 * device's newest state is the stored one, and balances sum to deposits.
 */
describe('hub cluster: routed payments across processes through the outbox', () => {
  const LEASE_MS = 1500;
  const DEPOSIT = 10_000_000n;
  const HUB_DEPOSIT = 10_000_000n;
  const w = clusterWorld({ name: 'trickle-cluster-routes', accounts: 10, firstFunded: 1, leaseMs: LEASE_MS });

  /** Three hub processes, a balancer, devices `accounts` (device k on process k mod 3), each channel funded by the hub. */
  async function cluster(accounts: number[]) {
    const { url, ports } = await w.startCluster();
    const channels: ClientChannel[] = [];
    const incoming: Map<Bytes32, bigint>[] = [];
    const duplicates: Bytes32[] = [];
    for (const i of accounts) {
      const c = await w.connect(url, i);
      const ch = await c.openChannel({ token: w.token, deposit: DEPOSIT });
      const seen = new Map<Bytes32, bigint>();
      ch.onPayment((p) => {
        if (!p.paymentId) return;
        if (seen.has(p.paymentId)) duplicates.push(p.paymentId);
        seen.set(p.paymentId, p.amount);
      });
      incoming.push(seen);
      channels.push(ch);
    }
    expect(w.balancer!.placed.slice(0, accounts.length)).toEqual(accounts.map((_, k) => ports[k % 3]));
    // The hub's own money in every channel, so it can carry routed payments to each device.
    await w.fundByHub(
      url,
      channels.map((ch) => ch.channelId),
      HUB_DEPOSIT,
    );
    return { url, ports, channels, incoming, duplicates };
  }

  /**
   * Device `d` pays `to` `count` routed payments, one at a time (a routed payment is a barrier on its channel). A
   * payment refused up front (the payee is between processes: NO_ROUTE) or lost with its process (DISCONNECTED,
   * STORE_FAILURE, TIMEOUT) is paid again, as a new payment; the outbox decides what each one became.
   */
  const delivered: number[] = [];
  async function ring(ch: ClientChannel, to: Address, count: number, d: number): Promise<number> {
    delivered[d] = 0;
    let retried = 0;
    while (delivered[d]! < count) {
      const amount = BigInt(1 + ((delivered[d]! + d) % 7));
      try {
        await ch.pay(amount, { to });
        delivered[d]!++;
      } catch (e) {
        if (!isTrickleError(e) || !['NO_ROUTE', 'STORE_FAILURE', 'DISCONNECTED', 'TIMEOUT'].includes(e.code)) throw e;
        retried++;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    return retried;
  }

  interface Row {
    payment_id: Bytes32;
    from_channel: ChannelId;
    to_channel: ChannelId;
    amount: string;
    status: string;
    settled: boolean;
  }

  /** Every outbox row answered and settled, no route pending: the cluster has nothing left in flight. */
  async function quiet(url: string): Promise<Row[]> {
    let rows: Row[] = [];
    await until(async () => {
      rows = await sql<Row>(
        url,
        'SELECT payment_id, from_channel, to_channel, amount::text, status, settled FROM trickle_outbox',
      );
      const pending = await sql(url, `SELECT 1 FROM trickle_routes WHERE status = 'pending'`);
      return pending.length === 0 && rows.every((r) => r.settled);
    }, 30_000);
    return rows;
  }

  /** Each payment credited exactly once; every device holds the stored state; balances sum to deposits. */
  async function check(
    url: string,
    rows: Row[],
    channels: ClientChannel[],
    incoming: Map<Bytes32, bigint>[],
    duplicates: Bytes32[],
  ) {
    const stored = await channelRecords(url);
    // Every route had its outbox row (three processes, a ring: every payee was on another process, or moved).
    const routes = await sql<{ payment_id: Bytes32; status: string }>(
      url,
      'SELECT payment_id, status FROM trickle_routes',
    );
    expect(new Set(routes.map((r) => r.payment_id))).toEqual(new Set(rows.map((r) => r.payment_id)));
    for (const r of routes)
      expect(r.status).toBe(
        rows.find((x) => x.payment_id === r.payment_id)!.status === 'delivered' ? 'delivered' : 'refunded',
      );
    const credits = await sql<{ key: string }>(url, `SELECT key FROM trickle_meta WHERE key LIKE 'credited/%'`);
    for (const row of rows) {
      // One credit per payment: to its payee when delivered, back to its payer when refunded, nowhere else.
      const landed = credits
        .filter((c) => c.key.startsWith(`credited/${row.payment_id}/`))
        .map((c) => c.key.slice(-66));
      expect(landed).toEqual([row.status === 'delivered' ? row.to_channel : row.from_channel]);
    }
    for (const [d, ch] of channels.entries()) {
      const r = stored.find((x) => x.channelId === ch.channelId)!;
      expect(r.latest).toEqual(ch.latest); // one content per version: the device's newest is the stored one
      const from = rows.filter((x) => x.from_channel === ch.channelId);
      const to = rows.filter((x) => x.to_channel === ch.channelId && x.status === 'delivered');
      const refunded = from.filter((x) => x.status === 'refunded');
      const sum = (xs: Row[]) => xs.reduce((s, x) => s + BigInt(x.amount), 0n);
      if (r.latest.state.paidByHub !== sum(to) + sum(refunded) || r.latest.state.paidByDevice !== sum(from)) {
        // What a mismatch needs to be told apart: each row of the channel, what the device heard, its markers.
        const expected = new Set([...to, ...refunded].map((x) => x.payment_id));
        console.log(
          JSON.stringify(
            {
              channel: ch.channelId,
              stored: { version: String(r.latest.state.version), paidByHub: String(r.latest.state.paidByHub) },
              device: { version: String(ch.latest.state.version), paidByHub: String(ch.latest.state.paidByHub) },
              heardNotExpected: [...incoming[d]!].filter(([p]) => !expected.has(p)).map(([p, a]) => [p, String(a)]),
              expectedNotHeard: [...expected].filter((p) => !incoming[d]!.has(p)),
              heardSum: String([...incoming[d]!.values()].reduce((s, a) => s + a, 0n)),
              duplicates,
              rows: rows
                .filter((x) => x.from_channel === ch.channelId || x.to_channel === ch.channelId)
                .map((x) => [
                  x.payment_id.slice(0, 10),
                  x.from_channel === ch.channelId ? 'out' : 'in',
                  x.amount,
                  x.status,
                ]),
              markers: credits.filter((c) => c.key.endsWith(ch.channelId)).length,
            },
            null,
            1,
          ),
        );
      }
      // The device paid only routed payments, and was paid only by them and their refunds.
      expect(r.latest.state.paidByDevice).toBe(sum(from));
      expect(r.latest.state.paidByHub).toBe(sum(to) + sum(refunded));
      // What the device was told it received is exactly what the outbox delivered to it (and refunded to it).
      expect(new Set(incoming[d]!.keys())).toEqual(new Set([...to, ...refunded].map((x) => x.payment_id)));
      const deviceGets = r.funding.device - r.latest.state.paidByDevice + r.latest.state.paidByHub;
      const hubGets = r.funding.hub - r.latest.state.paidByHub + r.latest.state.paidByDevice;
      expect(deviceGets).toBeGreaterThanOrEqual(0n);
      expect(hubGets).toBeGreaterThanOrEqual(0n);
      expect(deviceGets + hubGets).toBe(r.funding.device + r.funding.hub);
      expect(r.funding).toEqual({ device: DEPOSIT, hub: HUB_DEPOSIT });
    }
    // The hub forwards only what it received: across the cluster, what it paid out equals what it took in.
    const paidIn = stored.reduce((s, r) => s + r.latest.state.paidByDevice, 0n);
    const paidOut = stored.reduce((s, r) => s + r.latest.state.paidByHub, 0n);
    expect(paidOut).toBe(paidIn);
    // Each device was told of each payment once (after the money checks above, which say whether it was paid once).
    expect(duplicates).toEqual([]);
  }

  it('devices on three processes pay each other around a ring: every payment crosses processes and lands once', async () => {
    const { url, channels, incoming, duplicates } = await cluster([2, 3, 4]);
    const addresses = w.clients.map((c) => c.address);
    const t0 = performance.now();
    await Promise.all(channels.map((ch, d) => ring(ch, addresses[(d + 1) % 3]!, 40, d)));
    const ms = performance.now() - t0;
    const rows = await quiet(url);
    console.log(
      `cluster routes: ${rows.length} routed payments across processes in ${Math.round(ms)} ms ` +
        `(${Math.round((rows.length * 1000) / ms)}/s over 3 sequential rings; ${Math.round((3 * ms) / rows.length)} ms each)`,
    );
    expect(rows.length).toBeGreaterThanOrEqual(120);
    expect(rows.every((r) => r.status === 'delivered')).toBe(true);
    await check(url, rows, channels, incoming, duplicates);
  });

  it('a payee that refuses the credit: its process refuses the row, the payer’s process refunds the payer, once', async () => {
    const { url, channels, incoming, duplicates } = await cluster([8, 9]);
    const payee = w.clients[1]!;
    const payeeChannel = channels[1]!.channelId;
    // The payee comes back as a hand-driven device (on the third process) that refuses the hub's credit and then
    // countersigns the hub's next state (the latest counters one version up): the refused credit is void with it.
    await payee.disconnect();
    const raw = await RawDevice.connect(w.balancer!.url, nobleSigner(w.chain.accounts[9]!));
    await until(
      async () =>
        (
          await sql(url, 'SELECT 1 FROM trickle_leases WHERE channel_id = $1 AND expires_at > clock_timestamp()', [
            payeeChannel,
          ])
        ).length === 1,
      10_000,
    );
    const refusing = raw.refuseThenCountersign(payeeChannel);
    // Not delivered: the payer is told so (NO_ROUTE) once its refund has landed.
    await expect(channels[0]!.pay(5n, { to: payee.address })).rejects.toMatchObject({ code: 'NO_ROUTE' });
    expect((await refusing).state.paidByHub).toBe(5n);
    const rows = await quiet(url);
    expect(rows.map((r) => [r.status, r.to_channel, r.amount])).toEqual([['refunded', payeeChannel, '5']]);
    const pid = rows[0]!.payment_id;
    const credits = await sql<{ key: string }>(url, `SELECT key FROM trickle_meta WHERE key LIKE 'credited/%'`);
    expect(credits.map((c) => c.key)).toEqual([`credited/${pid}/${channels[0]!.channelId}`]);
    const stored = await channelRecords(url);
    const a = stored.find((r) => r.channelId === channels[0]!.channelId)!;
    expect(a.latest).toEqual(channels[0]!.latest);
    expect([a.latest.state.paidByDevice, a.latest.state.paidByHub]).toEqual([5n, 5n]);
    expect([...incoming[0]!]).toEqual([[pid, 5n]]); // the refund, once
    expect(duplicates).toEqual([]);
    const b = stored.find((r) => r.channelId === payeeChannel)!;
    expect([b.latest.state.paidByHub, b.outgoing, b.unsettled]).toEqual([0n, undefined, undefined]);
    raw.ws.close();
  });

  it('SIGKILL one process mid-stream: its routes are finished by the processes that take its channels over, each once', async () => {
    const { url, channels, incoming, duplicates } = await cluster([5, 6, 7]);
    const addresses = w.clients.map((c) => c.address);
    const COUNT = 80;
    const streams = channels.map((ch, d) => ring(ch, addresses[(d + 1) % 3]!, COUNT, d));
    await waitFor(() => delivered.every((n) => n >= 20), 30_000);
    // Kill device 1's process (a payee of device 0, the payer toward device 2) while routes of its channel are in
    // flight: paused first (SIGSTOP), so that what the database shows in flight is what it leaves behind.
    const victim = w.hubs[1]!;
    let inFlight: { payment_id: Bytes32; status: string }[] = [];
    for (let i = 0; i < 100 && inFlight.length === 0; i++) {
      victim.child.kill('SIGSTOP');
      inFlight = await sql(
        url,
        'SELECT payment_id, status FROM trickle_outbox WHERE NOT settled AND (from_channel = $1 OR to_channel = $1)',
        [channels[1]!.channelId],
      );
      if (inFlight.length === 0) {
        victim.child.kill('SIGCONT');
        await new Promise((r) => setTimeout(r, 10));
      }
    }
    const killedAt = performance.now();
    await victim.kill('SIGKILL');
    const atKill = [...delivered];
    // Each ring goes on past the kill (a ring that does not cross the victim's process — device 2 pays device 0 —
    // may have run to its end while the victim was being paused above: it counts once finished). Within 60 s: a
    // payment of the victim's device whose receipt the kill lost ends TIMEOUT after routeTimeoutMs (30 s) and the ring
    // pays on (seen once in a loaded CI run: ring 1 held at its count at the kill for 30 s; not reproduced here).
    await waitFor(() => delivered.every((n, d) => n >= Math.min(COUNT, atKill[d]! + 6)), 60_000).catch((e: Error) => {
      throw new Error(`${e.message}: delivered ${delivered.join('/')} of ${COUNT}, ${atKill.join('/')} at the kill`);
    });
    const resumedMs = performance.now() - killedAt;
    const retried = await Promise.all(streams);
    const rows = await quiet(url);
    await check(url, rows, channels, incoming, duplicates);
    expect(inFlight.length).toBeGreaterThan(0);
    console.log(
      `cluster routes SIGKILL: ${inFlight.length} routes in flight at the kill (${inFlight.map((r) => r.status).join(', ')}); every ring resumed ${Math.round(resumedMs)} ms after the kill (lease ${LEASE_MS} ms); ` +
        `${rows.length} payments, ${rows.filter((r) => r.status === 'refunded').length} refunded, retries ${retried.join('/')}`,
    );
  }, 150_000);

  it('PostgreSQL restarted mid-ring: routes in flight finish once it is back, each credited once, nobody restarted', async () => {
    const { url, channels, incoming, duplicates } = await cluster([2, 3, 4]);
    const addresses = w.clients.map((c) => c.address);
    const COUNT = 60;
    const streams = channels.map((ch, d) => ring(ch, addresses[(d + 1) % 3]!, COUNT, d));
    await waitFor(() => delivered.every((n) => n >= 10), 30_000);
    const atStop = [...delivered];
    await w.pg.stop();
    // Down for longer than the lease: every lease runs out in the processes, commits and scans fail meanwhile.
    await new Promise((r) => setTimeout(r, 2 * LEASE_MS));
    await w.pg.start();
    const retried = await Promise.all(streams);
    const rows = await quiet(url);
    await check(url, rows, channels, incoming, duplicates);
    expect(rows.length).toBeGreaterThanOrEqual(3 * COUNT);
    console.log(
      `cluster routes, PostgreSQL restarted: ${atStop.join('/')} delivered when it stopped; ${rows.length} payments, ` +
        `${rows.filter((r) => r.status === 'refunded').length} refunded, retries ${retried.join('/')}`,
    );
  });
});
