// Test fixture (not built: tsconfig excludes *.fixture.ts): a real loopback WebSocket server that plays a hub's
// handshake at a given wire version, for client tests about what the client sends to, or how it treats, that hub.
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { WebSocketServer } from 'ws';
import { decodeFrame, encodeFrame, type Message } from '@trickle/protocol/codec';
import { nobleSigner } from '@trickle/protocol/signer';
import type { Address, Bytes32 } from '@trickle/protocol/types';

const HUB = nobleSigner(`0x${'11'.repeat(32)}`);
/** The device's key the tests connect with. */
export const DEVICE = nobleSigner(`0x${'22'.repeat(32)}`);

export interface FakeHub {
  url: string;
  /** Sockets accepted, `ping` frames answered, and every frame received, in order. */
  state: { connections: number; pings: number; received: Message[] };
  /** From now on read nothing more from the open sockets (no pong, no closing handshake) and close none. */
  silence: () => void;
  /** Sends a frame to every open socket (a hub's frame the client did not ask for). */
  send: (msg: Message) => void;
  close: () => Promise<void>;
}

/**
 * A server answering the upgrade with `version` (the subprotocol), that challenges, takes any `auth`, answers `ping`
 * with `pong`, and sends what `answer` returns for any other frame (nothing when it returns undefined).
 */
export async function fakeHub(
  version: string,
  answer: (msg: Message) => Message | undefined = () => undefined,
): Promise<FakeHub> {
  const server = new WebSocketServer({ host: '127.0.0.1', port: 0, handleProtocols: () => version });
  await once(server, 'listening');
  const state = { connections: 0, pings: 0, received: [] as Message[] };
  server.on('connection', (ws) => {
    state.connections++;
    ws.on('message', (data: Buffer) => {
      const msg = decodeFrame(data);
      state.received.push(msg);
      let reply: Message | undefined;
      if (msg.t === 'auth') reply = { t: 'ok', id: msg.id };
      else if (msg.t === 'ping') {
        state.pings++;
        reply = { t: 'pong', id: msg.id };
      } else reply = answer(msg);
      if (reply) ws.send(encodeFrame(reply));
    });
    ws.send(
      encodeFrame({
        t: 'challenge',
        id: 0,
        nonce: `0x${'5a'.repeat(32)}` as Bytes32,
        hub: HUB.address,
        chainId: 31337n,
        adjudicator: `0x${'33'.repeat(20)}` as Address,
        minChallengeSeconds: 1n,
      }),
    );
  });
  return {
    state,
    url: `ws://127.0.0.1:${(server.address() as AddressInfo).port}/`,
    silence: () => {
      for (const c of server.clients) (c as unknown as { _socket: { pause(): void } })._socket.pause();
    },
    send: (msg) => {
      for (const c of server.clients) c.send(encodeFrame(msg));
    },
    close: async () => {
      for (const c of server.clients) c.terminate();
      await new Promise((r) => server.close(r));
    },
  };
}
