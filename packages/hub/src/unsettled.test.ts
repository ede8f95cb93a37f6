/**
 * A credit of a payment whose hub-signed state the device may still hold (it refused it: the channel record keeps it
 * `unsettled`) is never answered as failed while that state can still pay the device — not even when the channel's
 * store fails, which refuses every other credit at once. And a payment asked again while its first credit waits is
 * credited once. A real channel table on a real LMDB store; the store fails on demand.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { stateDigest } from '@trickle/protocol/eip712';
import { signatureToHex } from '@trickle/protocol/signer';
import { isTrickleError } from '@trickle/protocol/errors';
import type { Bytes32, State } from '@trickle/protocol/types';
import { hubChannelRecord } from '../../../test/helpers/hub-channel.mjs';
import type { ChannelTable } from './channels.js';
import { adjudicator, device, hubKey, sep, testTable } from './table.fixture.js';
import { openLmdbStore } from './store/lmdb.js';
import type { ChannelRecord, HubStore } from './store/types.js';
import type { Message } from '@trickle/protocol/codec';

const dir = mkdtempSync(join(tmpdir(), 'trickle-unsettled-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const P = `0x${'0b'.repeat(32)}` as Bytes32;
const Q = `0x${'0c'.repeat(32)}` as Bytes32;

function record(): ChannelRecord {
  const r = hubChannelRecord({ hub: hubKey.address, device: device.address, adjudicator, salt: '05' });
  // The hub credited payment P (v1) and the device refused it: it holds the hub's signature on it.
  const refused: State = { ...r.latest.state, version: 1n, paidByHub: 5n };
  const hubSig = signatureToHex(hubKey.signDigest(stateDigest(sep, refused)));
  return { ...r, hubSignedVersion: 1n, unsettled: [{ state: refused, hubSig, paymentId: P }] };
}

/** A channel table on `store`; the device is offline unless `send` is given (its frames go there). */
function tableOn(store: HubStore, send?: (msg: Message) => void): ChannelTable {
  return testTable(hubKey, store, {
    send: (_device, msg) => (send?.(msg), true),
    isConnected: () => send !== undefined,
  });
}

describe('credits of a payment the device may still be paid by', () => {
  it('are reported (onUnsettled: a warning in the hub’s log) when their count changes, not at every step', async () => {
    const r = record();
    const inner = openLmdbStore({ path: join(dir, 'noted') });
    await inner.commit([{ kind: 'channel', record: r }]);
    let commits = 0;
    const store: HubStore = {
      ...inner,
      loadChannels: () => inner.loadChannels(),
      commit: (writes) => (commits++, inner.commit(writes)),
    };
    let online = false;
    const noted: number[] = [];
    const table = testTable(hubKey, store, {
      isConnected: () => online,
      onUnsettled: (_id, count) => void noted.push(count),
    });
    table.restore(await store.loadChannels());
    // The device comes and goes: each step changes the channel in memory (connected or not), none settles v1 and
    // none writes (the record is unchanged). The chain job behind each step resolves once that step is done.
    for (let i = 1; i <= 4; i++) {
      online = !online;
      table.deviceConnected(device.address);
      await table.onChain(r.channelId, {});
    }
    expect(commits).toBe(0);
    expect(table.unsettledCount()).toBe(1);
    expect(noted).toEqual([]);
    // The device pays at v2: v1 is void, reported once.
    online = true;
    const state: State = { ...r.latest.state, version: 2n, paidByDevice: 3n };
    const sig = device.signDigest(stateDigest(sep, state));
    table.enqueue(device.address, r.channelId, { t: 'update', id: 1, state, sig });
    await expect.poll(() => table.unsettledCount()).toBe(0);
    expect(noted).toEqual([0]);
    await inner.close();
  });

  it('are not refused when the store fails: they wait, and the version the channel closes with decides', async () => {
    const r = record();
    const inner = openLmdbStore({ path: join(dir, 'db') });
    await inner.commit([{ kind: 'channel', record: r }]);
    let failing = false;
    const store: HubStore = {
      ...inner,
      loadChannels: () => inner.loadChannels(),
      commit: (writes) => (failing ? Promise.reject(new Error('EIO: i/o error')) : inner.commit(writes)),
    };
    const table = tableOn(store); // the device offline: credits queue
    table.restore(await store.loadChannels());
    expect(table.unsettledCount()).toBe(1);
    const outcome = (p: Promise<unknown>) =>
      p.then(
        (s) => ({ landed: s }),
        (e: unknown) => (isTrickleError(e) ? e.code : String(e)),
      );
    failing = true;
    const again = outcome(table.credit(r.channelId, 5n, { paymentId: P })); // a router asking again for P
    const other = outcome(table.credit(r.channelId, 7n, { paymentId: Q }));
    // Queued, the credits write nothing; an on-chain top-up behind them does, and its commit fails.
    const funded = table.onChain(r.channelId, { funding: { device: 1001n, hub: 1000n } });
    expect(await other).toBe('STORE_FAILURE'); // nothing of Q is out there: refused at once
    await expect.poll(() => table.isFrozen(r.channelId)).toBe(true);
    const settled = await Promise.race([again, new Promise((res) => setTimeout(() => res('waiting'), 300))]);
    expect(settled).toBe('waiting'); // the device may still register v1, which pays it P
    failing = false;
    await expect.poll(() => table.isFrozen(r.channelId), { timeout: 10_000 }).toBe(false);
    await funded; // held while frozen, landed at the thaw
    // The channel closes on-chain at v1, the refused credit: P was delivered after all.
    await table.onChain(r.channelId, { status: 'closed', version: 1n });
    const got = await again;
    expect(got).toMatchObject({ landed: { state: { version: 1n, paidByHub: 5n } } });
    expect(table.unsettledCount()).toBe(0);
    await inner.close();
  });
});

