import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket, WebSocketServer, type RawData } from 'ws';
import { decodeFrame, encodeFrame, type Message } from '@trickle/protocol/codec';
import { TrickleError } from '@trickle/protocol/errors';
import { createWorld, type World } from './helpers/harness.js';

/**
 * A WebSocket relay in front of the real hub that plays a newer hub for one kind of request: the first `ask` order it
 * sees is not passed on but answered with an `error` frame whose code this version does not know. Every other frame
 * goes through untouched, both ways.
 */
async function newerHubInFront(hubUrl: string, code: string) {
  let answered = 0;
  let connections = 0;
  const server = new WebSocketServer({ host: '127.0.0.1', port: 0, handleProtocols: () => 'trickle.v1' });
  server.on('connection', (down) => {
    connections++;
    const up = new WebSocket(hubUrl, 'trickle.v1');
    const early: RawData[] = [];
    up.on('message', (data) => down.send(data as Buffer));
    up.on('open', () => {
      for (const d of early.splice(0)) up.send(d as Buffer);
    });
    up.on('close', () => down.close());
    up.on('error', () => down.terminate());
    down.on('close', () => up.close());
    down.on('message', (data) => {
      const msg = decodeFrame(new Uint8Array(data as Buffer));
      if (answered === 0 && msg.t === 'order' && msg.order.side === 'ask') {
        answered++;
        // What a newer hub would send; the encoder writes the code it is given.
        const reply = { t: 'error', id: msg.id, code, message: 'the kwh market is paused' } as unknown as Message;
        down.send(encodeFrame(reply));
        return;
      }
      if (up.readyState === WebSocket.OPEN) up.send(data as Buffer);
      else early.push(data);
    });
  });
  await new Promise<void>((r) => server.once('listening', r));
  return {
    url: `ws://127.0.0.1:${(server.address() as AddressInfo).port}`,
    get connections() {
      return connections;
    },
    get answered() {
      return answered;
    },
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

describe('a hub answers a request with an error code this device does not know', () => {
  let w: World;
  let relay: Awaited<ReturnType<typeof newerHubInFront>>;
  beforeAll(async () => {
    w = await createWorld({ accounts: 3 });
    await w.startHub({ market: { roundMs: 60_000, feeBps: 0n } });
    relay = await newerHubInFront(w.hub!.url, 'MARKET_PAUSED');
  });
  afterAll(async () => {
    await w?.close();
    await relay?.close();
  });

  it('the caller of that request gets UNKNOWN_CODE with the code as sent; the connection and the channel go on', async () => {
    const device = await w.client(2, { url: relay.url, requestTimeoutMs: 5_000 });
    const ch = await device.openChannel({ token: w.token, deposit: 1_000n });
    expect((await ch.pay(100n)).version).toBe(1n);
    await device.market.ready();
    const round = device.market.round;

    const err = await device.market
      .submitOrder(ch, { market: 'kwh', side: 'ask', quantity: 2n, price: 100n, round })
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(relay.answered).toBe(1);
    expect(err).toBeInstanceOf(TrickleError);
    expect(err).toMatchObject({
      code: 'UNKNOWN_CODE',
      shortMessage: 'the kwh market is paused',
      details: { wireCode: 'MARKET_PAUSED' },
    });

    // The same connection, still up: the frame was no malformed one.
    expect(device.connected).toBe(true);
    expect(relay.connections).toBe(1);
    // Nothing else changed: the channel pays on from where it was, and the next order reaches the hub.
    expect(ch.balance()).toMatchObject({ paid: 100n, received: 0n, available: 900n });
    expect((await ch.pay(5n)).version).toBe(2n);
    const placed = await device.market.submitOrder(ch, {
      market: 'kwh',
      side: 'ask',
      quantity: 2n,
      price: 100n,
      round,
    });
    expect(placed).toMatchObject({ round, escrow: 0n });
    expect(w.hub!.channels.get(ch.channelId)!.latest.state).toMatchObject({ version: 2n, paidByDevice: 105n });
    expect(relay.connections).toBe(1);
  });
});
