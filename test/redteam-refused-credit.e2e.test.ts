import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Adjudicator } from '@trickle/chain/adjudicator';
import { signatureToHex } from '@trickle/protocol/signer';
import type { ChannelId, SignedState } from '@trickle/protocol/types';
import { isTrickleError } from '@trickle/protocol/errors';
import { createWorld, type World } from './helpers/harness.js';
import { payeeAsRawDevice } from './helpers/raw-device.js';
import { leaveRunning } from './helpers/wait.js';

/**
 * A hub credit is signed by the hub first (the payer signs first), and the adjudicator takes a force close with a
 * state only the other party signed: so a payee holding the hub's signed credit holds the payment, whether it
 * countersigns or refuses it. The hub refunds the payer of a routed payment the payee refused only once the payee can
 * no longer be paid by the refused credit: a state both signed above it exists (the hub proposes the latest counters
 * one version up), or the channel closed on-chain at another version. Closed at the refused credit's own version,
 * the payment was delivered.
 */
describe('red team: a routed payment the payee refuses, holding the hub-signed credit', () => {
  let w: World;
  beforeAll(async () => {
    w = await createWorld({ accounts: 8 });
    await w.startHub();
  }, 60_000);
  afterAll(async () => w?.close());

  const outcomeOf = (p: Promise<unknown>) =>
    p.then(
      () => 'delivered',
      (e: unknown) => (isTrickleError(e) ? e.code : String(e)),
    );
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

  /** Payer A (index `a`) and payee B (index `b`, back hand-driven): A pays B 700 and B refuses the hub's credit. */
  async function refusedPayment(a: number, b: number, refuseAll: boolean) {
    const { payer, ach, payee, bch, raw } = await payeeAsRawDevice(w, a, b);
    const kept: SignedState[] = [];
    const keep = (m: { state: SignedState['state']; sig: Uint8Array }) =>
      kept.push({ state: m.state, hubSig: signatureToHex(m.sig) });
    let refusing: Promise<void> = Promise.resolve();
    if (refuseAll) refusing = raw.refuseUpdates(bch.channelId, keep, 20_000);
    const paid = outcomeOf(ach.pay(700n, { to: payee.address }));
    if (!refuseAll) {
      const m = await raw.next((x) => x.t === 'update');
      if (m.t !== 'update') throw new Error('unreachable');
      keep(m);
      raw.send({
        t: 'reject',
        id: m.id,
        channelId: bch.channelId,
        code: 'INVALID_ARGUMENT',
        message: 'no',
        latest: null,
      });
    }
    while (kept.length === 0) await sleep(20);
    const credit = kept[0]!;
    expect(credit.state.paidByHub).toBe(700n);
    return { ach, bch, raw, kept, credit, paid, refusing, payer, payee };
  }

  /** The hub's `trickle_unsettled_credits` gauge, from its /metrics. */
  async function unsettledGauge(): Promise<number> {
    await sleep(1_100); // /metrics is rendered at most once a second
    const text = await (await fetch(new URL('/metrics', w.hub!.url.replace(/^ws/, 'http')))).text();
    return Number(/^trickle_unsettled_credits (\S+)$/m.exec(text)?.[1]);
  }

  const refundedOn = (channelId: ChannelId) => w.hub!.channels.get(channelId)!.latest.state.paidByHub;

  it('a payee that refuses every update: the payer is not refunded, and the payee paid on-chain is a delivery', async () => {
    const { ach, bch, raw, credit, paid, refusing } = await refusedPayment(2, 3, true);
    // The hub goes a version up over the refused credit (nothing moves): refused too. A is not refunded meanwhile.
    await sleep(1_500);
    expect(refundedOn(ach.channelId)).toBe(0n);
    const record = w.hub!.channels.get(bch.channelId)!;
    expect(record.unsettled?.map((u) => u.state.version)).toEqual([credit.state.version]);
    expect(await unsettledGauge()).toBe(1); // the operator sees it
    raw.ws.close();
    await refusing;

    // B force-closes with the credit it refused, signed by the hub alone: the adjudicator takes it, nothing above it
    // both signed exists to challenge it with, and it settles paying B the 700.
    const adj = new Adjudicator(w.adjudicator, w.chain.wallet(3));
    const { registration } = await adj.forceClose(credit);
    expect(registration.payoutDevice).toBe(1_700n);
    await w.chain.increaseTime(61);
    await adj.settle(bch.channelId);
    // The hub learns the channel closed at the refused credit's version: the route was delivered, A never refunded.
    expect(await paid).toBe('delivered');
    await sleep(300);
    expect(refundedOn(ach.channelId)).toBe(0n);
    expect(w.hub!.channels.get(bch.channelId)!.unsettled).toBeUndefined();
    expect(await unsettledGauge()).toBe(0);
  });

  it('a payee that refuses the credit and then countersigns the hub’s next state: the payer is refunded, and the refused credit no longer pays', async () => {
    const { ach, bch, raw, credit, paid } = await refusedPayment(4, 5, false);
    await sleep(500);
    expect(refundedOn(ach.channelId)).toBe(0n); // not while B can still register the credit
    raw.ws.close();

    // B comes back with its client: the hub proposes the latest counters one version up, B countersigns it, and the
    // credit is void: A is refunded and told.
    const back = await w.client(5);
    const bch2 = back.channel(bch.channelId)!;
    await waitUntil(() => refundedOn(ach.channelId) === 700n, 10_000);
    expect(await paid).toBe('NO_ROUTE');
    expect(bch2.latest.state.version).toBeGreaterThan(credit.state.version);
    expect(bch2.latest.state.paidByHub).toBe(0n);
    await back.disconnect();

    // B force-closes with the refused credit anyway: the hub challenges with the state both signed above it.
    const adj = new Adjudicator(w.adjudicator, w.chain.wallet(5));
    await adj.forceClose(credit);
    await waitUntil(async () => (await adj.getChannel(bch.channelId)).version > credit.state.version, 20_000);
    await w.chain.increaseTime(61);
    const settled = await adj.settle(bch.channelId);
    expect(settled.closed.devicePayout).toBe(1_000n);
  });
});

