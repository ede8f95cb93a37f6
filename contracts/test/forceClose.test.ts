import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { isTrickleError } from '@trickle/protocol/errors';
import { CHALLENGE, createFixture, decoded, ETH, expectRevert, ONE_ETH, USDT, type Fixture } from './fixture.js';

let fx: Fixture;
beforeAll(async () => {
  fx = await createFixture();
});
afterAll(() => fx.close());
beforeEach(() => fx.reset());

describe('forceClose', () => {
  it('registers a state signed by both and starts the challenge period', async () => {
    const { id } = await fx.open(fx.usdt.address, 10n * USDT, 10n * USDT);
    const state = fx.state(id, { version: 9n, paidByDevice: 4n * USDT, paidByHub: USDT, round: 2n });
    const r = await fx.adj.connect(fx.device).forceClose(fx.sign(state));
    const now = await fx.chain.latestTimestamp();
    expect(r.forceClosed).toMatchObject({
      channelId: id,
      version: 9n,
      paidByDevice: 4n * USDT,
      paidByHub: USDT,
      deadline: now + CHALLENGE,
      by: fx.device.address,
    });
    expect(await fx.adj.getChannel(id)).toMatchObject({
      status: 'closing',
      version: 9n,
      deadline: now + CHALLENGE,
      payoutDevice: 7n * USDT,
      payoutHub: 13n * USDT,
      depositDevice: 10n * USDT,
      depositHub: 10n * USDT,
    });
  });

  it('accepts the unsigned zero state from either participant (a channel that never moved)', async () => {
    const { id } = await fx.open(ETH, ONE_ETH, 2n * ONE_ETH);
    const r = await fx.adj.connect(fx.hub).forceClose({ state: fx.state(id) });
    expect(r.forceClosed).toMatchObject({ version: 0n, by: fx.hub.address });
    expect(await fx.adj.getChannel(id)).toMatchObject({ status: 'closing', payoutDevice: ONE_ETH, payoutHub: 2n * ONE_ETH });
  });

  it('does not treat a version-0 state with a round as the zero state', async () => {
    const { id } = await fx.open(ETH, ONE_ETH, 0n);
    // The typed wrapper refuses locally; the contract refuses the missing signatures too.
    await expect(fx.adj.connect(fx.hub).forceClose({ state: fx.state(id, { round: 1n }) })).rejects.toSatisfy((e) =>
      isTrickleError(e, 'INVALID_ARGUMENT'),
    );
    const raw = fx.adj.connect(fx.hub).contract.getFunction('forceClose');
    await expectRevert(decoded(raw.send(fx.state(id, { round: 1n }), '0x', '0x')), 'ECDSAInvalidSignatureLength');
  });

  it('is refused to anyone but the participants', async () => {
    const { id } = await fx.open(ETH, ONE_ETH, 0n);
    await expectRevert(fx.adj.connect(fx.relayer).forceClose(fx.sign(fx.state(id, { version: 1n }))), 'NotParticipant');
  });

  it('is refused when a force close is already pending (challenge instead) or the channel is closed', async () => {
    const { id } = await fx.open(ETH, ONE_ETH, 0n);
    await fx.adj.connect(fx.device).forceClose(fx.sign(fx.state(id, { version: 1n })));
    expect((await expectRevert(fx.adj.connect(fx.hub).forceClose(fx.sign(fx.state(id, { version: 2n }))), 'ChannelNotOpen'))['status']).toBe(2n);
  });

  it('refuses a state whose payout would exceed the deposits', async () => {
    const { id } = await fx.open(ETH, ONE_ETH, ONE_ETH);
    await expectRevert(
      fx.adj.connect(fx.hub).forceClose(fx.sign(fx.state(id, { version: 1n, paidByHub: ONE_ETH + 1n }))),
      'StateExceedsDeposits',
    );
  });

  it('refuses a state signed by only one party (the other slot signed by an outsider)', async () => {
    const { id } = await fx.open(ETH, ONE_ETH, 0n);
    const signed = fx.sign(fx.state(id, { version: 3n }), { hub: fx.outsiderKey });
    const args = await expectRevert(fx.adj.connect(fx.device).forceClose(signed), 'WrongSigner');
    expect(args).toMatchObject({ expected: fx.hub.address, recovered: fx.outsider.address });
  });
});
