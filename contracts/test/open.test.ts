import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { channelIdOf } from '@trickle/protocol/eip712';
import type { Address } from '@trickle/protocol/types';
import {
  CHALLENGE,
  createFixture,
  decoded,
  deltas,
  ETH,
  expectRevert,
  ONE_ETH,
  USDT,
  type Fixture,
} from './fixture.js';

let fx: Fixture;
beforeAll(async () => {
  fx = await createFixture();
});
afterAll(() => fx.close());
beforeEach(() => fx.reset());

describe('open', () => {
  it('opens an ETH channel funded by the device and records it', async () => {
    const params = fx.params(ETH);
    const [adjDelta] = await deltas(fx, ETH, [fx.adj.address], async () => {
      const r = await fx.adj.connect(fx.device).open(params, 2n * ONE_ETH);
      expect(r.channelId).toBe(channelIdOf(params));
      expect(r.deposit).toBe(2n * ONE_ETH);
      const [ev] = r.events;
      expect(ev).toMatchObject({
        name: 'ChannelOpened',
        channelId: r.channelId,
        device: fx.device.address,
        hub: fx.hub.address,
        token: ETH,
        challengeDuration: CHALLENGE,
        opener: fx.device.address,
        deposit: 2n * ONE_ETH,
      });
    });
    expect(adjDelta).toBe(2n * ONE_ETH);
    const ch = await fx.adj.getChannel(channelIdOf(params));
    expect(ch).toMatchObject({
      status: 'open',
      device: fx.device.address,
      hub: fx.hub.address,
      token: ETH,
      challengeDuration: CHALLENGE,
      depositDevice: 2n * ONE_ETH,
      depositHub: 0n,
      version: 0n,
      deadline: 0n,
    });
  });

  it('opens a USDT-like channel funded by the hub, pulling the tokens', async () => {
    const params = fx.params(fx.usdt.address);
    const [hubDelta, adjDelta] = await deltas(fx, fx.usdt.address, [fx.hub.address, fx.adj.address], () =>
      fx.adj.connect(fx.hub).open(params, 50n * USDT),
    );
    expect(hubDelta).toBe(-50n * USDT);
    expect(adjDelta).toBe(50n * USDT);
    const ch = await fx.adj.getChannel(channelIdOf(params));
    expect(ch.depositHub).toBe(50n * USDT);
    expect(ch.depositDevice).toBe(0n);
  });

  it('accepts a zero deposit (the other side funds later)', async () => {
    const r = await fx.adj.connect(fx.hub).open(fx.params(ETH), 0n);
    expect((await fx.adj.getChannel(r.channelId)).status).toBe('open');
  });

  it('computes the same channel id as the protocol package and its own view', async () => {
    const params = fx.params(fx.usdt.address);
    expect(await fx.adj.channelIdOf(params)).toBe(channelIdOf(params));
  });

  it('refuses the same key in both slots', async () => {
    const params = fx.params(ETH, { hub: fx.device.address as Address });
    const args = await expectRevert(fx.adj.connect(fx.device).open(params, 1n), 'SameDeviceAndHub');
    expect(args['account']).toBe(fx.device.address);
  });

  it('refuses a zero-address participant', async () => {
    await expectRevert(fx.adj.connect(fx.device).open(fx.params(ETH, { hub: ETH }), 1n), 'ZeroParticipant');
  });

  it('refuses params for another chain or another adjudicator', async () => {
    await expectRevert(
      fx.adj.connect(fx.device).open(fx.params(ETH, { chainId: fx.chain.chainId + 1n }), 1n),
      'WrongDomain',
    );
    await expectRevert(
      fx.adj.connect(fx.device).open(fx.params(ETH, { adjudicator: fx.outsider.address as Address }), 1n),
      'WrongDomain',
    );
  });

  it('refuses an opener who is neither the device nor the hub', async () => {
    await expectRevert(fx.adj.connect(fx.outsider).open(fx.params(ETH), 1n), 'NotParticipant');
  });

  it('refuses a zero or absurd challenge duration', async () => {
    await expectRevert(
      fx.adj.connect(fx.device).open(fx.params(ETH, { challengeDuration: 0n }), 1n),
      'InvalidChallengeDuration',
    );
    const year = 365n * 24n * 3600n;
    await fx.adj.connect(fx.device).open(fx.params(ETH, { challengeDuration: year }), 1n);
    await expectRevert(
      fx.adj.connect(fx.device).open(fx.params(ETH, { challengeDuration: year + 1n }), 1n),
      'InvalidChallengeDuration',
    );
  });

  it('refuses an id already in use, by either party', async () => {
    const params = fx.params(ETH);
    await fx.adj.connect(fx.device).open(params, 1n);
    const args = await expectRevert(fx.adj.connect(fx.hub).open(params, 1n), 'ChannelExists');
    expect(args['status']).toBe(1n); // Open
  });

  it('never reopens a closed channel id', async () => {
    const { id, params } = await fx.open(ETH, ONE_ETH, 0n);
    await fx.adj.connect(fx.relayer).cooperativeClose(fx.sign(fx.state(id, { version: 1n, isFinal: true })));
    const args = await expectRevert(fx.adj.connect(fx.device).open(params, ONE_ETH), 'ChannelExists');
    expect(args['status']).toBe(3n); // Closed
  });

  it('refuses ETH that does not match the amount, and ETH sent to a token channel', async () => {
    // Through the raw contract: the typed wrapper always sends the right value.
    const c = fx.adj.connect(fx.device).contract;
    await expectRevert(decoded(c.getFunction('open').send(fx.params(ETH), 5n, { value: 4n })), 'ValueMismatch');
    await expectRevert(
      decoded(c.getFunction('open').send(fx.params(fx.usdt.address), 5n, { value: 5n })),
      'ValueMismatch',
    );
  });

  it('refuses a deposit above 2^96 - 1', async () => {
    const huge = 1n << 96n;
    await fx.chain.provider.send('hardhat_setBalance', [fx.device.address, `0x${(huge * 2n).toString(16)}`]);
    await expectRevert(fx.adj.connect(fx.device).open(fx.params(ETH), huge), 'DepositTooLarge');
    await fx.adj.connect(fx.device).open(fx.params(ETH), huge - 1n);
  });
});
