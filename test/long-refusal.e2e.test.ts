import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TrickleError } from '@trickle/protocol/errors';
import { createWorld, type World } from './helpers/harness.js';

/**
 * A payee's credit guard refuses with a long message (user code writes it): the refusal and its code still reach the
 * hub, which refunds the payer at once.
 */
describe('a refusal with a long message', () => {
  let w: World;
  beforeAll(async () => {
    w = await createWorld({ accounts: 4 });
    await w.startHub();
  });
  afterAll(async () => w?.close());

  it('a guard refusing with a 600-character message: the payer is refunded with the payee’s refusal, not left waiting', async () => {
    const why = 'not this payment: '.padEnd(600, 'x');
    const payee = await w.client(3, {
      creditGuard: () => {
        throw new TrickleError('INVALID_ARGUMENT', why);
      },
    });
    const bch = await payee.openChannel({ token: w.token, deposit: 1_000n });
    await w.hubDeposit(bch.channelId, 1_000n);
    const payer = await w.client(2);
    const ach = await payer.openChannel({ token: w.token, deposit: 1_000n });
    const err = await ach.pay(10n, { to: payee.address }).then(
      () => undefined,
      (e: unknown) => e,
    );
    // Before encoders cut long texts, the payee's reject was refused by the hub as MALFORMED and the payer waited for
    // its receipt until TIMEOUT (30 s).
    expect(err).toMatchObject({ code: 'NO_ROUTE' });
    expect(ach.latest.state.paidByHub).toBe(10n); // refunded
    expect(bch.latest.state.paidByHub).toBe(0n);
  });
});
