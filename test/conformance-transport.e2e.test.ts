/**
 * Conformance of the hub's transport and messages to protocol-spec §3 (transport and framing), §4 (messages) and §6
 * (error and close codes), checked frame by frame against a real hub on loopback.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashPreimage, decodeLocks } from '@trickle/protocol/locks';
import { nobleSigner } from '@trickle/protocol/signer';
import type { Message } from '@trickle/protocol/codec';
import type { Bytes32 } from '@trickle/protocol/types';
import { createWorld, type World } from './helpers/harness.js';
import { RawDevice } from './helpers/raw-device.js';
import { waitFor } from './helpers/wait.js';

describe('spec §4: the hub’s `sync` answer to `open`', () => {
  let w: World;
  beforeAll(async () => {
    w = await createWorld({ accounts: 5 });
    await w.startHub({ limits: { lockMarginSeconds: 1 } });
  });
  afterAll(async () => w?.close());

  it('carries the pending locks of the hub’s latest state (`locks`, absent only when none)', async () => {
    const payer = await w.client(2);
    const payee = await w.client(3);
    const ach = await payer.openChannel({ token: w.token, deposit: 1_000_000n, challengeDuration: 2n });
    const bch = await payee.openChannel({ token: w.token, deposit: 1_000_000n, challengeDuration: 2n });
    await w.hubDeposit(bch.channelId, 1_000_000n);
    const key = `0x${randomBytes(32).toString('hex')}` as Bytes32;
    const handle = ach.pay(700n, { to: payee.address, lock: { hash: hashPreimage(key), expiresIn: 600 } });
    await handle.locked;
    await waitFor(() => (w.hub!.channels.get(ach.channelId)?.locks?.length ?? 0) === 1);
    const params = ach.record.params;
    await payer.disconnect();
    // A device that lost its store announces its channel again: the hub's answer lets it adopt the state with its lock.
    const d = await RawDevice.connect(w.hub!.url, nobleSigner(w.chain.accounts[2]!), ['trickle.v3']);
    d.send({ t: 'open', id: 77, params });
    const sync = (await d.next((m) => m.t === 'sync' && m.id === 77, 10_000)) as Extract<Message, { t: 'sync' }>;
    expect(sync.latest?.state.lockedByDevice).toBe(700n);
    expect(sync.locks).toBeDefined();
    const locks = decodeLocks(sync.locks!);
    expect(locks).toEqual([...w.hub!.channels.get(ach.channelId)!.locks!]);
    expect(locks.map((l) => l.hash)).toEqual([hashPreimage(key)]);
    d.close();
  });

  it('leaves `locks` out when the hub’s latest state holds none', async () => {
    const c = await w.client(4);
    const ch = await c.openChannel({ token: w.token, deposit: 1_000n, challengeDuration: 2n });
    await ch.pay(1n);
    const params = ch.record.params;
    await c.disconnect();
    const d = await RawDevice.connect(w.hub!.url, nobleSigner(w.chain.accounts[4]!), ['trickle.v3']);
    d.send({ t: 'open', id: 78, params });
    const sync = (await d.next((m) => m.t === 'sync' && m.id === 78, 10_000)) as Extract<Message, { t: 'sync' }>;
    expect(sync.latest?.state.paidByDevice).toBe(1n);
    expect('locks' in sync).toBe(false);
    d.close();
  });
});

describe('spec §2 / §4: a claim past its lock’s expiry with a preimage of another hash', () => {
  let w: World;
  beforeAll(async () => {
    // A lock of seconds, to see it expire: the payee takes one that short (`minLockSeconds`).
    w = await createWorld({ accounts: 5, client: { minLockSeconds: 0 } });
    // One chain read per device (the channel's announcement spends it), refilled only after ~17 minutes.
    await w.startHub({ limits: { lockMarginSeconds: 1, chainReadsPerSecond: 0.001, chainReadBurst: 1 } });
  });
  afterAll(async () => w?.close());

  it('is refused BAD_PREIMAGE without a registry read: not RATE_LIMITED when the device’s chain reads are used up', async () => {
    const payer = await w.client(2);
    const payee = await w.client(3);
    const ach = await payer.openChannel({ token: w.token, deposit: 1_000_000n, challengeDuration: 2n });
    const bch = await payee.openChannel({ token: w.token, deposit: 1_000_000n, challengeDuration: 2n });
    await w.hubDeposit(bch.channelId, 1_000_000n);
    const key = `0x${randomBytes(32).toString('hex')}` as Bytes32;
    await ach.pay(700n, { to: payee.address, lock: { hash: hashPreimage(key), expiresIn: 8 } }).locked;
    // The hub's lock toward the payee, countersigned by the payee's client.
    await waitFor(() => (w.hub!.channels.get(bch.channelId)?.locks?.length ?? 0) === 1, 10_000);
    const lock = w.hub!.channels.get(bch.channelId)!.locks![0]!;
    expect(lock.payer).toBe('hub');
    await payee.disconnect();
    await waitFor(() => BigInt(Math.floor(Date.now() / 1000)) > lock.expiry, 15_000);
    const d = await RawDevice.connect(w.hub!.url, nobleSigner(w.chain.accounts[3]!), ['trickle.v3']);
    const wrong = `0x${randomBytes(32).toString('hex')}` as Bytes32;
    d.send({ t: 'claim', id: 9, channelId: bch.channelId, unlock: { hash: lock.hash, preimage: wrong } });
    expect(await d.next((m) => m.id === 9 && m.t === 'reject', 10_000)).toMatchObject({
      t: 'reject',
      code: 'BAD_PREIMAGE',
    });
    // The right preimage past the expiry asks the registry, which the used-up budget refuses.
    d.send({ t: 'claim', id: 10, channelId: bch.channelId, unlock: { hash: lock.hash, preimage: key } });
    expect(await d.next((m) => m.id === 10 && m.t === 'reject', 10_000)).toMatchObject({
      t: 'reject',
      code: 'RATE_LIMITED',
    });
    d.close();
  });
});
