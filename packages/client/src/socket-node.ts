/**
 * The hub connection's socket in Node: the `ws` package, with `maxPayload` and frames as Buffers (no copy), and the
 * CA certificates a `wss://` connection trusts. A browser bundle gets `socket-browser.ts` instead (package.json
 * `browser` map), so neither `ws` nor this code is in it.
 *
 * @module
 */
import { WebSocket as NodeWebSocket } from 'ws';
import { TrickleError } from '@trickle/protocol/errors';
import { WIRE_PROTOCOLS } from '@trickle/protocol/codec';
import type { Socket, SocketEvents, TrustedCa } from './connection.js';

/**
 * Open a `ws` WebSocket.
 * @returns the socket, or undefined where `ws` has no constructor (its own browser stub, when a bundler ignores the
 *   `browser` map): the caller then opens the platform's WebSocket
 */
export function openNodeSocket(
  url: string,
  maxFrameBytes: number,
  on: SocketEvents,
  ca?: TrustedCa,
): Socket | undefined {
  if (typeof NodeWebSocket !== 'function' || typeof NodeWebSocket.prototype?.on !== 'function') return undefined;
  // Offer the wire versions this client speaks; a hub that speaks none of them answers HTTP 426 (an 'error' here).
  const ws = new NodeWebSocket(url, [...WIRE_PROTOCOLS], {
    maxPayload: maxFrameBytes,
    perMessageDeflate: false,
    ...(ca === undefined ? {} : { ca: typeof ca === 'string' ? ca : [...ca] }),
  });
  ws.binaryType = 'nodebuffer';
  ws.on('message', (data: Buffer, isBinary) => {
    if (isBinary) on.message(data);
  });
  // Liveness (see Connection): the upgrade's answer, and the hub's pings and its pongs to ours.
  ws.on('open', () => on.alive?.());
  ws.on('ping', () => on.alive?.());
  ws.on('pong', () => on.alive?.());
  ws.on('close', () => on.down());
  // ECONNREFUSED, ENOTFOUND, a TLS failure, an HTTP answer instead of an upgrade (426: no wire version in common)
  ws.on('error', (e) => on.down(unsupportedProtocol(e) ?? e));
  return ws;
}

/**
 * A socket failure that is the hub's HTTP 426 answer to the upgrade (it speaks none of the wire versions offered), as
 * an `UNSUPPORTED_PROTOCOL` error; else undefined. (`ws` reports it as "Unexpected server response: 426"; a browser
 * shows no status, so there it stays a failed connection.)
 */
function unsupportedProtocol(e: unknown): TrickleError | undefined {
  const message = e instanceof Error ? e.message : undefined;
  if (message === undefined || !/\bUnexpected server response: 426\b/.test(message)) return undefined;
  return new TrickleError(
    'UNSUPPORTED_PROTOCOL',
    `the hub speaks none of this client's wire protocol versions (${WIRE_PROTOCOLS.join(', ')}): upgrade the client or the hub`,
    { details: { offered: [...WIRE_PROTOCOLS] }, cause: e },
  );
}
