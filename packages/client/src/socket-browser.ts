/**
 * What a browser bundle of the client gets for `socket-node.ts` (package.json `browser` map): no Node socket, so the
 * connection opens the platform's WebSocket. Keeps `ws` (and its CommonJS stub) out of the bundle.
 *
 * @module
 */
import type { Socket } from './connection.js';

/** @returns undefined: a browser has no Node socket */
export function openNodeSocket(): Socket | undefined {
  return undefined;
}
