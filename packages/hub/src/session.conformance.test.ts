/**
 * Spec §3, "Limits and fairness": a frame the hub refuses (an `error` or `reject` reply) costs `refusedFrameCost` in
 * all, and so does every `close`, every `reject` and an `ack` that answers no proposal of the hub's. A frame that is
 * both (a `close` the hub refuses, an unanswering `ack` refused for its channel) costs it once, not twice.
 */
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocket, WebSocketServer } from 'ws';
import { decodeFrame, encodeFrame, type Message } from '@trickle/protocol/codec';
import { authDigest, domainSeparator, trickleDomain } from '@trickle/protocol/eip712';
import { TrickleError } from '@trickle/protocol/errors';
import { nobleSigner, nobleVerifier } from '@trickle/protocol/signer';
import { ZERO_ROOT, type Address, type ChannelId, type State } from '@trickle/protocol/types';
import { DEFAULT_HUB_LIMITS, type HubLimits } from './options.js';
import { Session, type SessionHandler } from './session.js';

const HUB = nobleSigner(`0x${'11'.repeat(32)}`);
const DEVICE = nobleSigner(`0x${'33'.repeat(32)}`);
const ADJUDICATOR = `0x${'22'.repeat(20)}` as Address;
const SEPARATOR = domainSeparator(trickleDomain(31337n, ADJUDICATOR));
const CHANNEL = `0x${'44'.repeat(32)}` as ChannelId;

describe('Session: what refused frames cost (spec §3)', () => {
  let server: WebSocketServer | undefined;
  let client: WebSocket | undefined;
  afterEach(async () => {
    client?.terminate();
    await new Promise((r) => server?.close(r) ?? r(undefined));
  });

  /** An authenticated device on a Session whose handler refuses every `close` and `ack` (WRONG_CHANNEL). */
  async function connect(limits: HubLimits) {
    server = new WebSocketServer({ host: '127.0.0.1', port: 0 });
    await once(server, 'listening');
    const handler: SessionHandler = {
      onAuthenticated: () => {},
      onMessage: (_s, msg) => {
        if (msg.t === 'close' || msg.t === 'ack') throw new TrickleError('WRONG_CHANNEL', 'not a channel here');
      },
      onClosed: () => {},
      onFrame: () => {},
      onDisconnect: () => {},
    };
    server.once('connection', (ws) => {
      new Session(
        ws,
        {
          hub: HUB.address,
          chainId: 31337n,
          adjudicator: ADJUDICATOR,
          separator: SEPARATOR,
          verifier: nobleVerifier,
          limits,
        },
        handler,
      );
    });
    client = new WebSocket(`ws://127.0.0.1:${(server.address() as AddressInfo).port}`);
    client.binaryType = 'nodebuffer';
    const frames: { at: number; m: Message }[] = [];
    client.on('message', (data) => frames.push({ at: performance.now(), m: decodeFrame(data as Buffer) }));
    const next = async (pred: (m: Message) => boolean, timeoutMs = 10_000) => {
      const until = performance.now() + timeoutMs;
      for (;;) {
        const i = frames.findIndex((f) => pred(f.m));
        if (i >= 0) return frames.splice(i, 1)[0]!;
        if (performance.now() > until) throw new Error('timed out');
        await new Promise((r) => setTimeout(r, 5));
      }
    };
    const challenge = (await next((m) => m.t === 'challenge')).m as Extract<Message, { t: 'challenge' }>;
    const send = (m: Message) => client!.send(encodeFrame(m));
    send({
      t: 'auth',
      id: 1,
      device: DEVICE.address,
      nonce: challenge.nonce,
      sig: DEVICE.signDigest(authDigest(SEPARATOR, DEVICE.address, HUB.address, challenge.nonce)),
    });
    await next((m) => m.t === 'ok');
    return { send, next };
  }

  const finalState: State = {
    channelId: CHANNEL,
    version: 5n,
    paidByDevice: 0n,
    paidByHub: 0n,
    round: 0n,
    locksRoot: ZERO_ROOT,
    lockedByDevice: 0n,
    lockedByHub: 0n,
    isFinal: true,
  };
  // 10 tokens a second, a burst of 21 (20 left after the auth): two frames that cost 10 each leave the bucket at 0,
  // and a ping right behind them waits a tenth of a second for its token; charged 19 each, it waits about 2 s.
  const limits: HubLimits = { ...DEFAULT_HUB_LIMITS, messagesPerSecond: 10, messageBurst: 21, refusedFrameCost: 10 };

  it('a close the hub refuses costs refusedFrameCost in all, not twice', async () => {
    const { send, next } = await connect(limits);
    const start = performance.now();
    send({ t: 'close', id: 2, state: finalState });
    send({ t: 'close', id: 3, state: finalState });
    send({ t: 'ping', id: 4 });
    const r1 = await next((m) => m.t === 'reject' && m.id === 2);
    const r2 = await next((m) => m.t === 'reject' && m.id === 3);
    expect([r1.m, r2.m].map((m) => (m as Extract<Message, { t: 'reject' }>).code)).toEqual([
      'WRONG_CHANNEL',
      'WRONG_CHANNEL',
    ]);
    const pong = await next((m) => m.t === 'pong' && m.id === 4);
    // The ping costs 10 itself, so it waits for one token only: about 100 ms, well under the ~2 s of a double charge.
    expect(pong.at - start).toBeLessThan(1000);
  });

  it('an ack that answers no proposal and is refused for its channel costs refusedFrameCost in all, not twice', async () => {
    const { send, next } = await connect(limits);
    const start = performance.now();
    const ack = { t: 'ack', channelId: CHANNEL, version: 5n, sig: new Uint8Array(65) } as const;
    send({ ...ack, id: 2 });
    send({ ...ack, id: 3 });
    send({ t: 'ping', id: 4 });
    await next((m) => m.t === 'error' && m.id === 2);
    await next((m) => m.t === 'error' && m.id === 3);
    const pong = await next((m) => m.t === 'pong' && m.id === 4);
    expect(pong.at - start).toBeLessThan(1000);
  });
});
