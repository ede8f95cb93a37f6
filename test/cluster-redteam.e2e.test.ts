import { describe, expect, it } from 'vitest';
import { connect, createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import { isTrickleError } from '@trickle/protocol/errors';
import { nobleSigner } from '@trickle/protocol/signer';
import { trickleDomain } from '@trickle/protocol/eip712';
import { randomBytes32 } from '@trickle/protocol/random';
import { hashOrder } from '@trickle/market';
import { TrickleClient } from '@trickle/client/client';
import { fileChannelStore } from '@trickle/client/store';
import { adjudicatorClientChain } from '@trickle/client/chain';
import { waitFor } from './helpers/wait.js';
import { RawDevice } from './helpers/raw-device.js';
import { channelRecords, clusterWorld, sql, until } from './helpers/cluster-world.js';

/**
 * Red team of a hub cluster on PostgreSQL (three `trickle-hub` processes, a real database and dev chain): what a
 * device's connection dropping at the wrong moment does to the market's credits.
 */
describe('red team: hub cluster market', () => {
  const LEASE_MS = 1500;
  const ROUND_MS = 3000;
  const DEPOSIT = 100_000_000n;
  const w = clusterWorld({ name: 'trickle-cluster-redteam', accounts: 6, firstFunded: 1, leaseMs: LEASE_MS });

  /** A device of account `account` connected straight to `url` (not through the balancer), its store in `dir`. */
  async function device(url: string, account: number, dir: string): Promise<TrickleClient> {
    const c = await TrickleClient.connect({
      url,
      signer: nobleSigner(w.chain.accounts[account]!),
      store: fileChannelStore(join(w.dir, dir)),
      chain: adjudicatorClientChain({
        wallet: w.chain.wallet(account),
        chainId: w.chain.chainId,
        adjudicator: w.adjudicator,
      }),
      reconnect: { initialDelayMs: 50, maxDelayMs: 300 },
      requestTimeoutMs: 5_000,
    });
    w.clients.push(c);
    return c;
  }

  /**
   * A TCP proxy to one hub process whose hub → device direction can be held (the device hears nothing, as behind a
   * stalled link) and whose connections can be cut; a device reconnecting through it lands on the same process.
   */
  async function stallableProxy(port: number) {
    const pairs = new Set<{ up: Socket; down: Socket }>();
    const server = createServer((down) => {
      const up = connect(port, '127.0.0.1');
      const pair = { up, down };
      pairs.add(pair);
      const close = () => {
        pairs.delete(pair);
        up.destroy();
        down.destroy();
      };
      for (const s of [up, down]) {
        s.on('error', close);
        s.on('close', close);
      }
      down.pipe(up);
      up.pipe(down);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const { port: own } = server.address() as { port: number };
    return {
      url: `ws://127.0.0.1:${own}/`,
      /** Hold what the hub sends on every open connection. */
      stall() {
        for (const { up, down } of pairs) {
          up.unpipe(down);
          up.pause();
        }
      },
      /** Cut every open connection (what was held is lost); new ones pass. */
      cut() {
        for (const { up, down } of pairs) {
          up.destroy();
          down.destroy();
        }
      },
      close: () => new Promise<void>((r) => server.close(() => r())),
    };
  }

  it('a device whose round credit was on the wire when its link dropped, back on the same process, is paid every later round', async () => {
    const { url, ports } = await w.startCluster(['--market-round-ms', String(ROUND_MS)]);
    const proxy = await stallableProxy(ports[0]!);
    try {
      const c = await device(proxy.url, 2, 'stalled-device');
      const ch = await c.openChannel({ token: w.token, deposit: DEPOSIT });
      await c.market.ready();

      // Round r: a bid nobody sells to, so the round's credit is its whole escrow.
      const r0 = c.market.round;
      await waitFor(() => c.market.round > r0, 3 * ROUND_MS);
      const r = c.market.round;
      const start = ch.latest.state;
      await c.market.submitOrder(ch, { market: 'kwh', side: 'bid', quantity: 3n, price: 1_000n, round: r });
      // The link stalls: the process serving the device signs and stores the round's credit, the device never hears it.
      proxy.stall();
      await until(async () => {
        const row = (await channelRecords(url)).find((x) => x.channelId === ch.channelId);
        return row?.outgoing?.state.round === r;
      }, 6 * ROUND_MS);
      // The link drops; the device reconnects through the same path, to the same process.
      proxy.cut();
      await waitFor(() => ch.latest.state.round >= r, 30_000);
      expect(ch.latest.state.paidByHub - start.paidByHub).toBe(3_000n);
      expect(ch.latest.state.paidByDevice - start.paidByDevice).toBe(3_000n);

      // A later round: another bid nobody sells to. Its credit must come too, from the same process.
      const r2 = c.market.round;
      expect(r2).toBeGreaterThan(r);
      const mid = ch.latest.state;
      await c.market.submitOrder(ch, { market: 'kwh', side: 'bid', quantity: 2n, price: 1_000n, round: r2 });
      await waitFor(() => ch.latest.state.round >= r2, 8 * ROUND_MS).catch((e: unknown) => {
        throw new Error(`round ${r2}'s credit never landed (channel at round ${ch.latest.state.round}): ${e}`);
      });
      expect(ch.latest.state.paidByHub - mid.paidByHub).toBe(2_000n);
      expect(ch.latest.state.paidByDevice - mid.paidByDevice).toBe(2_000n);
      // Stored as the device holds it; nothing paid twice a round later.
      const after = ch.latest;
      const now = c.market.round;
      await waitFor(() => c.market.round >= now + 1n, 4 * ROUND_MS);
      expect(ch.latest).toEqual(after);
      const row = (await channelRecords(url)).find((x) => x.channelId === ch.channelId)!;
      expect(row.latest).toEqual(ch.latest);
      expect(row.latest.state.paidByHub - start.paidByHub).toBe(5_000n);
    } finally {
      proxy.cut();
      await proxy.close();
    }
  });

  it('an ask placed under the id of an escrow its device paid: the escrow comes back once, not once more every round', async () => {
    const { url, ports } = await w.startCluster(['--market-round-ms', String(ROUND_MS)]);
    const signer = nobleSigner(w.chain.accounts[3]!);
    let c = await device(`ws://127.0.0.1:${ports[0]}/`, 3, 'escrow-ask-device');
    const ch = await c.openChannel({ token: w.token, deposit: DEPOSIT });
    // The device has bought from the hub before: the hub holds 1,000,000 in this channel (what it could pay out).
    await ch.pay(1_000_000n);
    await c.market.ready();
    const r0 = c.market.round;
    await waitFor(() => c.market.round > r0, 3 * ROUND_MS);
    const r = c.market.round;
    const start = ch.latest.state;
    // An escrow paid for order id X (an ordinary channel payment marked with it) ...
    const X = randomBytes32();
    const ESCROW = 5_000n;
    await ch.pay(ESCROW, { escrowFor: X });
    await c.disconnect();
    w.clients = w.clients.filter((k) => k !== c);
    // ... and an ask placed under the same id, signed by the device (its own client never does this: a hand-made frame).
    const raw = await RawDevice.connect(`ws://127.0.0.1:${ports[0]}/`, signer);
    const terms = { id: X, participant: signer.address, market: 'kwh', side: 'ask' as const, quantity: 1n, price: 1n };
    const domain = trickleDomain(w.chain.chainId, w.adjudicator);
    raw.send({
      t: 'order',
      id: 7,
      order: { id: X, market: 'kwh', side: 'ask', quantity: 1n, price: 1n, round: r },
      sig: signer.signDigest(hashOrder(domain, { ...terms, round: r })),
    });
    const reply = await raw.next((m) => m.id === 7 && (m.t === 'accepted' || m.t === 'error'), 10_000);
    raw.ws.close();
    // The escrow must come back exactly once.
    c = await device(`ws://127.0.0.1:${ports[0]}/`, 3, 'escrow-ask-device');
    const back = c.channels()[0]!;
    await waitFor(() => back.latest.state.round >= r, 8 * ROUND_MS);
    // Round r settled the escrow: no record of it is left to refund again.
    expect(await sql(url, `SELECT key FROM trickle_meta WHERE key LIKE 'market/escrow/%'`)).toEqual([]);
    // Two more rounds clear: nothing more may come.
    const now = c.market.round;
    await waitFor(() => c.market.round >= now + 2n, 6 * ROUND_MS);
    await new Promise((res) => setTimeout(res, ROUND_MS));
    const s = back.latest.state;
    const gained = s.paidByHub - start.paidByHub - (s.paidByDevice - start.paidByDevice);
    expect(reply.t).toBe('accepted'); // an ask costs nothing: its id is the device's to choose
    // It paid the escrow and was refunded it once (round r, as the unused escrow of its ask); a second refund (the
    // record kept and refunded again the next round) would be the hub's money.
    expect(gained).toBe(0n);
    const rows = await channelRecords(url);
    expect(rows.find((x) => x.channelId === ch.channelId)!.latest).toEqual(back.latest);
  });

  it('PostgreSQL restarted: a connected device that only receives is paid through another process once it is back', async () => {
    const { url } = await w.startCluster();
    const a = await w.connect(url, 4); // through the balancer: the first process
    const b = await w.connect(url, 5); // the second
    const cha = await a.openChannel({ token: w.token, deposit: DEPOSIT });
    const chb = await b.openChannel({ token: w.token, deposit: DEPOSIT });
    await w.fundByHub(url, [chb.channelId], 1_000_000n);
    expect(new Set(w.balancer!.placed.slice(0, 2)).size).toBe(2);
    await cha.pay(5n, { to: b.address });
    await waitFor(() => chb.latest.state.paidByHub === 5n, 10_000);
    // The database goes away for longer than the lease: every lease runs out; nobody reconnects.
    await w.pg.stop();
    await new Promise((r) => setTimeout(r, 2 * LEASE_MS));
    await w.pg.start();
    // B sends nothing (it only receives). A pays it again, as a payer would: again when refused up front.
    const codes: string[] = [];
    const deadline = Date.now() + 30_000;
    for (;;) {
      try {
        await cha.pay(7n, { to: b.address });
        break;
      } catch (e) {
        if (!isTrickleError(e) || !['NO_ROUTE', 'STORE_FAILURE', 'TIMEOUT'].includes(e.code)) throw e;
        codes.push(e.code);
        if (Date.now() > deadline)
          throw new Error(`B was never reachable again: ${codes.length} refusals (${[...new Set(codes)].join(', ')})`);
        await new Promise((r) => setTimeout(r, 200));
      }
    }
    await waitFor(() => chb.latest.state.paidByHub === 12n, 10_000);
    const rows = await channelRecords(url);
    expect(rows.find((x) => x.channelId === chb.channelId)!.latest).toEqual(chb.latest);
    expect(rows.find((x) => x.channelId === cha.channelId)!.latest).toEqual(cha.latest);
    expect(cha.latest.state.paidByDevice).toBe(12n);
  });

  // The escrow record is keyed by order id: a second escrow payment under a known id would overwrite the first, which
  // the hub would keep. The hub refuses it (BAD_ORDER) before its step; the first comes back at the clearing.
  it('two escrow payments under one order id: the second is refused BAD_ORDER, the first comes back whole', async () => {
    const { url, ports } = await w.startCluster(['--market-round-ms', String(ROUND_MS)]);
    const c = await device(`ws://127.0.0.1:${ports[0]}/`, 2, 'double-escrow-device');
    const ch = await c.openChannel({ token: w.token, deposit: DEPOSIT });
    await ch.pay(1_000_000n);
    await c.market.ready();
    const start = ch.latest.state;
    const X = randomBytes32();
    await ch.pay(3_000n, { escrowFor: X });
    const paid = ch.latest.state;
    await expect(ch.pay(4_000n, { escrowFor: X })).rejects.toMatchObject({ code: 'BAD_ORDER' });
    expect(ch.latest.state).toEqual(paid); // refused: the device's state did not move
    expect(paid.paidByDevice - start.paidByDevice).toBe(3_000n);
    // No order is placed: the next clearing refunds what was escrowed under X.
    const r = c.market.round;
    await waitFor(() => ch.latest.state.round >= r, 8 * ROUND_MS);
    const s = ch.latest.state;
    expect(s.paidByHub - start.paidByHub).toBe(s.paidByDevice - start.paidByDevice); // the 3,000 back
    // The device holds a state once it countersigned it; the hub's record of it lands with the commit of that answer,
    // a moment later (and rounds go on meanwhile): the two agree once it has.
    await until(async () => {
      const row = (await channelRecords(url)).find((x) => x.channelId === ch.channelId)!;
      return isDeepStrictEqual(row.latest, ch.latest);
    }, 4 * ROUND_MS);
  });
});
