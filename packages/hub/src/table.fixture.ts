// Test fixture (not built: tsconfig excludes *.fixture.ts): a channel table for the hub's unit tests.
import { nobleVerifier, type Signer } from '@trickle/protocol/signer';
import { ChannelTable, type ChannelTableDeps } from './channels.js';
import { createCommitter } from './committer.js';
import { inlineCrypto } from './crypto.js';
import type { HubStore } from './store/types.js';

/**
 * A channel table signing with `hub` on `store` (through a group committer), its crypto inline; the device online and
 * every frame delivered, nothing routed, checked or escrowed, unless `deps` says otherwise.
 */
export function testTable(hub: Signer, store: HubStore, deps: Partial<ChannelTableDeps> = {}): ChannelTable {
  return new ChannelTable({
    crypto: inlineCrypto(hub, nobleVerifier),
    signer: hub,
    verifier: nobleVerifier,
    committer: createCommitter(store),
    send: () => true,
    isConnected: () => true,
    onRouted: () => {},
    checkRoute: () => {},
    onEscrow: () => {},
    onOutcome: () => {},
    maxCreditRetries: 20,
    now: () => Date.now(),
    ...deps,
  });
}
