import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fileChannelStore } from '@trickle/client/store';
import { openLmdbStore } from '@trickle/hub/store/lmdb';
import { Adjudicator } from '@trickle/chain/adjudicator';
import type { ChannelId } from '@trickle/protocol/types';
import { checkFullySigned, channelContext } from '@trickle/protocol/channel';
import { challengeWith } from '@trickle/protocol/engine';
import { nobleSigner, nobleVerifier } from '@trickle/protocol/signer';
import { createWorld, type World } from './helpers/harness.js';
import { waitFor } from './helpers/wait.js';
import { flakyHubStore } from './helpers/flaky-store.js';

/**
 * A hub that refuses a device's payment (here NO_ROUTE: a payee it does not know) still holds the device's signature on
 * that state, which pays it more than the latest state both signed. The device voids it: once idle, it proposes the
 * latest counters one version up, which the real hub countersigns like any payment.
 */
describe('a payment the hub refused is void once the device is idle', () => {
  let w: World;
  beforeAll(async () => {
    w = await createWorld({ accounts: 3 });
    await w.startHub();
  });
  afterAll(async () => w?.close());

  it('NO_ROUTE to an unknown payee: the stored latest ends above the refused version, balances unchanged', async () => {
    const device = await w.client(2);
    const ch = await device.openChannel({ token: w.token, deposit: 1_000n });
    const id = ch.channelId;
    const paid = await ch.pay(100n);
    expect(paid.version).toBe(1n);

    const nobody = nobleSigner('0x' + '5a'.repeat(32)).address;
    const err = await ch.pay(50n, { to: nobody }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toMatchObject({ code: 'NO_ROUTE' });
    const refused = 2n; // the routed state the device signed (paying 150) and the hub refused, holding it

    // The device's store: its latest state, both signed, is above the refused version and moves nothing.
    const store = fileChannelStore(join(w.dir, 'device-2'));
    await waitFor(() => ch.unvoided === undefined);
    await ch.flushWrites();
    const stored = await store.load(id);
    const latest = stored!.latest;
    expect(latest.state.version).toBe(refused + 1n);
    expect([latest.state.paidByDevice, latest.state.paidByHub]).toEqual([100n, 0n]);
    checkFullySigned(channelContext(stored!.params, stored!.funding), latest, nobleVerifier);
    // A force close with the refused state (signed by the device alone) would be challenged with it.
    expect(challengeWith(latest, refused)).toBe(true);
    expect(ch.balance()).toMatchObject({ paid: 100n, received: 0n, available: 900n });

    // The hub countersigned the same state: its latest, nothing moved on its side either.
    const hubSide = w.hub!.channels.get(id)!;
    expect(hubSide.latest.state).toEqual(latest.state);

    // The channel pays on above it.
    expect((await ch.pay(5n)).version).toBe(refused + 2n);
  });
});

describe('a refused payment the hub never lets the device void', () => {
  let w: World;
  const failing = new Set<ChannelId>();
  beforeAll(async () => {
    w = await createWorld({ accounts: 3 });
    await w.startHub({ more: { store: flakyHubStore(openLmdbStore({ path: join(w.dir, 'failing-hub') }), failing) } });
  });
  afterAll(async () => w?.close());

  it('close() waits for the voiding state (bounded), then force-closes with the latest, saying what stays exposed', async () => {
    const device = await w.client(2);
    const ch = await device.openChannel({ token: w.token, deposit: 1_000n });
    await ch.pay(100n); // v1, both signed
    failing.add(ch.channelId); // from here the hub refuses everything on this channel (STORE_FAILURE)
    const err = await ch.pay(50n).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toMatchObject({ code: 'STORE_FAILURE' });
    await waitFor(() => ch.unvoided === 2n); // v2 (paying 150) refused, the state above it refused too
    const started = Date.now();
    const closed = await device.close(ch.channelId, { timeoutMs: 1_500 });
    expect(Date.now() - started).toBeGreaterThanOrEqual(2 * 1_500 - 100); // the cooperative attempts, then the wait
    expect(closed).toMatchObject({ mode: 'force' });
    expect(closed.mode === 'force' && closed.reason).toMatch(/refused state 2 not void/);
    expect(closed.state.state).toMatchObject({ version: 1n, paidByDevice: 100n });
    const onChain = await new Adjudicator(w.adjudicator, w.chain.wallet(2)).getChannel(ch.channelId);
    expect([onChain.status, onChain.version]).toEqual(['closing', 1n]);
  });
});