describe('a payment asked again while its first credit waits for the device', () => {
  it.each([
    ['a routed payment', { paymentId: P }, '06'],
    ['a market round’s credit', { round: 3n }, '08'],
  ] as const)('%s is credited once: the second caller gets the first one’s answer', async (_, meta, salt) => {
    const r = hubChannelRecord({ hub: hubKey.address, device: device.address, adjudicator, salt });
    const store = openLmdbStore({ path: join(dir, `join-${salt}`) });
    await store.commit([{ kind: 'channel', record: r }]);
    const updates: Extract<Message, { t: 'update' }>[] = [];
    const table = tableOn(store, (m) => void (m.t === 'update' && updates.push(m)));
    table.restore(await store.loadChannels());
    // A cluster process whose lease came back under a new epoch works the payment's outbox row again.
    const first = table.credit(r.channelId, 5n, meta);
    await expect.poll(() => updates.length).toBe(1);
    const second = table.credit(r.channelId, 5n, meta);
    const proposal = updates[0]!;
    expect(proposal.state).toMatchObject({ version: 1n, paidByHub: 5n });
    const sig = device.signDigest(stateDigest(sep, proposal.state));
    table.enqueue(device.address, r.channelId, { t: 'ack', id: proposal.id, version: 1n, sig });
    const a = await first;
    await new Promise((res) => setTimeout(res, 100)); // a second proposal of P would be out by now
    expect(updates).toHaveLength(1);
    expect(await second).toEqual(a);
    expect(table.get(r.channelId)!.latest.state.paidByHub).toBe(5n);
    // A payment asked after its credit landed is the store's to refuse (its marker, the cluster's outbox row).
    await store.close();
  });

  it('asked again while the channel is frozen by a failed commit, it still joins the proposal waiting', async () => {
    const r = hubChannelRecord({ hub: hubKey.address, device: device.address, adjudicator, salt: '09' });
    const inner = openLmdbStore({ path: join(dir, 'join-frozen') });
    await inner.commit([{ kind: 'channel', record: r }]);
    let failing = false;
    const store: HubStore = {
      ...inner,
      loadChannels: () => inner.loadChannels(),
      commit: (writes) => (failing ? Promise.reject(new Error('EIO: i/o error')) : inner.commit(writes)),
    };
    const updates: Extract<Message, { t: 'update' }>[] = [];
    const table = tableOn(store, (m) => void (m.t === 'update' && updates.push(m)));
    table.restore(await store.loadChannels());
    const first = table.credit(r.channelId, 5n, { paymentId: P });
    await expect.poll(() => updates.length).toBe(1);
    failing = true;
    // Another credit waits behind P's proposal (nothing to write); an on-chain top-up's commit fails: the channel
    // freezes (that credit is refused); P's proposal is out and waits.
    const other = table.credit(r.channelId, 7n, { paymentId: Q });
    const funded = table.onChain(r.channelId, { funding: { device: 1001n, hub: 1000n } });
    await expect(other).rejects.toMatchObject({ code: 'STORE_FAILURE' });
    expect(table.isFrozen(r.channelId)).toBe(true);
    const second = table.credit(r.channelId, 5n, { paymentId: P }); // joins: nothing to write
    failing = false;
    await expect.poll(() => table.isFrozen(r.channelId), { timeout: 10_000 }).toBe(false);
    await funded;
    const proposal = updates[0]!;
    const sig = device.signDigest(stateDigest(sep, proposal.state));
    table.enqueue(device.address, r.channelId, { t: 'ack', id: proposal.id, version: proposal.state.version, sig });
    const a = await first;
    expect(await second).toEqual(a); // not STORE_FAILURE: the credit it asked for landed
    expect(updates.map((u) => u.state.version)).toEqual([1n]); // P proposed once
    expect(table.get(r.channelId)!.latest.state.paidByHub).toBe(5n);
    await inner.close();
  });
});
