/**
 * A device on a flaky cellular link: the hub's end goes silent without closing (a NAT that dropped the mapping, a
 * proxy that black-holes packets, a hub stuck before its upgrade answer). The client must notice within its liveness
 * bound, reconnect, and settle every payment in flight exactly once.
 */
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { WebSocketServer } from 'ws';
import { TrickleClient } from '@trickle/client/client';
import { memoryChannelStore } from '@trickle/client/store';
import { nobleSigner } from '@trickle/protocol/signer';
import { adjudicatorClientChain } from '@trickle/client/chain';
import { createWorld, type World } from './helpers/harness.js';
import { idleClientBehind, startSilentRelay } from './helpers/silent-relay.js';
import { holdEventLoop, waitFor } from './helpers/wait.js';

/** How a payment ended: 'paid', or its error's code and whether it had left the device. */
const outcome = (p: Promise<unknown>): Promise<unknown> =>
  p.then(
    () => 'paid',
    (e: { code?: string; details?: { inFlight?: boolean } }) => ({ code: e.code, inFlight: e.details?.inFlight }),
  );
const within = (p: Promise<unknown>, ms: number): Promise<unknown> =>
  Promise.race([p, new Promise((r) => setTimeout(() => r('pending'), ms))]);

describe('device link: a hub that goes silent without closing', () => {
  let w: World;
  beforeAll(async () => {
    w = await createWorld({ accounts: 9 });
    await w.startHub();
  });
  afterAll(async () => w?.close());

  it('a black-holed link is detected within the liveness bound; payments in flight resolve once after the reconnect', async () => {
    const relay = await startSilentRelay(w.hub!.url);
    try {
      // Idle and alive, the link stays up: the client pings the quiet hub and hears its pongs.
      const { c, ch } = await idleClientBehind(w, relay, 2);
      const before = relay.accepted;
      relay.blackHole();
      const t0 = Date.now();
      const pays = [ch.pay(7n), ch.pay(7n), ch.pay(11n)];
      // The dead socket is dropped and a fresh one dialled (the relay relays new connections again).
      await waitFor(() => relay.accepted > before, 10_000);
      expect(Date.now() - t0).toBeLessThan(5_000);
      const receipts = await Promise.all(pays);
      expect(receipts.map((r) => r.amount)).toEqual([7n, 7n, 11n]);
      expect(ch.latest.state.paidByDevice).toBe(30n);
      await waitFor(() => w.hub!.channels.get(ch.channelId)!.latest.state.paidByDevice === 30n);
      await c.disconnect();
    } finally {
      await relay.close();
    }
  });

  it('a reconnect that reaches a listener which never answers the upgrade is abandoned and dialled again', async () => {
    const relay = await startSilentRelay(w.hub!.url);
    try {
      const c = await w.client(3, {
        url: relay.url,
        livenessTimeoutMs: 1_000,
        reconnect: { initialDelayMs: 20, maxDelayMs: 200 },
      });
      const ch = await c.openChannel({ token: w.token, deposit: 1_000_000n });
      await ch.pay(1n);
      relay.mute = true; // the next dials are accepted and then hear nothing
      c.dropConnectionForTest();
      const before = relay.accepted;
      await waitFor(() => relay.accepted > before, 5_000);
      const pay = ch.pay(2n);
      relay.mute = false;
      await waitFor(() => c.connected, 10_000); // a hung dial is given up, the next one gets through
      const r = await pay;
      expect(r.paidByDevice).toBe(3n);
      expect(relay.accepted).toBeGreaterThan(before + 1);
      await c.disconnect();
    } finally {
      await relay.close();
    }
  });

  it('pay() waiting for a link that is down is answered DISCONNECTED by disconnect(), not left pending', async () => {
    const relay = await startSilentRelay(w.hub!.url);
    try {
      const c = await w.client(4, { url: relay.url, reconnect: { initialDelayMs: 20, maxDelayMs: 100 } });
      const ch = await c.openChannel({ token: w.token, deposit: 1_000_000n });
      await ch.pay(1n);
      relay.refuse = true;
      c.dropConnectionForTest();
      await waitFor(() => !c.connected);
      const pay = outcome(ch.pay(2n));
      await new Promise((r) => setTimeout(r, 100));
      await c.disconnect();
      expect(await within(pay, 3_000)).toEqual({ code: 'DISCONNECTED', inFlight: false }); // never left: not paid
      expect(w.hub!.channels.get(ch.channelId)!.latest.state.paidByDevice).toBe(1n);
    } finally {
      await relay.close();
    }
  });

  it('reconnects given up (reconnect.maxAttempts): payments waiting are answered DISCONNECTED, sent ones say so, new ones are refused at once', async () => {
    const relay = await startSilentRelay(w.hub!.url);
    try {
      const c = await w.client(5, {
        url: relay.url,
        livenessTimeoutMs: 500,
        reconnect: { initialDelayMs: 20, maxDelayMs: 50, maxAttempts: 3 },
      });
      const ch = await c.openChannel({ token: w.token, deposit: 1_000_000n });
      await ch.pay(1n);
      relay.refuse = true;
      relay.blackHole();
      const sent = outcome(ch.pay(2n)); // leaves on the dead link, never acked
      await new Promise((r) => setTimeout(r, 50));
      const queued = outcome(ch.pay(3n));
      expect(await within(sent, 10_000)).toEqual({ code: 'DISCONNECTED', inFlight: true });
      expect(await within(queued, 1_000)).toMatchObject({ code: 'DISCONNECTED' });
      expect(c.connected).toBe(false);
      expect(await within(outcome(ch.pay(4n)), 100)).toMatchObject({ code: 'DISCONNECTED' });
      expect(ch.pendingPayments).toBe(0);
    } finally {
      await relay.close();
    }
  });

  it('close() waiting for an unreachable hub, then disconnect(): close fails DISCONNECTED and nothing goes on-chain', async () => {
    const relay = await startSilentRelay(w.hub!.url);
    try {
      const c = await w.client(6, { url: relay.url, reconnect: { initialDelayMs: 20, maxDelayMs: 100 } });
      const ch = await c.openChannel({ token: w.token, deposit: 1_000_000n });
      await ch.pay(1n);
      relay.refuse = true;
      c.dropConnectionForTest();
      await waitFor(() => !c.connected);
      const closing = outcome(c.close(ch.channelId, { timeoutMs: 20_000 }));
      await new Promise((r) => setTimeout(r, 200));
      await c.disconnect();
      expect(await within(closing, 5_000)).toMatchObject({ code: 'DISCONNECTED' });
      const chain = adjudicatorClientChain({
        wallet: w.chain.wallet(6),
        chainId: w.chain.chainId,
        adjudicator: w.adjudicator,
      });
      expect((await chain.readChannel!(ch.channelId)).status).toBe('open'); // no force close was sent
    } finally {
      await relay.close();
    }
  });

  it('a stream whose tick is in flight when the wall clock steps a year ahead (NTP after a fresh boot) keeps running', async () => {
    const relay = await startSilentRelay(w.hub!.url);
    try {
      const c = await w.client(7, {
        url: relay.url,
        livenessTimeoutMs: 1_000,
        reconnect: { initialDelayMs: 20, maxDelayMs: 200 },
      });
      const ch = await c.openChannel({ token: w.token, deposit: 1_000_000n });
      const wall = Date.now.bind(Date);
      let skew = 0;
      const clock = vi.spyOn(Date, 'now').mockImplementation(() => wall() + skew);
      let s: ReturnType<typeof ch.stream>;
      try {
        s = ch.stream({ ratePerSecond: 1_000n, tickMs: 50, stallMs: 20_000 });
        await waitFor(() => s.paid() > 50n);
        relay.blackHole(); // the next ticks stay unanswered until the client has reconnected
        await new Promise((r) => setTimeout(r, 200));
        skew = 365 * 86_400_000;
        await new Promise((r) => setTimeout(r, 200));
        expect(s.status).toBe('running'); // not stalled: 200 ms passed, not a year
      } finally {
        clock.mockRestore();
      }
      await waitFor(() => c.connected, 10_000);
      const before = s.paid();
      await waitFor(() => s.paid() > before, 10_000);
      expect(s.status).toBe('running');
      const total = await s.stop();
      expect(ch.latest.state.paidByDevice).toBe(total);
    } finally {
      await relay.close();
    }
  });
});

