import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import {
  CHALLENGE,
  createFixture,
  decoded,
  deltas,
  ETH,
  expectRevert,
  makeLock,
  ONE_ETH,
  withLocks,
  type Fixture,
} from './fixture.js';

let fx: Fixture;
beforeAll(async () => {
  fx = await createFixture();
});
afterAll(() => fx.close());
beforeEach(() => fx.reset());

/** A channel force-closed with a pending lock (device 10, hub 10; the device locked 2 toward the hub). */
async function disputed() {
  const { id } = await fx.open(ETH, 10n * ONE_ETH, 10n * ONE_ETH);
  const l = makeLock(2n * ONE_ETH, 'device', 10n ** 10n, 1);
  const r = await fx.adj
    .connect(fx.hub)
    .forceClose(fx.sign(withLocks(fx.state(id, { version: 4n, paidByDevice: ONE_ETH }), [l])), { locks: [l.lock] });
  return { id, lock: l, deadline: r.forceClosed.deadline };
}

describe('cooperativeCloseDisputed', () => {
  it('closes at once with a final state both signed while a force close with locks is pending', async () => {
    const { id } = await disputed();
    // Off-chain the lock was claimed: the final state moves it into the counters and has no locks left.
    const final = fx.sign(fx.state(id, { version: 6n, paidByDevice: 3n * ONE_ETH, isFinal: true }));
    const [d, h] = await deltas(fx, ETH, [fx.device.address, fx.hub.address], async () => {
      const r = await fx.adj.connect(fx.relayer).cooperativeClose(final); // the binding falls back to the disputed entry point
      expect(r.closed).toMatchObject({ version: 6n, devicePayout: 7n * ONE_ETH, hubPayout: 13n * ONE_ETH });
    });
    expect([d, h]).toEqual([7n * ONE_ETH, 13n * ONE_ETH]);
    expect((await fx.adj.getChannel(id)).status).toBe('closed');
  });

  it('is still accepted after the deadline until someone settles', async () => {
    const { id } = await disputed();
    await fx.chain.increaseTime(2n * CHALLENGE);
    const final = fx.sign(fx.state(id, { version: 5n, paidByDevice: ONE_ETH, isFinal: true }));
    await fx.adj.connect(fx.relayer).cooperativeClose(final);
    expect((await fx.adj.getChannel(id)).status).toBe('closed');
  });

  it('refuses a final state with locks, a non-final state, a wrong registration and a wrong signature', async () => {
    const { id, lock } = await disputed();
    const reg = (await fx.adj.getChannel(id)).registration!;
    const raw = fx.adj.connect(fx.relayer).contract.getFunction('cooperativeCloseDisputed');
    const send = (r: typeof reg, s: ReturnType<typeof fx.sign>) =>
      decoded(raw.send(r, s.state, s.deviceSig, s.hubSig).then((t) => t.wait()));
    await expectRevert(
      send(reg, fx.sign(withLocks(fx.state(id, { version: 6n, isFinal: true }), [lock]))),
      'LocksPending',
    );
    await expectRevert(send(reg, fx.sign(fx.state(id, { version: 6n }))), 'NotFinal');
    await expectRevert(
      send({ ...reg, payoutHub: reg.payoutHub + 1n }, fx.sign(fx.state(id, { version: 6n, isFinal: true }))),
      'WrongRegistration',
    );
    await expectRevert(
      send(reg, fx.sign(fx.state(id, { version: 6n, isFinal: true }), { hub: fx.outsiderKey })),
      'WrongSigner',
    );
  });

  it('refuses a final state older than the registered one (a final the device signed before a later credit)', async () => {
    // The device signed a final state at version 5, the hub refused it (PENDING_CREDITS) and kept its signature, then
    // credited the device 2 at version 6, both signed. The device force-closes with version 6; countersigning the
    // refused final now must not take the credit back.
    const { id } = await fx.open(ETH, 10n * ONE_ETH, 10n * ONE_ETH);
    await fx.adj.connect(fx.device).forceClose(fx.sign(fx.state(id, { version: 6n, paidByHub: 2n * ONE_ETH })));
    const reg = (await fx.adj.getChannel(id)).registration!;
    const old = fx.sign(fx.state(id, { version: 5n, isFinal: true }));
    const raw = fx.adj.connect(fx.hub).contract.getFunction('cooperativeCloseDisputed');
    const r = await expectRevert(
      decoded(raw.send(reg, old.state, old.deviceSig, old.hubSig).then((t) => t.wait())),
      'StaleVersion',
    );
    expect([r['registered'], r['given']]).toEqual([6n, 5n]);
    expect((await fx.adj.getChannel(id)).status).toBe('closing');
    // A final state at the registered version or above still closes at once.
    const [d, h] = await deltas(fx, ETH, [fx.device.address, fx.hub.address], async () => {
      await fx.adj
        .connect(fx.relayer)
        .cooperativeClose(fx.sign(fx.state(id, { version: 7n, paidByHub: 2n * ONE_ETH, isFinal: true })));
    });
    expect([d, h]).toEqual([12n * ONE_ETH, 8n * ONE_ETH]);
  });

  it('is refused on an open channel (that is cooperativeClose)', async () => {
    const { id } = await fx.open(ETH, ONE_ETH, ONE_ETH);
    const final = fx.sign(fx.state(id, { version: 1n, isFinal: true }));
    const raw = fx.adj.connect(fx.relayer).contract.getFunction('cooperativeCloseDisputed');
    const reg = {
      token: ETH,
      device: fx.device.address,
      hub: fx.hub.address,
      depositDevice: ONE_ETH,
      depositHub: ONE_ETH,
      version: 0n,
      deadline: 0n,
      payoutDevice: 0n,
      payoutHub: 0n,
      locksRoot: `0x${'00'.repeat(32)}`,
    };
    expect(
      (await expectRevert(decoded(raw.send(reg, final.state, final.deviceSig, final.hubSig)), 'ChannelNotClosing'))[
        'status'
      ],
    ).toBe(1n);
  });
});
