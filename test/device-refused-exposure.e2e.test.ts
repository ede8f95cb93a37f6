import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fileChannelStore } from '@trickle/client/store';
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
