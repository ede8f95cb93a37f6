/**
 * Equivocation evidence at the hub survives a restart: the channel table, on a real LMDB store, keeps the two signed
 * states of an equivocation (once the offered one verifies as the device's) and the channel's evidence count in the
 * same commit; a restarted table keeps counting against the per-channel bound instead of starting over.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { channelIdOf, domainSeparator, stateDigest, trickleDomain } from '@trickle/protocol/eip712';
import type { Message } from '@trickle/protocol/codec';
import { nobleSigner, signatureToHex } from '@trickle/protocol/signer';
import { DEFAULT_ENGINE_CONFIG } from '@trickle/protocol/engine';
import { ETH_TOKEN, ZERO_ROOT, type Address, type Bytes32, type State } from '@trickle/protocol/types';
import { testTable } from './table.fixture.js';
import { openLmdbStore } from './store/lmdb.js';
import type { ChannelRecord, HubStore } from './store/types.js';

const dir = mkdtempSync(join(tmpdir(), 'trickle-evidence-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const hubKey = nobleSigner(`0x${'11'.repeat(32)}`);
const deviceKey = nobleSigner(`0x${'22'.repeat(32)}`);
const otherKey = nobleSigner(`0x${'33'.repeat(32)}`);
const adjudicator = `0x${'aa'.repeat(20)}` as Address;
const sep = domainSeparator(trickleDomain(31337n, adjudicator));
const params = {
  chainId: 31337n,
  adjudicator,
  device: deviceKey.address,
  hub: hubKey.address,
  token: ETH_TOKEN,
  challengeDuration: 3600n,
  salt: `0x${'05'.repeat(32)}` as Bytes32,
};
const channelId = channelIdOf(params);
const v1: State = {
  channelId,
  version: 1n,
  paidByDevice: 10n,
  paidByHub: 0n,
  round: 0n,
  locksRoot: ZERO_ROOT,
  lockedByDevice: 0n,
  lockedByHub: 0n,
  isFinal: false,
};
const sign = (key: typeof hubKey, s: State) => key.signDigest(stateDigest(sep, s));
const record: ChannelRecord = {
  params,
  channelId,
  funding: { device: 1000n, hub: 1000n },
  status: 'open',
  latest: { state: v1, deviceSig: signatureToHex(sign(deviceKey, v1)), hubSig: signatureToHex(sign(hubKey, v1)) },
  hubSignedVersion: 1n,
};

/** A channel table on the store at `path`, restored from it; `frames` collects what it sends the device. */
async function openHub(path: string) {
  const store: HubStore = openLmdbStore({ path });
  const frames: Message[] = [];
  const table = testTable(hubKey, store, {
    send: (_device, msg) => {
      frames.push(msg);
      return true;
    },
    now: () => 1_700_000_000_000,
  });
  table.restore(await store.loadChannels());
  return { store, table, frames };
}

/** The device offers a different state at version 1, signed by `key`; resolves with the hub's answer. */
async function offer(hub: Awaited<ReturnType<typeof openHub>>, id: number, paid: bigint, key = deviceKey) {
  const state = { ...v1, paidByDevice: paid };
  hub.table.enqueue(deviceKey.address, channelId, { t: 'update', id, state, sig: sign(key, state) });
  await expect.poll(() => hub.frames.find((f) => f.t === 'reject' && f.id === id)).toBeDefined();
  // The refusal is sent after the commit that holds the evidence (if any).
  return hub.frames.find((f) => f.t === 'reject' && f.id === id) as Extract<Message, { t: 'reject' }>;
}

describe('equivocation evidence at the hub', () => {
  it('is stored with the channel’s count, survives a restart, and stays bounded per channel across restarts', async () => {
    const path = join(dir, 'db');
    const seed = openLmdbStore({ path });
    await seed.commit([{ kind: 'channel', record }]);
    await seed.close();

    const max = DEFAULT_ENGINE_CONFIG.maxEvidence;
    let hub = await openHub(path);
    // A state signed by someone else is no evidence: refused, nothing kept.
    expect((await offer(hub, 1, 50n, otherKey)).code).toBe('EQUIVOCATION');
    expect(await hub.store.loadEvidence(channelId)).toEqual([]);
    // The device's own second signature at version 1 is kept, with the state the hub holds.
    expect((await offer(hub, 2, 50n)).code).toBe('EQUIVOCATION');
    const [first] = await hub.store.loadEvidence(channelId);
    expect(first).toMatchObject({
      channelId,
      version: 1n,
      held: record.latest,
      offered: {
        state: { ...v1, paidByDevice: 50n },
        sig: signatureToHex(sign(deviceKey, { ...v1, paidByDevice: 50n })),
      },
    });
    expect(hub.table.get(channelId)!.evidenceCount).toBe(1);
    await hub.store.close();

    // Restart: the evidence and the count are read back.
    hub = await openHub(path);
    expect(await hub.store.loadEvidence(channelId)).toHaveLength(1);
    expect(hub.table.get(channelId)!.evidenceCount).toBe(1);
    expect(hub.table.get(channelId)!.latest).toEqual(record.latest); // the channel itself is unchanged
    for (let i = 1; i < max - 1; i++) await offer(hub, 10 + i, 100n + BigInt(i));
    await hub.store.close();

    hub = await openHub(path);
    expect(hub.table.get(channelId)!.evidenceCount).toBe(max - 1);
    await offer(hub, 100, 500n); // the last one the bound allows
    await hub.store.close();

    // After another restart the bound still holds: more equivocations are refused and not stored.
    hub = await openHub(path);
    expect(hub.table.get(channelId)!.evidenceCount).toBe(max);
    expect((await offer(hub, 200, 600n)).code).toBe('EQUIVOCATION');
    expect((await offer(hub, 201, 601n)).code).toBe('EQUIVOCATION');
    expect(await hub.store.loadEvidence(channelId)).toHaveLength(max);
    expect(hub.table.get(channelId)!.latest).toEqual(record.latest);
    await hub.store.close();
  });
});
