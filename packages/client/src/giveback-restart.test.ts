import { describe, expect, it } from 'vitest';
import type { Message } from '@trickle/protocol/codec';
import { stateDigest } from '@trickle/protocol/eip712';
import { encodeLocks, hashPreimage, lockCommitment, type Lock } from '@trickle/protocol/locks';
import { nobleSigner, nobleVerifier, signatureToHex } from '@trickle/protocol/signer';
import type { Bytes32, SignedState, State } from '@trickle/protocol/types';
import { ClientChannel } from './channel.js';
import type { ChannelStore } from './channel-store.js';
import type { Connection } from './connection.js';
import { standaloneChannel, until } from './channel.fixture.js';

/**
 * A give-back the device signed and the hub left unanswered, over a restart (the engine's side:
 * packages/protocol/src/engine.giveback-restart.test.ts). The hub still holds the device's signature on the state
 * without the lock, and registered it returns the lock to the hub whatever is revealed on-chain. The record now keeps
 * the give-back (`givenBack`, written before it leaves), so a client started again on the store — whose hub shows the
 * old latest state and refuses the bump that would void the give-back — neither writes that lock's preimage to the
 * record (where the lock guard would reveal it on-chain) nor sends it; another lock's claim goes through as ever.
 */
const device = nobleSigner(`0x${'11'.repeat(32)}`);
const hub = nobleSigner(`0x${'22'.repeat(32)}`);
const stranger = nobleSigner(`0x${'33'.repeat(32)}`);
const PREIMAGE = `0x${'09'.repeat(32)}` as Bytes32;
const HASH = hashPreimage(PREIMAGE);
const PREIMAGE2 = `0x${'0a'.repeat(32)}` as Bytes32;
const HASH2 = hashPreimage(PREIMAGE2);

/** A claim's outcome: its refusal's code, 'resolved', or 'pending' (still waiting after a second). */
function outcome(p: Promise<unknown>): Promise<string> {
  return Promise.race([
    p.then(
      () => 'resolved',
      (e: { code?: string }) => e.code ?? 'error',
    ),
    new Promise<string>((r) => setTimeout(() => r('pending'), 1000)),
  ]);
}

/**
 * Two locks the hub pays the device (both signed), the first given back and never answered; then the device's process
 * dies and a new channel object starts on the same store. `hub` plays the hub after the restart: its sync answer is
 * the old latest state (both locks), and `onBump` answers the device's bump (an update that moves nothing).
 */
async function restartedAfterGiveBack(onBump: (m: Extract<Message, { t: 'update' }>, ch: ClientChannel) => void) {
  const first = await standaloneChannel({ device, hub: hub.address, funding: { device: 10_000n, hub: 10_000n } });
  const { ctx, store } = first;
  const expiry = BigInt(Math.floor(Date.now() / 1000) + 3600);
  const locks: Lock[] = [
    { amount: 700n, hash: HASH, expiry, payer: 'hub' },
    { amount: 300n, hash: HASH2, expiry, payer: 'hub' },
  ];
  let withLocks: SignedState | undefined;
  let prev: State = first.ch.latest.state;
  for (const [i, lock] of locks.entries()) {
    const state: State = { ...prev, version: prev.version + 1n, ...lockCommitment(locks.slice(0, i + 1)) };
    const hubSig = hub.signDigest(stateDigest(ctx.separator, state));
    first.ch.receive({
      t: 'update',
      id: 100 + i,
      state,
      sig: hubSig,
      lock: { amount: lock.amount, hash: lock.hash, expiry },
    } as never);
    const ack = await until(() => first.sent.find((m) => m.t === 'ack' && m.id === 100 + i));
    withLocks = { state, deviceSig: signatureToHex((ack as { sig: Uint8Array }).sig), hubSig: signatureToHex(hubSig) };
    prev = state;
  }
  expect(first.ch.locks).toHaveLength(2);
  void first.ch.giveBack(HASH).catch(() => undefined); // never answered
  const giveBack = await until(() => first.sent.find((m) => m.t === 'update' && m.unlock?.hash === HASH));
  const version = (giveBack as Extract<Message, { t: 'update' }>).state.version;

  // The process dies; a new one reads the store.
  const record = (await store.load(first.ch.channelId))!;
  expect(record.latest.state.version).toBe(withLocks!.state.version);
  const sent: Message[] = [];
  let nextId = 1;
  let ch!: ClientChannel;
  const connection = {
    ready: true,
    closed: false,
    id: () => nextId++,
    send: (m: Message) => {
      sent.push(m);
      if (m.t === 'update' && !m.unlock && !m.lock) setTimeout(() => onBump(m, ch));
      return true;
    },
    request: async (m: Message) => {
      sent.push(m);
      return {
        t: 'sync',
        id: (m as { id: number }).id,
        channelId: ctx.channelId,
        latest: withLocks!,
        locks: encodeLocks(locks),
      } as Message;
    },
  } as unknown as Connection;
  ch = new ClientChannel(record, {
    signer: device,
    verifier: nobleVerifier,
    store: store as ChannelStore,
    connection,
    maxInFlight: 8,
    yieldMs: 50,
    routeTimeoutMs: 1_000,
  });
  await ch.resync();
  return { ch, sent, store, version, record, withLocks: withLocks!, ctx };
}

