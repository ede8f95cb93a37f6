import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { approve } from '@trickle/chain/erc20';
import { Adjudicator } from '@trickle/chain/adjudicator';
import { nobleSigner } from '@trickle/protocol/signer';
import type { IncomingPayment } from '@trickle/client/channel';
import { createWorld, type World } from './helpers/harness.js';
import { RawDevice } from './helpers/raw-device.js';
import { holdEventLoop, waitFor } from './helpers/wait.js';

describe('resilience: drops, crossing updates, limits', () => {
  let w: World;
  beforeAll(async () => {
    w = await createWorld();
    await w.startHub({
      limits: {
        maxConnections: 6,
        handshakeTimeoutMs: 300,
        messagesPerSecond: 200,
        messageBurst: 400,
        maxRoutedInFlight: 1_000_000n,
      },
    });
  });
  afterAll(async () => w?.close());

  it('a connection dropped with updates in flight loses nothing and applies nothing twice', async () => {
    const c = await w.client(2, { reconnect: { initialDelayMs: 20, maxDelayMs: 100 } });
    const ch = await c.openChannel({ token: w.token, deposit: 10_000_000n });
    let total = 0n;
    const pays: Promise<unknown>[] = [];
    for (let k = 0; k < 300; k++) {
      total += 3n;
      pays.push(ch.pay(3n));
      if (k % 60 === 30) {
        await new Promise((r) => setTimeout(r, 2));
        c.dropConnectionForTest();
      }
    }
    await Promise.all(pays);
    expect(ch.latest.state.paidByDevice).toBe(total);
    expect(w.hub!.channels.get(ch.channelId)!.latest.state.paidByDevice).toBe(total);
  });

  it('hub credits crossing a device stream: both directions land exactly, no version signed twice', async () => {
    const c = await w.client(3);
    const ch = await c.openChannel({ token: w.token, deposit: 10_000_000n });
    const hubWallet = w.chain.wallet(1);
    await approve(hubWallet, w.token, w.adjudicator, 10_000_000n);
    await new Adjudicator(w.adjudicator, hubWallet).deposit(ch.channelId, 10_000_000n);
    await waitFor(() => w.hub!.channels.get(ch.channelId)!.funding.hub === 10_000_000n);
    const got: IncomingPayment[] = [];
    ch.onPayment((p) => got.push(p));
    const staleCount = async () =>
      Number(
        (await w.hub!.metrics.registry.getSingleMetricAsString('trickle_updates_total')).match(
          /outcome="STALE_VERSION"} (\d+)/,
        )?.[1] ?? 0,
      );
    const staleBefore = await staleCount();
    const pays: Promise<unknown>[] = [];
    const credits: Promise<unknown>[] = [];
    for (let k = 0; k < 400; k++) {
      pays.push(ch.pay(5n));
      if (k % 40 === 0) credits.push(w.hub!.credit(ch.channelId, 1_000n));
      if (k % 10 === 0) await new Promise((r) => setImmediate(r));
    }
    await Promise.all([...pays, ...credits]);
    await waitFor(() => got.length === credits.length);
    expect(ch.latest.state.paidByDevice).toBe(2_000n);
    expect(ch.latest.state.paidByHub).toBe(BigInt(credits.length) * 1_000n);
    const hubLatest = w.hub!.channels.get(ch.channelId)!.latest;
    expect(hubLatest.state).toEqual(ch.latest.state);
    expect(got.reduce((s, p) => s + p.amount, 0n)).toBe(BigInt(credits.length) * 1_000n);
    // The interleaving really crossed: the hub refused device updates at versions it had signed a credit for.
    expect(await staleCount()).toBeGreaterThan(staleBefore);
  });

  it('routed payments pipelined with plain ones and crossing hub credits are never paid without being routed', async () => {
    const payer = await w.client(6);
    const payee = await w.client(7);
    const pch = await payer.openChannel({ token: w.token, deposit: 10_000_000n });
    const ech = await payee.openChannel({ token: w.token, deposit: 1_000_000n });
    await w.hubDeposit(pch.channelId, 5_000_000n);
    await w.hubDeposit(ech.channelId, 5_000_000n);
    let received = 0n;
    ech.onPayment((p) => (received += p.amount));
    const routed: Promise<unknown>[] = [];
    const plain: Promise<unknown>[] = [];
    const credits: Promise<unknown>[] = [];
    for (let k = 0; k < 60; k++) {
      plain.push(pch.pay(2n));
      routed.push(pch.pay(100n, { to: payee.address }));
      plain.push(pch.pay(3n));
      if (k % 5 === 0) credits.push(w.hub!.credit(pch.channelId, 7n));
      if (k % 7 === 0) await new Promise((r) => setImmediate(r));
    }
    const outcomes = await Promise.allSettled(routed);
    await Promise.all([...plain, ...credits]);
    const delivered = outcomes.filter((o) => o.status === 'fulfilled').length;
    expect(delivered).toBe(60);
    await waitFor(() => received === 6_000n);
    // the payer paid exactly plain + routed; the hub forwarded every routed unit it was paid
    expect(pch.latest.state.paidByDevice).toBe(60n * 105n);
    expect(pch.latest.state.paidByHub).toBe(BigInt(credits.length) * 7n);
    // a routed payment above the per-device in-flight limit is refused up front, and nothing moves
    const before = pch.latest.state;
    await expect(pch.pay(1_000_001n, { to: payee.address })).rejects.toMatchObject({ code: 'LIMIT_EXCEEDED' });
    expect(pch.latest.state.paidByDevice).toBe(before.paidByDevice);
  });

  it('a connection over the message rate is held back, not refused frame by frame (test/flood.e2e.test.ts: closing a flood)', async () => {
    const d = await RawDevice.connect(w.hub!.url, nobleSigner(w.chain.accounts[4]!));
    for (let k = 0; k < 600; k++)
      d.send({ t: 'sync', id: k + 2, channelId: ('0x' + '00'.repeat(32)) as never, latest: null });
    await waitFor(() => d.inbox.length > 0);
    await new Promise((r) => setTimeout(r, 1000));
    // each refused sync costs refusedFrameCost tokens of the 400-token burst: the hub stops reading long before 600
    expect(d.inbox.length).toBeLessThan(600);
    expect(d.inbox.some((m) => m.t === 'error' && m.code === 'RATE_LIMITED')).toBe(false);
    expect(d.closeCode).toBeUndefined();
    d.close();
  });

  it('a silent connection is closed after the handshake timeout', async () => {
    const d = await RawDevice.connect(w.hub!.url);
    expect(await d.closed(3000)).toBe(1008);
  });

  it('a device that authenticates while the hub does not run past the handshake timeout is taken, not closed', async () => {
    const d = await RawDevice.connect(w.hub!.url); // the challenge only
    d.sendAuth(nobleSigner(w.chain.accounts[5]!));
    // The hub runs in this process: held past its 300 ms handshake timeout, it reads the auth only after that timer.
    holdEventLoop(1_000);
    expect((await d.next((m) => m.t === 'ok' || m.t === 'error')).t).toBe('ok');
    await new Promise((r) => setTimeout(r, 100));
    expect(d.closeCode).toBeUndefined();
    d.close();
    await d.closed(); // its connection slot is free again for the next case
  });

  it('past maxConnections, new connections are refused with 1013', async () => {
    const open: RawDevice[] = [];
    let refusal: string | undefined;
    for (let k = 4; k < 12 && refusal === undefined; k++) {
      try {
        open.push(await RawDevice.connect(w.hub!.url, nobleSigner(w.chain.accounts[k]!)));
      } catch (e) {
        refusal = String(e);
      }
    }
    expect(refusal).toContain('1013');
    expect(open.length).toBeGreaterThan(0);
    for (const d of open) d.close();
  });
});
