import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocket, WebSocketServer } from 'ws';
import { decodeFrame, type Message } from '@trickle/protocol/codec';
import type { Address } from '@trickle/protocol/types';
import { nobleSigner, nobleVerifier } from '@trickle/protocol/signer';
import { DEFAULT_HUB_LIMITS } from './options.js';
import { Session, type SessionHandler } from './session.js';

const HUB = nobleSigner(`0x${'11'.repeat(32)}`);

describe('Session frames out', () => {
  let server: WebSocketServer | undefined;
  let client: WebSocket | undefined;
  afterEach(async () => {
    client?.terminate();
    await new Promise((r) => server?.close(r) ?? r(undefined));
  });

  /** A real ws server on loopback whose one connection is a Session, with its socket's writes counted. */
  async function connect() {
    server = new WebSocketServer({ host: '127.0.0.1', port: 0 });
    await once(server, 'listening');
    const handler: SessionHandler = {
      onAuthenticated: () => {},
      onMessage: () => {},
      onClosed: () => {},
      onFrame: () => {},
      onDisconnect: () => {},
    };
    const writes: number[] = []; // chunks per write the server's socket hands to the kernel
    const sessionP = new Promise<Session>((resolve) =>
      server!.once('connection', (ws) => {
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
              adjudicator: `0x${'22'.repeat(20)}` as Address,
              separator: new Uint8Array(32),
              verifier: nobleVerifier,
              limits: DEFAULT_HUB_LIMITS,
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
    return { session, frames, writes };
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
});
