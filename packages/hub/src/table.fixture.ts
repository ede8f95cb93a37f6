// Test fixture (not built: tsconfig excludes *.fixture.ts): a channel table for the hub's unit tests.
import { domainSeparator, trickleDomain } from '@trickle/protocol/eip712';
import { toAddress } from '@trickle/protocol/hex';
import { nobleSigner, nobleVerifier, type Signer } from '@trickle/protocol/signer';
import { ChannelTable, type ChannelTableDeps } from './channels.js';
import { createCommitter } from './committer.js';
import { join } from 'node:path';
import { expect } from 'vitest';
import type { Message } from '@trickle/protocol/codec';
import { hubChannelRecord } from '../../../test/helpers/hub-channel.mjs';
import { inlineCrypto } from './crypto.js';
import { openLmdbStore } from './store/lmdb.js';
import type { HubStore } from './store/types.js';

/** The hub's and the device's keys of the table tests' channels, their adjudicator and its EIP-712 separator (31337). */
export const hubKey = nobleSigner(`0x${'11'.repeat(32)}`);
export const device = nobleSigner(`0x${'33'.repeat(32)}`);
export const adjudicator = toAddress(`0x${'aa'.repeat(20)}`);
export const sep = domainSeparator(trickleDomain(31337n, adjudicator));

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
    ...deps,
  });
}

/** A gate for a test store's commits: from `hold()` until the release it returns, a commit waits in `pass()`. */
export function commitGate() {
  let held: Promise<void> | undefined;
  let holding = false;
  return {
    /** Awaited by the store before each commit. */
    async pass(): Promise<void> {
      if (!held) return;
      holding = true;
      await held;
    },
    /** Whether a commit has waited at the gate. */
    holding: () => holding,
    /** Commits wait from now until the returned function is called. */
    hold(): () => void {
      let release!: () => void;
      held = new Promise<void>((res) => (release = res));
      return () => {
        held = undefined;
        release();
      };
    },
  };
}

/**
 * One channel (`device` with `hubKey`, salted by `salt`) on a real LMDB store in `dir`: `inner`, the store itself;
 * `store`, the same whose commits wait at `gate` (from `gate.hold()` until its release).
 */
export async function gatedChannel(dir: string, salt: string) {
  const r = hubChannelRecord({ hub: hubKey.address, device: device.address, adjudicator, salt });
  const inner = openLmdbStore({ path: join(dir, salt) });
  await inner.commit([{ kind: 'channel', record: r }]);
  const gate = commitGate();
  const store: HubStore = {
    ...inner,
    loadChannels: () => inner.loadChannels(),
    commit: async (writes) => {
      await gate.pass();
      return inner.commit(writes);
    },
  };
  return { r, inner, store, gate };
}

/** The hub's answer (`ack` or `reject`) to the device's frame `id` among `sent`, once it is there (5 s at most). */
export async function answerTo(sent: readonly Message[], id: number): Promise<Message> {
  const find = () => sent.find((f) => (f.t === 'ack' || f.t === 'reject') && f.id === id);
  await expect.poll(find, { timeout: 5_000 }).toBeDefined();
  return find()!;
}
