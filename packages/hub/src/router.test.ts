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
const adjudicator = toAddress(`0x${'aa'.repeat(20)}`);
const sep = domainSeparator(trickleDomain(31337n, adjudicator));
const sign = (key: typeof hubKey, s: State) => signatureToHex(key.signDigest(stateDigest(sep, s)));

const channel = (device: typeof payer, salt: string): ChannelRecord =>
  hubChannelRecord({ hub: hubKey.address, device: device.address, adjudicator, salt });

describe('Router payment ids', () => {
  it('refuses an id in flight for as long as it is, and a finished one only among the latest recentPaymentIds', async () => {
    const records = [channel(payer, '01'), channel(payee, '02'), channel(silent, '03')];
    const [fromChannel] = records as [ChannelRecord];
    const store = openLmdbStore({ path: join(dir, 'db') });
    await store.commit(records.map((record) => ({ kind: 'channel', record })));
    const committer = createCommitter(store);
    const frames: Message[] = [];
    let router: Router | undefined;
    const send = (device: Address, msg: Message) => {
      if (device === payer.address) frames.push(msg);
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
      send,
      isConnected: () => true,
      onRouted: (route) => router!.forward(route),
      checkRoute: (from, token, route, extra, lock) => router!.check(from, token, route, extra, lock),
    });
    router = new Router({
      channels: table,
      committer,
      isConnected: () => true,
      send,
      maxRoutedInFlight: 10n ** 18n,
      onResult: () => {},
      log: () => {},
      recentPaymentIds: 2,
    });
    table.restore(await store.loadChannels());

    let latest = fromChannel.latest.state;
    let frameId = 0;
    /** The payer pays `to` 1 with payment id `n`: 'delivered', 'sent' (acked, outcome pending) or the refusal code. */
    async function pay(to: Address, n: number, wait: 'receipt' | 'ack' = 'receipt'): Promise<string> {
      const paymentId = `0x${n.toString(16).padStart(64, '0')}` as Bytes32;
      const state = { ...latest, version: latest.version + 1n, paidByDevice: latest.paidByDevice + 1n };
      const id = ++frameId;
      table.enqueue(payer.address, fromChannel.channelId, {
        t: 'update',
        id,
        state,
        sig: signatureFromHex(sign(payer, state)),
        route: { to, amount: 1n, paymentId },
      });
      await expect.poll(() => frames.find((f) => (f.t === 'ack' || f.t === 'reject') && f.id === id)).toBeDefined();
      const answer = frames.find((f) => (f.t === 'ack' || f.t === 'reject') && f.id === id)!;
      if (answer.t === 'reject') return answer.code;
      latest = state;
      if (wait === 'ack') return 'sent';
      await expect.poll(() => frames.find((f) => f.t === 'receipt' && f.paymentId === paymentId)).toBeDefined();
      const receipts = frames.filter((f) => f.t === 'receipt' && f.paymentId === paymentId);
      return receipts.length === 1 && receipts[0]!.t === 'receipt' && receipts[0]!.delivered ? 'delivered' : 'other';
    }

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
    await store.close();
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
