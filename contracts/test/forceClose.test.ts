import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { isTrickleError } from '@trickle/protocol/errors';
import { ZERO_ROOT } from '@trickle/protocol/types';
import { compactSignature } from '@trickle/chain/actions/forceClose';

const ZERO_WORD = `0x${'00'.repeat(32)}`;
import { lockCommitment } from '@trickle/protocol/locks';
import {
  CHALLENGE,
  makeLock,
  withLocks,
  createFixture,
  decoded,
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

describe('forceClose', () => {
  it('registers a state signed by both and starts the challenge period', async () => {
    const { id } = await fx.open(fx.usdt.address, 10n * USDT, 10n * USDT);
    const state = fx.state(id, { version: 9n, paidByDevice: 4n * USDT, paidByHub: USDT, round: 2n });
    const r = await fx.adj.connect(fx.device).forceClose(fx.sign(state));
    const now = await fx.chain.latestTimestamp();
    const registration = {
      token: fx.usdt.address,
      device: fx.device.address,
      hub: fx.hub.address,
      depositDevice: 10n * USDT,
      depositHub: 10n * USDT,
      version: 9n,
      deadline: now + CHALLENGE,
      payoutDevice: 7n * USDT,
      payoutHub: 13n * USDT,
      locksRoot: ZERO_ROOT,
    };
    expect(r.forceClosed).toMatchObject({
      channelId: id,
      by: fx.device.address,
      version: 9n,
      deadline: now + CHALLENGE,
      token: fx.usdt.address,
      hub: fx.hub.address,
    });
    expect(r.registration).toEqual(registration);
    // Storage keeps only the registration's hash and block: the binding reads the event back and checks it.
    const view = (await fx.adj.contract.getFunction('getChannel').staticCall(id)) as {
      registrationHash: string;
      registeredBlock: bigint;
      device: string;
    };
    expect(view.registeredBlock).toBe(BigInt(r.blockNumber));
    expect(view.device).toBe(fx.device.address); // the device slot stays; the rest is in the event
    expect((await fx.adj.contract.getFunction('registrationHashOf').staticCall(id, registration)) as string).toBe(
      view.registrationHash,
    );
    expect(await fx.adj.getChannel(id)).toMatchObject({ status: 'closing', ...registration, registration });
  });

  it('accepts the unsigned zero state from either participant (a channel that never moved)', async () => {
    const { id } = await fx.open(ETH, ONE_ETH, 2n * ONE_ETH);
    const r = await fx.adj.connect(fx.hub).forceClose({ state: fx.state(id) });
    expect(r.forceClosed).toMatchObject({ version: 0n, by: fx.hub.address });
    expect(await fx.adj.getChannel(id)).toMatchObject({
      status: 'closing',
      payoutDevice: ONE_ETH,
      payoutHub: 2n * ONE_ETH,
    });
  });

  it('does not treat a version-0 state with a round as the zero state', async () => {
    const { id } = await fx.open(ETH, ONE_ETH, 0n);
    // The typed wrapper refuses locally; the contract refuses the missing signatures too.
    await expect(fx.adj.connect(fx.hub).forceClose({ state: fx.state(id, { round: 1n }) })).rejects.toSatisfy((e) =>
      isTrickleError(e, 'INVALID_ARGUMENT'),
    );
    const raw = fx.adj.connect(fx.hub).contract.getFunction('forceClose');
    await expectRevert(decoded(raw.send(fx.state(id, { round: 1n }), ZERO_WORD, ZERO_WORD)), 'ECDSAInvalidSignature');
  });

  it('is refused to anyone but the participants', async () => {
    const { id } = await fx.open(ETH, ONE_ETH, 0n);
    await expectRevert(fx.adj.connect(fx.relayer).forceClose(fx.sign(fx.state(id, { version: 1n }))), 'NotParticipant');
  });

  it('is refused when a force close is already pending (challenge instead) or the channel is closed', async () => {
    const { id } = await fx.open(ETH, ONE_ETH, 0n);
    await fx.adj.connect(fx.device).forceClose(fx.sign(fx.state(id, { version: 1n })));
    expect(
      (await expectRevert(fx.adj.connect(fx.hub).forceClose(fx.sign(fx.state(id, { version: 2n }))), 'ChannelNotOpen'))[
        'status'
      ],
    ).toBe(2n);
  });

  it('refuses a state whose payout would exceed the deposits', async () => {
    const { id } = await fx.open(ETH, ONE_ETH, ONE_ETH);
    await expectRevert(
      fx.adj.connect(fx.hub).forceClose(fx.sign(fx.state(id, { version: 1n, paidByHub: ONE_ETH + 1n }))),
      'StateExceedsDeposits',
    );
  });

  it("takes the transaction as the caller's consent and checks only the other party's signature", async () => {
    const { id } = await fx.open(ETH, ONE_ETH, ONE_ETH);
    const signed = fx.sign(fx.state(id, { version: 3n, paidByDevice: 5n }));
    const raw = (w: typeof fx.hub) => fx.adj.connect(w).contract.getFunction('forceClose');
    // The device sending its own signature instead of the hub's, or no signature at all: refused.
    const own = await expectRevert(
      decoded(raw(fx.device).send(signed.state, ...compactSignature(signed.deviceSig!))),
      'WrongSigner',
    );
    expect(own).toMatchObject({ expected: fx.hub.address, recovered: fx.device.address });
    await expectRevert(decoded(raw(fx.hub).send(signed.state, ZERO_WORD, ZERO_WORD)), 'ECDSAInvalidSignature');
    // A third party holding both signatures: refused.
    await expectRevert(
      decoded(raw(fx.relayer).send(signed.state, ...compactSignature(signed.hubSig!))),
      'NotParticipant',
    );
    // The hub with the device's signature: registered.
    await decoded((await raw(fx.hub).send(signed.state, ...compactSignature(signed.deviceSig!))).wait());
    expect(await fx.adj.getChannel(id)).toMatchObject({ status: 'closing', version: 3n });
  });

  it('refuses a state signed by only one party (the other slot signed by an outsider)', async () => {
    const { id } = await fx.open(ETH, ONE_ETH, 0n);
    const signed = fx.sign(fx.state(id, { version: 3n }), { hub: fx.outsiderKey });
    const args = await expectRevert(fx.adj.connect(fx.device).forceClose(signed), 'WrongSigner');
    expect(args).toMatchObject({ expected: fx.hub.address, recovered: fx.outsider.address });
  });
});

describe('forceClose with locks', () => {
  it('registers the lock root and escrows each pending lock from its payer', async () => {
    const { id } = await fx.open(ETH, 10n * ONE_ETH, 10n * ONE_ETH);
    const locks = [makeLock(3n * ONE_ETH, 'device', 10_000n, 1), makeLock(ONE_ETH, 'hub', 10_000n, 2)];
    const state = withLocks(fx.state(id, { version: 2n, paidByDevice: ONE_ETH }), locks);
    const r = await fx.adj.connect(fx.hub).forceClose(fx.sign(state), { locks: locks.map((l) => l.lock) });
    expect(r.registration).toMatchObject({
      locksRoot: state.locksRoot,
      payoutDevice: 6n * ONE_ETH,
      payoutHub: 10n * ONE_ETH,
    });
    expect(await fx.adj.locksRoot(locks.map((l) => l.lock))).toBe(state.locksRoot);
  });

  it('refuses a lock list that does not match the signed commitment', async () => {
    const { id } = await fx.open(ETH, 10n * ONE_ETH, 10n * ONE_ETH);
    const a = makeLock(ONE_ETH, 'device', 10_000n, 3);
    const b = makeLock(ONE_ETH, 'hub', 10_000n, 4);
    const signed = fx.sign(withLocks(fx.state(id, { version: 2n }), [a, b]));
    for (const wrong of [[], [a.lock], [b.lock, a.lock], [a.lock, { ...b.lock, expiry: 10_001n }]]) {
      await expectRevert(fx.adj.connect(fx.device).forceClose(signed, { locks: wrong }), 'WrongLocks');
    }
    // A list that matches the root but not the signed totals.
    const lying = fx.sign({ ...fx.state(id, { version: 2n }), ...lockCommitment([a.lock, b.lock]), lockedByHub: 0n });
    await expectRevert(fx.adj.connect(fx.device).forceClose(lying, { locks: [a.lock, b.lock] }), 'WrongLocks');
    // Locks without a root in the state.
    await expectRevert(
      fx.adj.connect(fx.device).forceClose(fx.sign(fx.state(id, { version: 2n })), { locks: [a.lock] }),
      'WrongLocks',
    );
  });

  it('refuses a state whose payer cannot afford its locks', async () => {
    const { id } = await fx.open(ETH, ONE_ETH, ONE_ETH);
    const big = makeLock(ONE_ETH, 'device', 10_000n, 5);
    const state = withLocks(fx.state(id, { version: 1n, paidByDevice: 1n }), [big]);
    await expectRevert(
      fx.adj.connect(fx.hub).forceClose(fx.sign(state), { locks: [big.lock] }),
      'StateExceedsDeposits',
    );
  });

  it('refuses more than MAX_LOCKS locks', async () => {
    const { id } = await fx.open(ETH, 100n * ONE_ETH, 0n);
    const max = (await fx.adj.contract.getFunction('MAX_LOCKS').staticCall()) as bigint;
    const locks = Array.from({ length: Number(max) + 1 }, (_, i) => makeLock(1n, 'device', 10_000n, i + 1));
    const state = withLocks(fx.state(id, { version: 1n }), locks);
    const args = await expectRevert(
      fx.adj.connect(fx.hub).forceClose(fx.sign(state), { locks: locks.map((l) => l.lock) }),
      'TooManyLocks',
    );
    expect(args['count']).toBe(max + 1n);
  });
});
