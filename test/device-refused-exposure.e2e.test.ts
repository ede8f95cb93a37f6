import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fileChannelStore, type DeviceChannelRecord } from '@trickle/client/store';
import { openLmdbStore } from '@trickle/hub/store/lmdb';
import { nobleSigner } from '@trickle/protocol/signer';
import type { ChannelId } from '@trickle/protocol/types';
import { createWorld, type World } from './helpers/harness.js';
import { waitFor } from './helpers/wait.js';
import { flakyHubStore } from './helpers/flaky-store.js';

/**
 * Two states the device signed and the hub refused, neither void: the hub holds both and may register either (a force
 * close, or the challenge of the device's), so it takes the one that pays it the most — not necessarily the newest. The
 * device's record must name that one, or `trickle force-close` and a restarted device under-report what is exposed.
 * Here: v2 pays the hub 500 over v1 (a routed payment to a payee nobody knows: NO_ROUTE), v3 behind it 7 (refused
 * alike); the hub's store then fails every state above v3, so neither is voided.
 */
describe('two refused states not void: the record keeps the one that pays the hub most', () => {
  let w: World;
  let channelId: ChannelId | undefined;
  beforeAll(async () => {
    w = await createWorld({ accounts: 3 });
    const inner = openLmdbStore({ path: join(w.dir, 'exposure-hub') });
    // Nothing of this channel above v3 lands: the state that would void both is refused (STORE_FAILURE).
    const voiding = (writes: Parameters<typeof inner.commit>[0]) =>
      writes.some(
        (x) => x.kind === 'channel' && x.record.channelId === channelId && x.record.latest.state.version > 3n,
      );
    await w.startHub({ more: { store: flakyHubStore(inner, voiding) } });
  });
  afterAll(async () => w?.close());

  it('v2 (500 more) and v3 (7 more) refused: the stored marker is v2, its exposure 500', async () => {
    const device = await w.client(2);
    const ch = await device.openChannel({ token: w.token, deposit: 1_000n });
    channelId = ch.channelId;
    expect((await ch.pay(100n)).version).toBe(1n);
    const nobody = nobleSigner(`0x${'5a'.repeat(32)}`).address;
    // The second is queued behind the first (a routed payment is a barrier): proposed at v3 once v2 is refused.
    const [big, small] = await Promise.allSettled([ch.pay(500n, { to: nobody }), ch.pay(7n, { to: nobody })]);
    expect(big).toMatchObject({ status: 'rejected', reason: { code: 'NO_ROUTE' } });
    expect(small).toMatchObject({ status: 'rejected', reason: { code: 'NO_ROUTE' } });
    await waitFor(() => ch.unvoided === 3n);
    await ch.flushWrites();
    const stored = await fileChannelStore(join(w.dir, 'device-2')).load(ch.channelId);
    expect(stored!.latest.state).toMatchObject({ version: 1n, paidByDevice: 100n });
    expect(stored!.refused).toMatchObject({ version: 2n, paidByDevice: 600n, paidByHub: 0n });
    expect(ch.unvoided).toBe(3n); // the engine still passes the newest: a state both signed above it voids both
    await device.disconnect();

    // Restarted from that record: still exposed (the hub cannot void it), the marker kept as it was.
    const again = await w.client(2);
    const restored = again.channel(ch.channelId)!;
    expect(restored.unvoided).toBe(2n);
    await again.disconnect();
    const after = await fileChannelStore(join(w.dir, 'device-2')).load(ch.channelId);
    expect(after!.refused).toMatchObject({ version: 2n, paidByDevice: 600n });
  });
});

/**
 * A record whose marker cannot be a state this device signed and the hub refused — a store file corrupted, or edited
 * by hand — is not one to void: its version above every version the device may have signed (its ceiling, the record's
 * `signedVersion`), or a state of another channel. Taken as it is, no state both signed could ever pass it: the channel
 * would report it unvoided for ever, every close wait for it and say the hub may register it.
 */
describe('a refused marker the device cannot have signed is ignored on restore', () => {
  let w: World;
  beforeAll(async () => {
    w = await createWorld({ accounts: 3 });
    await w.startHub();
  });
  afterAll(async () => w?.close());

  it.each([
    [
      'above the ceiling by 2^64',
      (r: DeviceChannelRecord) => ({ ...r.latest.state, version: r.signedVersion + 2n ** 64n }),
    ],
    ['above the ceiling by one', (r: DeviceChannelRecord) => ({ ...r.latest.state, version: r.signedVersion + 1n })],
    [
      'of another channel',
      (r: DeviceChannelRecord) => ({
        ...r.latest.state,
        version: r.latest.state.version + 1n,
        channelId: `0x${'77'.repeat(32)}` as ChannelId,
      }),
    ],
  ])('%s: not unvoided, and dropped from the record', async (_, marker) => {
    const device = await w.client(2);
    const ch = await device.openChannel({ token: w.token, deposit: 1_000n });
    expect((await ch.pay(100n)).version).toBe(1n);
    await ch.flushWrites();
    await device.disconnect();
    const store = fileChannelStore(join(w.dir, 'device-2'));
    const record = (await store.load(ch.channelId))!;
    await store.save({ ...record, refused: { ...marker(record), paidByDevice: 600n } });
    await store.close?.();

    const again = await w.client(2);
    const restored = again.channel(ch.channelId)!;
    expect(restored.unvoided).toBeUndefined();
    expect(await restored.voidRefused(1_000)).toBe(true);
    expect((await restored.pay(5n)).version).toBeGreaterThan(1n);
    await restored.flushWrites();
    await again.disconnect();
    expect((await fileChannelStore(join(w.dir, 'device-2')).load(ch.channelId))!.refused).toBeUndefined();
  });
});
