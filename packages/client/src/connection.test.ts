/**
 * The connection's liveness probe on a socket that cannot ping (what a browser has): the platform-WebSocket path of
 * `openSocket` (the Node socket stubbed out as a browser bundle does), driven by `ws`'s WHATWG-shaped WebSocket, to
 * a real loopback server that plays the hub's handshake and answers `ping` frames while told to.
 */
import { afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { WebSocket } from 'ws';
import type { Message } from '@trickle/protocol/codec';
import { Connection } from './connection.js';
import { DEVICE, fakeHub, type FakeHub } from './fake-hub.fixture.js';

// What a browser bundle gets for the Node socket: nothing, so the platform's WebSocket is used (no ping, no pong).
vi.mock('./socket-node.js', () => ({ openNodeSocket: () => undefined }));

beforeAll(() => {
  (globalThis as { WebSocket?: unknown }).WebSocket = WebSocket;
});

const until = async (cond: () => boolean, timeoutMs = 10_000): Promise<void> => {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met');
    await new Promise((r) => setTimeout(r, 10));
  }
};
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('Connection liveness on a socket without ping', () => {
  let hub: FakeHub | undefined;
  let conn: Connection | undefined;
  afterEach(async () => {
    conn?.close();
    await hub?.close();
  });

  function open(url: string, handlers: { onMessage?: (m: Message) => void; onDown?: () => void } = {}) {
    conn = new Connection({
      url,
      signer: DEVICE,
      reconnect: { initialDelayMs: 10, maxDelayMs: 20, maxAttempts: Number.POSITIVE_INFINITY },
      requestTimeoutMs: 5_000,
      maxFrameBytes: 64 * 1024,
      connectTimeoutMs: 10_000,
      livenessTimeoutMs: 400,
    });
    return conn.start({
      onReady: () => {},
      onMessage: handlers.onMessage ?? (() => {}),
      onDown: handlers.onDown ?? (() => {}),
    });
  }

  it('at a trickle.v2 hub, probes a silence with ping frames, stays up while pongs come, and drops it when none does', async () => {
    hub = await fakeHub('trickle.v2');
    const heard: Message[] = [];
    let downs = 0;
    await open(hub.url, { onMessage: (m) => heard.push(m), onDown: () => downs++ });
    // Idle, alive: the client asks (several times over several limits) and the pongs keep the one socket up.
    await until(() => hub!.state.pings >= 3);
    expect(hub.state.connections).toBe(1);
    expect(downs).toBe(0);
    expect(heard.filter((m) => m.t === 'pong')).toEqual([]); // answers to probes are not channel traffic
    // The hub goes silent (the socket stays open): the client drops it and dials again, without waiting for the
    // closing handshake the silent end never answers (`ws` would wait 30 s for it, a browser a minute).
    hub.silence();
    await until(() => hub!.state.connections === 2, 10_000);
    expect(downs).toBe(1);
    await until(() => conn!.ready);
  });

  it('at a trickle.v1 hub, sends no ping frame (it does not know one) and keeps the socket', async () => {
    hub = await fakeHub('trickle.v1');
    await open(hub.url);
    await sleep(1_500); // more than three liveness limits of silence
    expect(hub.state.received.map((m) => m.t)).toEqual(['auth']);
    expect(hub.state.connections).toBe(1);
    expect(conn!.ready).toBe(true);
  });
});
