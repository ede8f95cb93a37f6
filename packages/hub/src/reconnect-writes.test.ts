/**
 * A device reconnecting writes nothing when nothing durable changed: the hub's channel object changes (it is connected
 * again, the device's sync is answered) but its record does not — 1,000 devices reconnecting were 1,000 store commits.
 * What a reconnect does make durable still is: a credit proposed once the device is back, a newer state adopted from
 * its sync. A real channel table on a real LMDB store, its commits counted.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { stateDigest } from '@trickle/protocol/eip712';
import type { Message } from '@trickle/protocol/codec';
import { signatureToHex } from '@trickle/protocol/signer';
import type { SignedState } from '@trickle/protocol/types';
import { hubChannelRecord } from '../../../test/helpers/hub-channel.mjs';
import { adjudicator, device, hubKey, sep, testTable } from './table.fixture.js';
import { openLmdbStore } from './store/lmdb.js';
import type { HubStore } from './store/types.js';

const dir = mkdtempSync(join(tmpdir(), 'trickle-reconnect-writes-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A channel on a real LMDB store whose commits are counted, and a channel table over it that can take the device off. */
async function world(salt: string) {
  const r = hubChannelRecord({ hub: hubKey.address, device: device.address, adjudicator, salt });
  const inner = openLmdbStore({ path: join(dir, salt) });
  await inner.commit([{ kind: 'channel', record: r }]);
  let commits = 0;
  const store: HubStore = {
    ...inner,
    loadChannels: () => inner.loadChannels(),
    commit: (writes) => {
      commits++;
      return inner.commit(writes);
    },
  };
  let online = false;
  const sent: Message[] = [];
  const table = testTable(hubKey, store, {
    isConnected: () => online,
    send: (_d, msg) => (online ? (sent.push(msg), true) : false),
  });
  table.restore(await store.loadChannels());
  const syncs = () => sent.filter((m) => m.t === 'sync').length;
  let nextId = 1;
  return {
    r,
    inner,
    table,
    sent,
    commits: () => commits,
    /** The device comes back and syncs with `latest`; resolves once the hub answered its sync. */
    async reconnect(latest: SignedState): Promise<void> {
      const before = syncs();
      online = true;
      table.deviceConnected(device.address);
      table.enqueue(device.address, r.channelId, { t: 'sync', id: nextId++, latest });
      await expect.poll(syncs).toBe(before + 1);
    },
    disconnect(): void {
      online = false;
      table.deviceDisconnected(device.address);
    },
  };
}

const N = 25;

describe('a device reconnecting', () => {
  it(`${N} reconnects of a device whose channel is unchanged commit nothing`, async () => {
    const w = await world('51');
    for (let i = 0; i < N; i++) {
      await w.reconnect(w.r.latest);
      w.disconnect();
    }
    expect(w.commits()).toBe(0);
    expect(w.sent.filter((m) => m.t === 'sync')).toHaveLength(N); // each sync answered all the same
    await w.inner.close();
  });

  it('a credit queued while the device was away is proposed on reconnect and committed before it leaves', async () => {
    const w = await world('52');
    const credited = w.table.credit(w.r.channelId, 7n);
    await new Promise((res) => setTimeout(res, 50)); // the credit reaches the engine and waits for the device
    expect(w.commits()).toBe(0);
    await w.reconnect(w.r.latest);
    const update = w.sent.find((m): m is Extract<Message, { t: 'update' }> => m.t === 'update');
    expect(update?.state).toMatchObject({ version: 1n, paidByHub: 7n });
    expect(w.commits()).toBe(1);
    const [stored] = await w.inner.loadChannels();
    expect(stored!.outgoing?.state).toMatchObject({ version: 1n, paidByHub: 7n });
    const sig = device.signDigest(stateDigest(sep, update!.state));
    w.table.enqueue(device.address, w.r.channelId, { t: 'ack', id: update!.id, version: 1n, sig });
    expect((await credited).state.version).toBe(1n);
    // Back to an unchanged channel: reconnects write nothing again.
    const after = w.commits();
    const latest = w.table.get(w.r.channelId)!.latest;
    for (let i = 0; i < 3; i++) {
      w.disconnect();
      await w.reconnect(latest);
    }
    expect(w.commits()).toBe(after);
    await w.inner.close();
  });

  it('a sync carrying a newer state both signed is adopted and committed', async () => {
    const w = await world('53');
    await w.reconnect(w.r.latest);
    w.disconnect();
    expect(w.commits()).toBe(0);
    const state = { ...w.r.latest.state, version: 1n, paidByDevice: 10n };
    const digest = stateDigest(sep, state);
    const newer: SignedState = {
      state,
      deviceSig: signatureToHex(device.signDigest(digest)),
      hubSig: signatureToHex(hubKey.signDigest(digest)),
    };
    await w.reconnect(newer);
    expect(w.commits()).toBe(1);
    const [stored] = await w.inner.loadChannels();
    expect(stored!.latest.state).toMatchObject({ version: 1n, paidByDevice: 10n });
    await w.inner.close();
  });
});