describe('device link: a server that is not a Trickle hub', () => {
  it('one that takes the upgrade, pings and sends frames but never a challenge is dialled again each livenessTimeoutMs', async () => {
    const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' });
    await new Promise((r) => wss.once('listening', r));
    wss.on('connection', (ws) => {
      const t = setInterval(() => {
        ws.ping();
        ws.send(Buffer.from('not a trickle frame'));
      }, 50);
      ws.on('close', () => clearInterval(t));
    });
    try {
      const url = `ws://127.0.0.1:${(wss.address() as AddressInfo).port}/`;
      const retries: { reason: string }[] = [];
      const e = await TrickleClient.connect({
        url,
        signer: nobleSigner(`0x${'22'.repeat(32)}`),
        store: memoryChannelStore(),
        connectTimeoutMs: 3_000,
        livenessTimeoutMs: 500,
        reconnect: { initialDelayMs: 20, maxDelayMs: 50 },
        onRetry: (r) => retries.push(r),
      }).then(
        () => undefined,
        (x: unknown) => x as { code: string },
      );
      expect(e).toMatchObject({ code: 'DISCONNECTED' });
      expect(retries.length).toBeGreaterThanOrEqual(2); // before: one dial held for the whole connect timeout
      expect(retries[0]).toMatchObject({ reason: 'TIMEOUT' });
    } finally {
      for (const c of wss.clients) c.terminate();
      await new Promise((r) => wss.close(r));
    }
  });
});

