// The public API of @trickle/protocol. Subpaths (`@trickle/protocol/codec`, …) are importable too.
export * from './errors.js';
export * from './types.js';
export { toAddress, toBytes32, toHex, fromHex, keccak256 } from './hex.js';
export * from './eip712.js';
export * from './signer.js';
export * from './channel.js';
export * from './locks.js';
export * from './codec.js';
export * from './json.js';
