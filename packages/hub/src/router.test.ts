/**
 * The router's memory of payment ids is bounded: a route in flight keeps its id refused however many routes finish
 * meanwhile; a finished route's id is refused while it is among the latest `recentPaymentIds`, and accepted again
 * once older. A real channel table on a real LMDB store; devices sign with their own keys.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { Message } from '@trickle/protocol/codec';
import { domainSeparator, stateDigest, trickleDomain } from '@trickle/protocol/eip712';
import { nobleSigner, nobleVerifier, signatureFromHex, signatureToHex } from '@trickle/protocol/signer';
import { toAddress } from '@trickle/protocol/hex';
import type { Address, Bytes32, State } from '@trickle/protocol/types';
import { ChannelTable } from './channels.js';
import { createCommitter } from './committer.js';
import { inlineCrypto } from './crypto.js';
import { Router } from './router.js';
import { openLmdbStore } from './store/lmdb.js';
import type { ChannelRecord, HubStore } from './store/types.js';
import { hubChannelRecord } from '../../../test/helpers/hub-channel.mjs';

const dir = mkdtempSync(join(tmpdir(), 'trickle-router-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const hubKey = nobleSigner(`0x${'11'.repeat(32)}`);
const payer = nobleSigner(`0x${'22'.repeat(32)}`);
const payee = nobleSigner(`0x${'33'.repeat(32)}`); // countersigns every credit
const silent = nobleSigner(`0x${'44'.repeat(32)}`); // never answers: a route to it stays in flight
const payer2 = nobleSigner(`0x${'55'.repeat(32)}`);
const adjudicator = toAddress(`0x${'aa'.repeat(20)}`);
const sep = domainSeparator(trickleDomain(31337n, adjudicator));
const sign = (key: typeof hubKey, s: State) => signatureToHex(key.signDigest(stateDigest(sep, s)));

const channel = (device: typeof payer, salt: string): ChannelRecord =>
  hubChannelRecord({ hub: hubKey.address, device: device.address, adjudicator, salt });

/**
 * A channel table and router on a real LMDB store at `name` holding `records`; `payee` countersigns every credit.
 * `pay` has a payer (its key and channel) pay `to` 1 with payment id `n`: 'delivered', 'sent' (acked, outcome pending)
 * or the refusal code. `send` sends the update and returns its frame id without waiting.
 */
async function routerWorld(name: string, records: ChannelRecord[]) {
  const store = openLmdbStore({ path: join(dir, name) });
  await store.commit(records.map((record) => ({ kind: 'channel', record })));
  const committer = createCommitter(store);
  const frames: Message[] = [];
  let router: Router | undefined;
  const payers = new Set([payer.address, payer2.address]);
  const deliver = (device: Address, msg: Message) => {
    if (payers.has(device)) frames.push(msg);
    if (device === payee.address && msg.t === 'update') {
      const sig = signatureFromHex(sign(payee, msg.state));
      const ack = { t: 'ack', id: msg.id, version: msg.state.version, sig } as const;
      setImmediate(() => table.enqueue(payee.address, msg.state.channelId, ack));
    }
    return true;
  };
  const table: ChannelTable = new ChannelTable({
    crypto: inlineCrypto(hubKey, nobleVerifier),
    signer: hubKey,
    verifier: nobleVerifier,
    committer,
    send: deliver,
    isConnected: () => true,
    onRouted: (route) => router!.forward(route),
    checkRoute: (from, token, route, extra, lock) => router!.check(from, token, route, extra, lock),
    routeChecked: (ids) => router!.routeChecked(ids),
  });
  router = new Router({
    channels: table,
    committer,
    isConnected: () => true,
    send: deliver,
    maxRoutedInFlight: 10n ** 18n,
    onResult: () => {},
    log: () => {},
    recentPaymentIds: 2,
  });
  table.restore(await store.loadChannels());

  const latest = new Map(records.map((r) => [r.channelId, r.latest.state]));
  let frameId = 0;
  const paymentIdOf = (n: number) => `0x${n.toString(16).padStart(64, '0')}` as Bytes32;
  const send = (key: typeof payer, from: ChannelRecord, to: Address, n: number): { id: number; state: State } => {
    const before = latest.get(from.channelId)!;
    const state = { ...before, version: before.version + 1n, paidByDevice: before.paidByDevice + 1n };
    const id = ++frameId;
    table.enqueue(key.address, from.channelId, {
      t: 'update',
      id,
      state,
      sig: signatureFromHex(sign(key, state)),
      route: { to, amount: 1n, paymentId: paymentIdOf(n) },
    });
    return { id, state };
  };
  const answer = async (id: number): Promise<Message> => {
    await expect.poll(() => frames.find((f) => (f.t === 'ack' || f.t === 'reject') && f.id === id)).toBeDefined();
    return frames.find((f) => (f.t === 'ack' || f.t === 'reject') && f.id === id)!;
  };
  const pay = async (
    key: typeof payer,
    from: ChannelRecord,
    to: Address,
    n: number,
    wait: 'receipt' | 'ack' = 'receipt',
  ): Promise<string> => {
    const { id, state } = send(key, from, to, n);
    const a = await answer(id);
    if (a.t === 'reject') return a.code;
    latest.set(from.channelId, state);
    if (wait === 'ack') return 'sent';
    const paymentId = paymentIdOf(n);
    await expect.poll(() => frames.find((f) => f.t === 'receipt' && f.paymentId === paymentId)).toBeDefined();
    const receipts = frames.filter((f) => f.t === 'receipt' && f.paymentId === paymentId);
    return receipts.length === 1 && receipts[0]!.t === 'receipt' && receipts[0]!.delivered ? 'delivered' : 'other';
  };
  return { store, table, frames, send, answer, pay };
}