describe('device link: the hub host clock steps', () => {
  let w: World;
  beforeAll(async () => {
    w = await createWorld({ accounts: 4 });
    await w.startHub({ limits: { idleTimeoutMs: 3_000 } }); // heartbeats every second
  });
  afterAll(async () => w?.close());

  /** A connected device that paid 1n, and the reconnects it makes (none while the hub keeps its connection). */
  async function payingDevice(index: number) {
    const retries: unknown[] = [];
    const c = await w.client(index, {
      reconnect: { initialDelayMs: 20, maxDelayMs: 100 },
      onRetry: (r) => retries.push(r),
    });
    const ch = await c.openChannel({ token: w.token, deposit: 1_000_000n });
    await ch.pay(1n);
    return { retries, c, ch };
  }

  it('a wall clock stepped an hour ahead on the hub does not close its live connections as idle', async () => {
    const { retries, c, ch } = await payingDevice(2);
    const wall = Date.now.bind(Date);
    const clock = vi.spyOn(Date, 'now').mockImplementation(() => wall() + 3_600_000);
    try {
      await new Promise((r) => setTimeout(r, 2_500)); // two heartbeats or more
    } finally {
      clock.mockRestore();
    }
    expect(retries).toEqual([]); // the hub closed nothing
    expect(c.connected).toBe(true);
    expect((await ch.pay(2n)).paidByDevice).toBe(3n);
  });

  it('a hub whose event loop was held past idleTimeoutMs does not close its live connections as idle', async () => {
    const { retries, c, ch } = await payingDevice(3);
    // The hub's process does not run for 4 s (a paused container, a long GC): its next heartbeat fires before it
    // reads the device's pongs. This in-process hub shares the loop with the device.
    holdEventLoop(4_000);
    await new Promise((r) => setTimeout(r, 2_500)); // two heartbeats or more after it
    expect(retries).toEqual([]); // the hub closed nothing
    expect(c.connected).toBe(true);
    expect((await ch.pay(2n)).paidByDevice).toBe(3n);
  });
});
