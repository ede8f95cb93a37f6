/**
 * `receiptFor` asks the hub with an `outcome` query only on a connection of wire version 3: a hub of version 1 or 2
 * refuses the query as `MALFORMED` (and closes the connection after a few). A real loopback server plays the hub's
 * handshake at the version it is given and records what the client sends.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { Receipt } from '@trickle/protocol/receipt';
import type { Address, Bytes32 } from '@trickle/protocol/types';
import { TrickleClient } from './client.js';
import { DEVICE, fakeHub } from './fake-hub.fixture.js';
import { receiptFor } from './receipts.js';
import { memoryChannelStore } from './store.js';

const PAYMENT = `0x${'0c'.repeat(32)}` as Bytes32;

/** A client of a device whose store holds a receipt purchase it paid for before a restart. */
async function restartedClient(url: string): Promise<TrickleClient> {
  const store = memoryChannelStore();
  const purchase: Receipt = {
    payer: DEVICE.address,
    payee: `0x${'44'.repeat(20)}` as Address,
    token: `0x${'55'.repeat(20)}` as Address,
    amount: 1_000n,
    resource: `0x${'04'.repeat(32)}` as Bytes32,
    nonce: `0x${'05'.repeat(32)}` as Bytes32,
    expiry: 1_900_000_000n,
    paymentId: PAYMENT,
  };
  await store.purchases!.savePurchase(purchase);
  return TrickleClient.connect({ url, signer: DEVICE, store, lockGuard: false });
}

describe('receiptFor and the wire version', () => {
  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });
  /** A hub of `version` answering `outcome` with pending, and a restarted client connected to it. */
  const pendingHub = async (version: string) => {
    const hub = await fakeHub(version, (m) =>
      m.t === 'outcome'
        ? { t: 'receipt', id: m.id, paymentId: m.paymentId, delivered: false, pending: true }
        : undefined,
    );
    cleanups.push(hub.close);
    const client = await restartedClient(hub.url);
    cleanups.push(() => client.disconnect());
    return { hub, client };
  };

  for (const [version, asks] of [
    ['trickle.v3', true],
    ['trickle.v2', false],
    ['trickle.v1', false],
  ] as const)
    it(`at a ${version} hub, ${asks ? 'asks with an outcome query' : 'sends no outcome query and waits for the hub’s frame'}`, async () => {
      const { hub, client } = await pendingHub(version);
      expect(client.wireVersion).toBe(Number(version.slice('trickle.v'.length)));
      // The route is pending (or, at an older hub, nothing is said): the wait ends at its timeout.
      await expect(receiptFor(client, PAYMENT, { timeoutMs: 300 })).rejects.toMatchObject({ code: 'TIMEOUT' });
      expect(hub.state.received.filter((m) => m.t === 'outcome')).toEqual(
        asks ? [{ t: 'outcome', id: expect.any(Number), paymentId: PAYMENT }] : [],
      );
    });

  it('a timeoutMs longer than a timer holds waits (it fired at once, answering TIMEOUT); a negative one is INVALID_ARGUMENT', async () => {
    const { hub, client } = await pendingHub('trickle.v3');
    const outcome = receiptFor(client, PAYMENT, { timeoutMs: 2 ** 31 }).then(
      () => 'resolved',
      (e: { code?: string }) => e.code,
    );
    await new Promise((r) => setTimeout(r, 300));
    hub.send({ t: 'receipt', id: 0, paymentId: PAYMENT, delivered: false }); // refunded, later
    expect(await outcome).toBe('NO_ROUTE');
    await expect(receiptFor(client, PAYMENT, { timeoutMs: -1 })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
  });
});
