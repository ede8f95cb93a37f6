/**
 * A device whose socket cannot ping (a browser's WebSocket) at a hub that goes silent after the handshake: a TCP
 * relay on loopback stops passing the hub's bytes to the device, and nothing is closed. The device asks the silent hub
 * for a sign of life with a `ping` frame (wire version 2), hears no `pong`, drops the socket within its liveness bound
 * and pays on a fresh one. The hub answers probes at the price of a refused frame, so a flood of them is held to the
 * refused-frame rate.
 */
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { WebSocket } from 'ws';
import type { Message } from '@trickle/protocol/codec';
import { nobleSigner } from '@trickle/protocol/signer';
import { createWorld, type World } from './helpers/harness.js';
import { RawDevice } from './helpers/raw-device.js';
import { idleClientBehind, startSilentRelay } from './helpers/silent-relay.js';
import { waitFor } from './helpers/wait.js';

// The device client as a browser bundle has it: no Node socket, so it opens the platform's WebSocket (here `ws`'s
// WHATWG-shaped one: no ping of its own to send, and the hub's pings and pongs not shown), the same code path.
vi.mock('../packages/client/dist/socket-node.js', () => ({ openNodeSocket: () => undefined }));

describe('liveness of a device whose socket cannot ping', () => {
  let w: World;
  const limits = { messagesPerSecond: 1_000, messageBurst: 100, refusedFrameCost: 10, floodCloseMs: 2_000 };
  beforeAll(async () => {
    (globalThis as { WebSocket?: unknown }).WebSocket = WebSocket;
    w = await createWorld({ accounts: 4 });
    await w.startHub({ limits });
  });
  afterAll(async () => w?.close());

  it('a hub that goes silent after the handshake is dropped within livenessTimeoutMs and the payments go through', async () => {
    const relay = await startSilentRelay(w.hub!.url);
    try {
      // Idle and alive, the link stays up: the client's ping frames are answered.
      const { c, ch, idle } = await idleClientBehind(w, relay, 2);
      relay.silenceHub();
      const pays = [ch.pay(7n), ch.pay(11n)];
      // Before wire version 2 this socket had no way to ask: the pays waited on the dead link for ever.
      await waitFor(() => relay.accepted > idle, 10_000);
      const receipts = await Promise.all(pays);
      expect(receipts.map((r) => r.amount)).toEqual([7n, 11n]);
      expect(ch.latest.state.paidByDevice).toBe(23n);
      await waitFor(() => w.hub!.channels.get(ch.channelId)!.latest.state.paidByDevice === 23n);
      await c.disconnect();
    } finally {
      await relay.close();
    }
  });

  it('the hub answers ping with pong, and a flood of pings no faster than refused frames', async () => {
    const d = await RawDevice.connect(w.hub!.url, nobleSigner(w.chain.accounts[3]!));
    d.send({ t: 'ping', id: 7 });
    expect(await d.next((m) => m.t === 'pong')).toEqual({ t: 'pong', id: 7 });
    // Refill the bucket, then flood: each ping costs refusedFrameCost tokens, as an `error` reply would.
    await new Promise((r) => setTimeout(r, (limits.messageBurst / limits.messagesPerSecond) * 1000 + 50));
    const started = performance.now();
    for (let id = 100; id < 2_100; id++) d.send({ t: 'ping', id });
    expect(await d.closed(20_000)).toBe(1008); // held back past floodCloseMs, as any flood
    const elapsedS = (performance.now() - started) / 1000;
    const pongs = d.inbox.filter((m): m is Extract<Message, { t: 'pong' }> => m.t === 'pong');
    expect(pongs.length).toBeGreaterThan(0);
    expect(pongs.map((m) => m.id)).toEqual(pongs.map((_, i) => 100 + i)); // in order, none skipped
    // What the budget allows refused frames in that time (a ping at 1 token would have had all 2,000 answered).
    expect(pongs.length).toBeLessThanOrEqual(
      Math.ceil((limits.messageBurst + limits.messagesPerSecond * elapsedS) / limits.refusedFrameCost),
    );
    expect(d.inbox.find((m) => m.t === 'error')).toMatchObject({ code: 'RATE_LIMITED' });
  });
});