describe('red team: a payee that refuses the credit with a code the hub does not know', () => {
  let w: World;
  beforeAll(async () => {
    w = await createWorld({ accounts: 4 });
    await w.startHub();
  }, 60_000);
  afterAll(async () => w?.close());

  it('is a refusal like any other (UNKNOWN_CODE): the payer is refunded once, only after the credit is void', async () => {
    const { payer, ach, payee, bch, raw } = await payeeAsRawDevice(w, 2, 3);
    const paid = ach.pay(700n, { to: payee.address }).then(
      () => 'delivered',
      (e: unknown) => (isTrickleError(e) ? e.code : String(e)),
    );
    const m = await raw.next((x) => x.t === 'update');
    if (m.t !== 'update') throw new Error('unreachable');
    expect(m.state.paidByHub).toBe(700n);
    // A code a newer payee might send; the hub decodes it as UNKNOWN_CODE (wireCode kept), not MALFORMED.
    raw.send({
      t: 'reject',
      id: m.id,
      channelId: bch.channelId,
      code: 'QUOTA_V9' as 'INVALID_ARGUMENT',
      message: 'no',
      latest: null,
    });
    const refunded = () => w.hub!.channels.get(ach.channelId)!.latest.state.paidByHub;
    await new Promise((r) => setTimeout(r, 800));
    expect(refunded()).toBe(0n); // B may still register the credit it refused: A waits
    expect(w.hub!.channels.get(bch.channelId)!.unsettled?.map((u) => u.state.version)).toEqual([m.state.version]);
    raw.ws.close();
    const back = await w.client(3); // countersigns the hub's next state: the refused credit is void
    await waitUntil(() => refunded() === 700n, 10_000);
    expect(await paid).toBe('NO_ROUTE'); // what a payer is told of any payment not delivered
    await new Promise((r) => setTimeout(r, 500));
    expect(refunded()).toBe(700n); // once
    expect(back.channel(bch.channelId)!.latest.state.paidByHub).toBe(0n);
    await back.disconnect();
  });
});

describe('red team: a payee that refuses every credit it is sent', () => {
  let w: World;
  beforeAll(async () => {
    w = await createWorld({ accounts: 4 });
    await w.startHub();
  }, 60_000);
  afterAll(async () => w?.close());

  it('takes no new route once its channel holds 8 refused credits it may still register', async () => {
    const { payer, ach, payee, bch, raw } = await payeeAsRawDevice(w, 2, 3);
    const refusing = raw.refuseUpdates(bch.channelId, () => {}, 10_000);
    const unsettled = () => w.hub!.channels.get(bch.channelId)!.unsettled?.length ?? 0;
    for (let k = 0; k < 8; k++) {
      leaveRunning(ach.pay(10n, { to: payee.address }), 'DISCONNECTED'); // left waiting: never refunded
      await waitUntil(() => unsettled() === k + 1, 10_000);
    }
    // Every one it refused is kept until it is void, so the payee's channel grows no further: refused up front.
    await expect(ach.pay(10n, { to: payee.address })).rejects.toMatchObject({ code: 'NO_ROUTE' });
    expect(unsettled()).toBe(8);
    expect(w.hub!.channels.get(ach.channelId)!.latest.state).toMatchObject({ paidByDevice: 80n, paidByHub: 0n });
    raw.ws.close();
    await refusing;
  });
});

async function waitUntil(cond: () => boolean | Promise<boolean>, ms: number): Promise<void> {
  const until = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > until) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 50));
  }
}
