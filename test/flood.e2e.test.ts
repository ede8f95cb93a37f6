import { randomBytes } from 'node:crypto';
import { connect, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stateDigest, domainSeparator, trickleDomain } from '@trickle/protocol/eip712';
import { nobleSigner } from '@trickle/protocol/signer';
import { encodeFrame, type Message } from '@trickle/protocol/codec';
import type { ChannelId } from '@trickle/protocol/types';
import type { ClientChannel } from '@trickle/client/channel';
import { createWorld, type World } from './helpers/harness.js';
import { RawDevice } from './helpers/raw-device.js';
import { waitFor } from './helpers/wait.js';

/**
 * Fairness under a flood (functional, not timed): one authenticated connection replays a refused update as fast
 * as its socket takes it. The hub holds it back to its message rate instead of answering every frame, closes it
 * with `RATE_LIMITED` and WebSocket 1008 once the flood lasts `floodCloseMs`, and another device's payments all
 * complete meanwhile. An HTTP upgrade dribbled byte by byte is dropped at the handshake timeout.
 */
describe('flood and slow handshakes', () => {
  let w: World;
  let honest: ClientChannel;
  const limits = { messagesPerSecond: 2_000, messageBurst: 200, floodCloseMs: 1_500, handshakeTimeoutMs: 1_000 };

  beforeAll(async () => {
    w = await createWorld({ accounts: 4 });
    await w.startHub({ limits });
    const c = await w.client(3);
    honest = await c.openChannel({ token: w.token, deposit: 1_000_000n });
  });
  afterAll(async () => w?.close());

  it('a flooder is held to its rate and closed with RATE_LIMITED / 1008 while another device keeps paying', async () => {
    const fc = await w.client(2);
    const fch = await fc.openChannel({ token: w.token, deposit: 1_000_000n });
    await fch.pay(1n);
    await fch.pay(1n); // the hub's latest is version 2: a replay of version 1 is refused (STALE_VERSION)
    fc.disconnect();
    const signer = nobleSigner(w.chain.accounts[2]!);
    const sep = domainSeparator(trickleDomain(w.chain.chainId, w.adjudicator));
    const stale = { ...w.hub!.channels.get(fch.channelId)!.latest.state, version: 1n, paidByDevice: 1n };
    const sig = signer.signDigest(stateDigest(sep, stale));
    const flooder = await RawDevice.connect(w.hub!.url, signer);

    let sent = 0;
    const flood = (async () => {
      while (flooder.closeCode === undefined) {
        if (flooder.ws.bufferedAmount < 1 << 20)
          for (let k = 0; k < 500; k++) flooder.send({ t: 'update', id: 10 + sent++, state: stale, sig });
        await new Promise((r) => setImmediate(r));
      }
    })();
    let paid = 0n;
    const payer = (async () => {
      for (let k = 0; k < 200; k++) {
        await honest.pay(3n);
        paid += 3n;
      }
    })();

    expect(await flooder.closed(20_000)).toBe(1008);
    await flood;
    await payer;
    const notice = flooder.inbox.find((m: Message) => m.t === 'error' && m.code === 'RATE_LIMITED');
    expect(notice).toBeDefined();
    // every replayed frame the hub did answer was refused for what it is, not for the rate
    const refusals = flooder.inbox.filter((m: Message) => m.t === 'reject');
    expect(refusals.length).toBeGreaterThan(0);
    expect(refusals.every((m) => m.t === 'reject' && m.code === 'STALE_VERSION')).toBe(true);
    // held back: most frames were never read, let alone answered
    expect(refusals.length).toBeLessThan(sent / 4);
    expect(await w.hub!.metrics.registry.getSingleMetricAsString('trickle_disconnects_total')).toMatch(
      /reason="flood"} 1/,
    );
    // the honest device's payments all landed, on both sides
    expect(paid).toBe(600n);
    expect(w.hub!.channels.get(honest.channelId)!.latest.state.paidByDevice).toBe(600n);
    // the flooder's channel is as it was
    expect(w.hub!.channels.get(fch.channelId)!.latest.state.version).toBe(2n);
  }, 60_000);

  it('a peer closed for what it did (a frame before auth, a flood) that writes on and never answers the close is dropped within closeGraceMs (1 s); another device pays throughout', async () => {
    const before = w.hub!.channels.get(honest.channelId)!.latest.state.paidByDevice;
    let paid = 0n;
    let paying = true;
    const payer = (async () => {
      while (paying) {
        await honest.pay(1n);
        paid += 1n;
      }
    })();
    try {
      for (const how of ['before auth', 'flood'] as const) {
        const d = await RawDevice.connect(
          w.hub!.url,
          how === 'flood' ? nobleSigner(`0x${randomBytes(32).toString('hex')}`) : undefined,
        );
        // From here the peer reads the hub's frames itself and never answers its close (ws would).
        const socket = (d.ws as unknown as { _socket: Socket })._socket;
        socket.removeAllListeners('data');
        let input = Buffer.alloc(0);
        let closeCode: number | undefined;
        let closedAt = 0;
        socket.on('data', (b: Buffer) => {
          input = Buffer.concat([input, b]);
          for (;;) {
            if (input.length < 2) break;
            let [len, head] = [input[1]! & 0x7f, 2];
            if (len === 126) [len, head] = [input.length < 4 ? Infinity : input.readUInt16BE(2), 4];
            else if (len === 127) [len, head] = [input.length < 10 ? Infinity : Number(input.readBigUInt64BE(2)), 10];
            if (input.length < head + len) break;
            if ((input[0]! & 0x0f) === 0x8 && closeCode === undefined) {
              closeCode = input.readUInt16BE(head);
              closedAt = performance.now();
            }
            input = input.subarray(head + len);
          }
        });
        let gone = false;
        socket.on('close', () => (gone = true));
        const frame = masked(
          encodeFrame(
            how === 'flood'
              ? { t: 'ping', id: 3 }
              : { t: 'sync', id: 2, channelId: `0x${'44'.repeat(32)}` as ChannelId, latest: null },
          ),
        );
        const burst = Buffer.concat(Array.from({ length: 64 }, () => frame));
        // before: read (every frame parsed, then dropped) until ws's close timeout, 30 s
        const deadline = Date.now() + 15_000;
        while (!gone && Date.now() < deadline) {
          if (socket.writable && socket.writableLength < 1 << 20) socket.write(burst);
          await new Promise((r) => setTimeout(r, 1));
        }
        expect(closeCode).toBe(1008);
        expect(gone).toBe(true);
        expect(performance.now() - closedAt).toBeLessThan(2_500);
      }
    } finally {
      paying = false;
      await payer;
    }
    expect(paid).toBeGreaterThan(0n);
    expect(w.hub!.channels.get(honest.channelId)!.latest.state.paidByDevice).toBe(before + paid);
  }, 60_000);

  it('a device briefly over its rate is held back, not refused, and every frame is answered', async () => {
    const c = await w.client(2);
    const ch = await c.openChannel({ token: w.token, deposit: 1_000_000n });
    c.disconnect();
    const d = await RawDevice.connect(w.hub!.url, nobleSigner(w.chain.accounts[2]!));
    const N = 600; // three buckets' worth in one go: held back, then read on as tokens return
    for (let k = 0; k < N; k++) d.send({ t: 'sync', id: 10 + k, channelId: ch.channelId, latest: null });
    await waitFor(() => d.inbox.filter((m) => m.t === 'sync').length === N, 15_000);
    expect(d.inbox.some((m) => m.t === 'error')).toBe(false);
    expect(d.closeCode).toBeUndefined();
    d.close();
  });

  it('an HTTP upgrade dribbled one byte at a time is dropped at the handshake timeout', async () => {
    const request =
      'GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
      'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n';
    const socket = connect(w.hub!.port, '127.0.0.1');
    let sent = 0;
    let reply = '';
    let closed = false;
    socket.on('data', (b) => (reply += b.toString('latin1')));
    socket.on('close', () => (closed = true));
    socket.on('error', () => {});
    const dribble = setInterval(() => {
      if (!socket.destroyed && sent < request.length) socket.write(request[sent++]!);
    }, 100);
    try {
      // the whole request would take ~15 s at this pace; Node's own default would wait 60–90 s
      await waitFor(() => closed, 10_000);
    } finally {
      clearInterval(dribble);
      socket.destroy();
    }
    expect(sent).toBeLessThan(request.length);
    expect(reply).toMatch(/^HTTP\/1\.1 408/);
  }, 20_000);
});

/** A binary frame as a client sends it: masked (with a zero mask, so the payload is as is). */
function masked(payload: Uint8Array): Buffer {
  const n = payload.length;
  const head = n < 126 ? [0x82, 0x80 | n] : [0x82, 0x80 | 126, n >> 8, n & 255];
  return Buffer.concat([Buffer.from(head), Buffer.alloc(4), payload]);
}
