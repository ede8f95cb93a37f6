import { once } from 'node:events';
import type { AddressInfo, Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocket, WebSocketServer } from 'ws';
import { decodeFrame, encodeFrame, type Message } from '@trickle/protocol/codec';
import { authDigest, domainSeparator, trickleDomain } from '@trickle/protocol/eip712';
import type { Address, ChannelId } from '@trickle/protocol/types';
import { nobleSigner, nobleVerifier } from '@trickle/protocol/signer';
import { DEFAULT_HUB_LIMITS, type HubLimits } from './options.js';
import { Session, type SessionHandler } from './session.js';

const HUB = nobleSigner(`0x${'11'.repeat(32)}`);
const ADJUDICATOR = `0x${'22'.repeat(20)}` as Address;
const SEPARATOR = domainSeparator(trickleDomain(31337n, ADJUDICATOR));

describe('Session frames out', () => {
  let server: WebSocketServer | undefined;
  let client: WebSocket | undefined;
  afterEach(async () => {
    client?.terminate();
    for (const ws of server?.clients ?? []) ws.terminate(); // a paused socket may not hear its peer go
    await new Promise((r) => server?.close(r) ?? r(undefined));
  });

  /** A real ws server on loopback whose one connection is a Session, with its socket's writes counted. */
  async function connect(limits: HubLimits = DEFAULT_HUB_LIMITS) {
    server = new WebSocketServer({ host: '127.0.0.1', port: 0 });
    await once(server, 'listening');
    const disconnects: string[] = [];
    const handler: SessionHandler = {
      onAuthenticated: () => {},
      onMessage: () => {},
      onClosed: () => {},
      onFrame: () => {},
      onDisconnect: (reason) => disconnects.push(reason),
    };
    const writes: number[] = []; // chunks per write the server's socket hands to the kernel
    let serverSocket!: Socket;
    const sessionP = new Promise<Session>((resolve) =>
      server!.once('connection', (ws) => {
        serverSocket = (ws as unknown as { _socket: Socket })._socket;
        // net.Socket hands one buffered chunk to _write and several (corked) to _writev: one system call each.
        const socket = (ws as unknown as { _socket: Record<string, (...a: unknown[]) => unknown> })._socket;
        const write = socket._write!.bind(socket);
        const writev = socket._writev!.bind(socket);
        socket._write = (chunk: unknown, ...rest: unknown[]) => {
          writes.push(1);
          return write(chunk, ...rest);
        };
        socket._writev = (chunks: unknown, ...rest: unknown[]) => {
          writes.push((chunks as unknown[]).length);
          return writev(chunks, ...rest);
        };
        resolve(
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
          ),
        );
      }),
    );
    client = new WebSocket(`ws://127.0.0.1:${(server.address() as AddressInfo).port}`);
    client.binaryType = 'nodebuffer';
    const frames: Message[] = [];
    client.on('message', (data) => frames.push(decodeFrame(data as Buffer)));
    const session = await sessionP;
    while (frames.length === 0) await new Promise((r) => setTimeout(r, 1));
    return { session, frames, writes, disconnects, serverSocket: () => serverSocket };
  }

  it('sends the frames of one turn in one write, in order, and a frame of a later turn at once', async () => {
    const { session, frames, writes } = await connect();
    expect(frames[0]?.t).toBe('challenge');
    writes.length = 0;
    // One turn: three answers, as after one commit that acks three updates of this device.
    for (const id of [1, 2, 3]) expect(session.send({ t: 'ok', id })).toBe(true);
    while (frames.length < 4) await new Promise((r) => setTimeout(r, 1));
    expect(frames.slice(1).map((f) => (f as { id: number }).id)).toEqual([1, 2, 3]);
    // One system call for the three frames (each a header and a payload), not one per frame.
    expect(writes).toEqual([6]);

    // A later turn (from a promise reaction, as a commit's acks are): it leaves without waiting for anything else.
    await Promise.resolve();
    session.send({ t: 'ok', id: 4 });
    while (frames.length < 5) await new Promise((r) => setImmediate(r));
    expect((frames[4] as { id: number }).id).toBe(4);
    expect(writes.slice(1)).toEqual([2]);
  });

  /** A masked binary frame as a client sends it (mask 0), written on the client's raw socket. */
  const masked = (payload: Uint8Array) =>
    Buffer.concat([
      Buffer.from(
        payload.length < 126
          ? [0x82, 0x80 | payload.length]
          : [0x82, 0x80 | 126, payload.length >> 8, payload.length & 255],
      ),
      Buffer.alloc(4),
      payload,
    ]);

  it('closed for what the peer did (a frame before auth, a flood), the peer is read no more: what it sends after the close stays unread', async () => {
    const limits = { ...DEFAULT_HUB_LIMITS, messagesPerSecond: 100, messageBurst: 10, floodCloseMs: 200 };
    for (const how of ['before auth', 'flood'] as const) {
      const { frames, disconnects, serverSocket } = await connect(limits);
      const challenge = frames[0] as Extract<Message, { t: 'challenge' }>;
      if (how === 'flood') {
        const device = nobleSigner(`0x${'33'.repeat(32)}`);
        const sig = device.signDigest(authDigest(SEPARATOR, device.address, HUB.address, challenge.nonce));
        client!.send(encodeFrame({ t: 'auth', id: 1, device: device.address, nonce: challenge.nonce, sig }));
        while (!frames.some((f) => f.t === 'ok')) await new Promise((r) => setTimeout(r, 1));
      }
      // From here the peer writes raw frames and never answers the hub's close (ws would).
      const raw = (client as unknown as { _socket: Socket })._socket;
      raw.removeAllListeners('data');
      raw.on('data', () => {});
      if (how === 'before auth') {
        raw.write(
          masked(encodeFrame({ t: 'sync', id: 2, channelId: `0x${'44'.repeat(32)}` as ChannelId, latest: null })),
        );
      } else {
        const ping = masked(encodeFrame({ t: 'ping', id: 3 }));
        while (disconnects.length === 0) {
          raw.write(Buffer.concat(Array.from({ length: 64 }, () => ping)));
          await new Promise((r) => setTimeout(r, 1));
        }
      }
      while (disconnects.length === 0) await new Promise((r) => setTimeout(r, 1));
      expect(disconnects).toEqual([how === 'flood' ? 'flood' : 'auth-failed']);
      const read = serverSocket().bytesRead;
      // 8 MiB more, in 1 KiB frames (before: all read and parsed, then dropped, until ws's close timeout)
      const junk = masked(new Uint8Array(1024));
      raw.write(Buffer.concat(Array.from({ length: 8192 }, () => junk)));
      await new Promise((r) => setTimeout(r, 300));
      expect(serverSocket().bytesRead - read).toBeLessThan(256 * 1024);
      client!.terminate();
      for (const ws of server!.clients) ws.terminate();
      await new Promise((r) => server!.close(r));
    }
  });
});