describe('Router payment ids', () => {
  it('refuses an id in flight for as long as it is, and a finished one only among the latest recentPaymentIds', async () => {
    const records = [channel(payer, '01'), channel(payee, '02'), channel(silent, '03')];
    const [fromChannel] = records as [ChannelRecord];
    const w = await routerWorld('db', records);
    const pay = (to: Address, n: number, wait: 'receipt' | 'ack' = 'receipt') => w.pay(payer, fromChannel, to, n, wait);
    const { frames } = w;

    expect(await pay(payee.address, 1)).toBe('delivered');
    expect(await pay(payee.address, 1)).toBe('NO_ROUTE'); // finished just now: refused
    expect(await pay(silent.address, 2, 'ack')).toBe('sent'); // in flight until the silent payee answers
    expect(await pay(payee.address, 3)).toBe('delivered');
    expect(await pay(payee.address, 4)).toBe('delivered'); // the latest two finished: 3 and 4
    expect(await pay(silent.address, 2)).toBe('NO_ROUTE'); // still in flight: refused, whatever the window
    expect(await pay(payee.address, 4)).toBe('NO_ROUTE');
    expect(await pay(payee.address, 3)).toBe('NO_ROUTE');
    // Id 1 is no longer among the latest two: routed again, once, like a new payment.
    frames.splice(0, frames.length);
    expect(await pay(payee.address, 1)).toBe('delivered');
    expect(await pay(payee.address, 4)).toBe('NO_ROUTE'); // the latest two: 4 and 1
    expect(await pay(payee.address, 3)).toBe('delivered'); // 3 was the older of the two when 1 finished
    await w.store.close();
  });

  it('two payers routing with one payment id at once: one is taken, the other refused, and the route stored is the one taken', async () => {
    const first = channel(payer, '11');
    const second = channel(payer2, '12');
    const w = await routerWorld('db-same-id', [first, second, channel(silent, '13')]);
    // Both checked before either commit lands (the same turn); the payee never answers, so both would stay in flight.
    const a = w.send(payer, first, silent.address, 7);
    const b = w.send(payer2, second, silent.address, 7);
    const answers = await Promise.all([w.answer(a.id), w.answer(b.id)]);
    expect(answers.map((m) => (m.t === 'reject' ? m.code : m.t))).toEqual(['ack', 'NO_ROUTE']);
    const paymentId = `0x${(7).toString(16).padStart(64, '0')}` as Bytes32;
    expect(await w.store.loadRoute!(paymentId)).toMatchObject({ from: payer.address, fromChannel: first.channelId });
    // A refused id is free again once the route holding it is answered: the second payer's next one (id 8) goes through.
    expect(await w.pay(payer2, second, silent.address, 8, 'ack')).toBe('sent');
    await w.store.close();
  });

  it('refuses a negative or fractional recentPaymentIds', () => {
    const deps = {
      channels: {} as ChannelTable,
      // Only the options are checked here: the constructor throws before the store is ever used.
      committer: createCommitter({ commit: async () => {} } as unknown as HubStore),
      isConnected: () => true,
      send: () => true,
      maxRoutedInFlight: 1n,
      onResult: () => {},
      log: () => {},
    };
    expect(() => new Router({ ...deps, recentPaymentIds: -1 })).toThrow(
      expect.objectContaining({ code: 'INVALID_ARGUMENT' }),
    );
    expect(() => new Router({ ...deps, recentPaymentIds: 1.5 })).toThrow(
      expect.objectContaining({ code: 'INVALID_ARGUMENT' }),
    );
    expect(() => new Router({ ...deps, recentPaymentIds: 0 })).not.toThrow();
  });
});