describe('client: claim() after a restart, of a lock whose give-back the hub may still hold', () => {
  it('the hub refuses the bump: that lock’s preimage is neither stored nor sent; another lock is claimed', async () => {
    const { ch, sent, store, version, record, withLocks } = await restartedAfterGiveBack((m, c) =>
      c.receive({
        t: 'reject',
        id: m.id,
        channelId: c.channelId,
        code: 'INTERNAL',
        message: 'refused',
        latest: withLocks,
      } as never),
    );
    await until(() => (sent.some((m) => m.t === 'update' && !m.unlock) ? true : undefined)); // the bump left
    await new Promise((r) => setTimeout(r, 20)); // and was refused
    expect(ch.locks).toHaveLength(2);

    // Before the fix: the preimage was written to the record (the lock guard reveals what is there) and sent.
    expect(await outcome(ch.claim(HASH, PREIMAGE))).toBe('INVALID_ARGUMENT');
    expect(ch.record.preimages ?? []).toEqual([]);
    expect((await store.load(ch.channelId))!.preimages ?? []).toEqual([]);
    expect(sent.filter((m) => m.t === 'claim')).toEqual([]);

    // Another lock: stored, then shown.
    void ch.claim(HASH2, PREIMAGE2).catch(() => undefined);
    await until(() => sent.find((m) => m.t === 'claim' && m.unlock.hash === HASH2));
    expect(ch.record.preimages).toEqual([{ hash: HASH2, preimage: PREIMAGE2 }]);
    // The record the new process started from kept the give-back, and so does this one.
    expect(record.givenBack).toEqual([{ hash: HASH, version }]);
    expect(ch.record.givenBack).toEqual([{ hash: HASH, version }]);
  });

  it('the hub acks the bump with a signature that does not check: the preimage is not stored either', async () => {
    const { ch, sent, ctx } = await restartedAfterGiveBack((m, c) =>
      c.receive({
        t: 'ack',
        id: m.id,
        channelId: c.channelId,
        version: m.state.version,
        sig: stranger.signDigest(stateDigest(ctx.separator, m.state)),
      } as never),
    );
    await until(() => (sent.some((m) => m.t === 'update' && !m.unlock) ? true : undefined));
    await new Promise((r) => setTimeout(r, 20));
    // Before the fix the client judged the claim on the unchecked ack, above the give-back, and stored the preimage;
    // the engine, checking that ack first, then refused the claim.
    expect(await outcome(ch.claim(HASH, PREIMAGE))).toBe('INVALID_ARGUMENT');
    expect(ch.record.preimages ?? []).toEqual([]);
    expect(sent.filter((m) => m.t === 'claim')).toEqual([]);
  });

  it('an honest hub countersigns the bump: the give-back is void, the claim goes out and the record drops it', async () => {
    const { ch, sent, ctx } = await restartedAfterGiveBack((m, c) =>
      c.receive({
        t: 'ack',
        id: m.id,
        channelId: c.channelId,
        version: m.state.version,
        sig: hub.signDigest(stateDigest(ctx.separator, m.state)),
      } as never),
    );
    await until(() => (sent.some((m) => m.t === 'update' && !m.unlock) ? true : undefined));
    await new Promise((r) => setTimeout(r, 20));
    void ch.claim(HASH, PREIMAGE).catch(() => undefined);
    await until(() => sent.find((m) => m.t === 'claim' && m.unlock.hash === HASH));
    expect(ch.record.preimages).toEqual([{ hash: HASH, preimage: PREIMAGE }]);
    expect(ch.record.givenBack).toBeUndefined();
  });
});
