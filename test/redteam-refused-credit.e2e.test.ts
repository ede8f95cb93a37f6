import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Adjudicator } from '@trickle/chain/adjudicator';
import { nobleSigner, signatureToHex } from '@trickle/protocol/signer';
import type { SignedState } from '@trickle/protocol/types';
import { isTrickleError } from '@trickle/protocol/errors';
import { createWorld, type World } from './helpers/harness.js';
import { RawDevice } from './helpers/raw-device.js';

/**
 * A hub credit is signed by the hub first (the payer signs first), and the adjudicator takes a force close with a
 * state only the other party signed: so a payee holding the hub's signed credit holds the payment, whether it
 * countersigns or refuses it. If the hub refunds the payer of a routed payment on the payee's refusal, it pays twice.
 */
describe('red team: a routed payment the payee refuses, holding the hub-signed credit', () => {
  let w: World;
  beforeAll(async () => {
    w = await createWorld({ accounts: 5 });
    await w.startHub();
  }, 60_000);
  afterAll(async () => w?.close());

  // Left to the hub's owners: the payer's refund must wait until the payee's channel has a state both signed above the
  // refused credit's version (or closed on-chain without it); the hub can otherwise lose each refused payment once.
  it.fails('the hub refunds the payer only if the payee can no longer register the refused credit', async () => {
    const a = await w.client(2);
    const ach = await a.openChannel({ token: w.token, deposit: 100_000n });
    const b = await w.client(3);
    const bch = await b.openChannel({ token: w.token, deposit: 1_000n, challengeDuration: 60n });
    await w.hubDeposit(bch.channelId, 50_000n);
    await b.disconnect();

    // B comes back hand-driven: it keeps every credit the hub signs and refuses it.
    const raw = await RawDevice.connect(w.hub!.url, nobleSigner(w.chain.accounts[3]!));
    raw.send({ t: 'sync', id: 2, channelId: bch.channelId, latest: null });
    await raw.next((m) => m.t === 'sync' && m.id === 2);
    const kept: SignedState[] = [];
    const refusing = raw.refuseUpdates(
      bch.channelId,
      (m) => kept.push({ state: m.state, hubSig: signatureToHex(m.sig) }),
      20_000,
    );

    // A pays B 700 through the hub; B refuses; A is told NO_ROUTE and refunded.
    const outcome = await ach.pay(700n, { to: b.address }).then(
      () => 'delivered',
      (e: unknown) => (isTrickleError(e) ? e.code : String(e)),
    );
    expect(outcome).toBe('NO_ROUTE');
    expect(kept.length).toBeGreaterThan(0);
    const credit = kept.at(-1)!;
    expect(credit.state.paidByHub).toBe(700n);
    const refunded = () => w.hub!.channels.get(ach.channelId)!.latest.state.paidByHub === 700n;
    const until = Date.now() + 10_000;
    while (!refunded() && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
    expect(refunded()).toBe(true);
    raw.ws.close();
    await refusing;

    // B force-closes with the credit it refused, signed by the hub alone: the adjudicator takes it.
    const adj = new Adjudicator(w.adjudicator, w.chain.wallet(3));
    const registered = await adj.forceClose(credit).then(
      (r) => r.registration.payoutDevice,
      () => undefined,
    );
    // The property: B cannot be paid the 700 the hub refunded to A.
    expect(registered === undefined || registered <= 1_000n).toBe(true);
  });
});
