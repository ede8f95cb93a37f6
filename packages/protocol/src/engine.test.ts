/**
 * Unit tests of the channel engine with two real parties: secp256k1 keys (@noble/secp256k1), real EIP-712 digests
 * (`stateDigest` under the channel's domain), an {@link EngineCrypto} built from a Signer and the noble verifier.
 * No sockets, no processes: messages are carried by hand from one party's `send` effects to the other's events,
 * the way the shells do (decode → step → persist → act).
 */
import { describe, expect, it } from 'vitest';
import { channelContext, checkFullySigned, sameState, zeroState } from './channel.js';
import { stateDigest } from './eip712.js';
import {
  DEFAULT_ENGINE_CONFIG,
  availableToPay,
  challengeWith,
  createEngineChannel,
  newestCandidate,
  outstandingCredit,
  settledBalance,
  step,
  storeFailure,
  syncFrame,
  waitingRefs,
  type EngineChannel,
  type EngineCrypto,
  type EngineEffect,
  type EngineEvent,
  type EngineRestore,
  type PeerUpdate,
  type StepResult,
} from './engine.js';
import { deviceRules } from './engine-device.js';
import { hubRules } from './engine-hub.js';
import { nobleSigner, nobleVerifier, signatureFromHex, signatureToHex, type Signer } from './signer.js';
import { MAX_UINT256, type Bytes32, type Funding, type Role, type SignedState, type State } from './types.js';
import type { Message, RouteInstruction } from './codec.js';
import { hashPreimage, lockCommitment, type Lock } from './locks.js';
import type { ErrorCode } from './errors.js';
import { deviceKey, hubKey, params } from './engine.fixture.js';

/** A channel built with its role's rules, as a hub or device shell builds it. */
const createChannel = (r: EngineRestore): EngineChannel =>
  createEngineChannel(r, r.role === 'hub' ? hubRules : deviceRules);

const malloryKey = nobleSigner('0x' + '33'.repeat(32));
const payee = nobleSigner('0x' + '44'.repeat(32)).address;
const FUNDING: Funding = { device: 1_000_000n, hub: 1_000_000n };
const ctx = channelContext(params, FUNDING);
const Z = zeroState(ctx.channelId);
const MAX_UINT96 = (1n << 96n) - 1n;
const id32 = (n: number) => ('0x' + n.toString(16).padStart(64, '0')) as Bytes32;

/** A real EngineCrypto over one key, counting its signatures and recoveries. */
interface CountingCrypto extends EngineCrypto {
  signs: number;
  recovers: number;
}
function cryptoOf(signer: Signer): CountingCrypto {
  const c: CountingCrypto = {
    signs: 0,
    recovers: 0,
    digest: (s) => stateDigest(ctx.separator, s),
    sign: (d) => {
      c.signs++;
      return signer.signDigest(d);
    },
    recover: (d, sig) => {
      c.recovers++;
      return nobleVerifier.recoverAddress(d, sig);
    },
  };
  return c;
}
const cryptos: Record<Role, CountingCrypto> = { device: cryptoOf(deviceKey), hub: cryptoOf(hubKey) };

const NOW = 1_000_000;
const run = (ch: EngineChannel, ev: EngineEvent, now = NOW): StepResult =>
  step(ch, ev, { crypto: cryptos[ch.role], now });

function make(role: Role, o: Partial<EngineRestore> = {}): EngineChannel {
  return createChannel({ role, ctx, latest: { state: Z }, signedVersion: 0n, needsSync: false, ...o });
}
/** A party whose peer is connected (a device that has already resynced). */
const online = (role: Role, o: Partial<EngineRestore> = {}): EngineChannel =>
  run(make(role, o), { type: 'connected' }).channel;

const sent = (r: StepResult): Message[] => r.effects.flatMap((e) => (e.type === 'send' ? [e.msg] : []));
function only<T extends EngineEffect['type']>(r: StepResult, type: T): Extract<EngineEffect, { type: T }>[] {
  return r.effects.filter((e): e is Extract<EngineEffect, { type: T }> => e.type === type);
}
const persistOf = (r: StepResult) => (r.effects[0]?.type === 'persist' ? r.effects[0] : undefined);
function frame<T extends Message['t']>(r: StepResult, t: T, k = 0): Extract<Message, { t: T }> {
  const m = sent(r).filter((x) => x.t === t)[k];
  if (!m)
    throw new Error(
      `no ${t} frame in ${JSON.stringify(r.effects.map((e) => e.type + (e.type === 'send' ? ':' + e.msg.t : '')))}`,
    );
  return m as Extract<Message, { t: T }>;
}
const refusedCode = (r: StepResult): ErrorCode | undefined => only(r, 'refused')[0]?.error.code;
const resolvedRefs = (r: StepResult) => only(r, 'resolve').map((e) => e.ref);
const rejected = (r: StepResult) => only(r, 'reject').map((e) => [e.ref, e.error.code] as const);

/** A wire message as the receiving shell turns it into an engine event. */
function toEvent(msg: Message, to: Role): EngineEvent {
  switch (msg.t) {
    case 'update':
      return to === 'hub'
        ? {
            type: 'peer-updates',
            updates: [{ id: msg.id, state: msg.state, sig: msg.sig, route: msg.route, escrowFor: msg.paymentId }],
          }
        : { type: 'peer-updates', updates: [{ id: msg.id, state: msg.state, sig: msg.sig, paymentId: msg.paymentId }] };
    case 'ack':
      return { type: 'peer-ack', id: msg.id, version: msg.version, sig: msg.sig };
    case 'reject':
      return { type: 'peer-reject', id: msg.id, code: msg.code, message: msg.message };
    case 'close':
      return { type: 'peer-close', id: msg.id, state: msg.state, sig: msg.sig, owes: false };
    case 'sync':
      return { type: 'peer-sync', id: msg.id, latest: msg.latest };
    default:
      throw new Error(`unexpected ${msg.t}`);
  }
}
const deliver = (ch: EngineChannel, msg: Message, now = NOW): StepResult => run(ch, toEvent(msg, ch.role), now);
const pay = (
  ref: number,
  amount: bigint,
  extra: { route?: RouteInstruction; escrowFor?: Bytes32 } = {},
): EngineEvent => ({ type: 'pay', pays: [{ ref, amount, ...extra }] });
const signAs = (signer: Signer, s: State) => signer.signDigest(stateDigest(ctx.separator, s));

function expectFullySigned(s: SignedState) {
  expect(() => checkFullySigned(ctx, s, nobleVerifier)).not.toThrow();
}

// ---------- the basic exchanges ----------

describe('device pay → hub countersign → ack', () => {
  it('signs, verifies and countersigns with real keys; the payment resolves with the fully signed state', () => {
    const dev0 = online('device');
    const hub0 = online('hub');
    const r1 = run(dev0, pay(1, 100n));
    // The first state above the device's reserved version ceiling makes a new ceiling durable before it leaves
    // (one gated write per `reserveVersions` states); the ones under it are written behind.
    expect(persistOf(r1)).toEqual({ type: 'persist', gate: true, writes: [] });
    expect(r1.channel.reservedVersion).toBe(1024n);
    expect(persistOf(run(r1.channel, pay(9, 1n)))).toEqual({ type: 'persist', gate: false, writes: [] });
    const up = frame(r1, 'update');
    expect(up.state).toMatchObject({ version: 1n, paidByDevice: 100n, paidByHub: 0n });
    expect(nobleVerifier.recoverAddress(stateDigest(ctx.separator, up.state), up.sig)).toBe(deviceKey.address);
    expect(r1.channel.signedVersion).toBe(1n);
    expect(resolvedRefs(r1)).toEqual([]);

    const r2 = deliver(hub0, up);
    expect(persistOf(r2)).toEqual({ type: 'persist', gate: true, writes: [] });
    expectFullySigned(r2.channel.latest);
    const ack = frame(r2, 'ack');
    expect(ack.version).toBe(1n);
    expect(nobleVerifier.recoverAddress(stateDigest(ctx.separator, up.state), ack.sig)).toBe(hubKey.address);

    const recovers = cryptos.device.recovers;
    const r3 = deliver(r1.channel, ack);
    expect(persistOf(r3)?.gate).toBe(false);
    const [res] = only(r3, 'resolve');
    expect(res).toMatchObject({ ref: 1, amount: 100n });
    expectFullySigned(res!.state);
    // The hub's signature on a state that only pays it is checked lazily: the state is `unchecked` until another event
    // than a pay or an ack is stepped (the shell steps a tick before it writes behind); `latest` stays the last checked
    // state until then.
    expect(cryptos.device.recovers).toBe(recovers);
    expect(r3.channel.latest).toBe(r1.channel.latest);
    expect(sameState(r3.channel.unchecked!.state, r2.channel.latest.state)).toBe(true);
    const r4 = run(r3.channel, { type: 'tick' });
    expect(cryptos.device.recovers).toBe(recovers + 2); // both signatures of the state, once
    expect(persistOf(r4)).toEqual({ type: 'persist', gate: false, writes: [] });
    expect(r4.channel.latest).toBe(r3.channel.unchecked);
    expect(r4.channel.unchecked).toBeUndefined();
    expect(r3.channel.proposals).toEqual([]);
    expect(settledBalance(r4.channel)).toBe(FUNDING.device - 100n);
    expect(settledBalance(r2.channel)).toBe(FUNDING.hub + 100n);
  });

  it('the same events give the same signatures (RFC 6979: a replay signs the same bytes)', () => {
    const a = run(online('device'), pay(1, 77n));
    const b = run(online('device'), pay(1, 77n));
    expect(frame(a, 'update').sig).toEqual(frame(b, 'update').sig);
  });

  it('hub credit → device countersigns (durable first) → ack resolves the credit', () => {
    const hub0 = online('hub');
    const r1 = run(hub0, { type: 'credit', ref: 5, amount: 40n, paymentId: id32(9) });
    expect(persistOf(r1)?.gate).toBe(true); // the hub never signs two states at one version, across restarts too
    expect(outstandingCredit(r1.channel)?.state.paidByHub).toBe(40n);
    const up = frame(r1, 'update');
    expect(up.paymentId).toBe(id32(9));
    const r2 = deliver(online('device'), up);
    expect(persistOf(r2)?.gate).toBe(true); // the device receives money: durable before it countersigns
    expect(only(r2, 'incoming')).toEqual([expect.objectContaining({ amount: 40n, paymentId: id32(9) })]);
    const r3 = deliver(r1.channel, frame(r2, 'ack'));
    expect(persistOf(r3)).toEqual({
      type: 'persist',
      gate: true,
      writes: [{ kind: 'credited', paymentId: id32(9), version: 1n }],
    });
    expect(only(r3, 'resolve')).toEqual([expect.objectContaining({ ref: 5, amount: 40n, paymentId: id32(9) })]);
    expectFullySigned(r3.channel.latest);
    expect(outstandingCredit(r3.channel)).toBeUndefined();
  });
});

describe('coalescing and pipelining', () => {
  it('pay() calls made while the window is full coalesce into the next state', () => {
    const hub = online('hub');
    let dev = online('device', { config: { maxInFlight: 1 } });
    const r1 = run(dev, pay(1, 10n));
    dev = r1.channel;
    const r2 = run(dev, pay(2, 20n));
    const r3 = run(r2.channel, pay(3, 30n));
    expect(sent(r2)).toEqual([]);
    expect(sent(r3)).toEqual([]);
    expect(r3.channel.queue.map((q) => q.ref)).toEqual([2, 3]);
    expect(availableToPay(r3.channel)).toBe(FUNDING.device - 60n);
    const h1 = deliver(hub, frame(r1, 'update'));
    const r4 = deliver(r3.channel, frame(h1, 'ack'));
    expect(resolvedRefs(r4)).toEqual([1]);
    // One state for both queued payments.
    const up2 = frame(r4, 'update');
    expect(sent(r4).filter((m) => m.t === 'update')).toHaveLength(1);
    expect(up2.state).toMatchObject({ version: 2n, paidByDevice: 60n });
    const h2 = deliver(h1.channel, up2);
    const r5 = deliver(r4.channel, frame(h2, 'ack'));
    expect(resolvedRefs(r5)).toEqual([2, 3]);
    expect(only(r5, 'resolve').every((e) => e.state.state.version === 2n)).toBe(true);
  });

  it('several pays in one event are one state', () => {
    const r = run(online('device'), {
      type: 'pay',
      pays: [
        { ref: 1, amount: 1n },
        { ref: 2, amount: 2n },
        { ref: 3, amount: 3n },
      ],
    });
    expect(sent(r)).toHaveLength(1);
    expect(frame(r, 'update').state.paidByDevice).toBe(6n);
  });

  it('the window holds maxInFlight proposals; the hub checks a backlog in full and verifies and signs only the newest', () => {
    let dev = online('device', { config: { maxInFlight: 3 } });
    const ups: Message[] = [];
    for (let i = 1; i <= 5; i++) {
      const r = run(dev, pay(i, BigInt(i)));
      dev = r.channel;
      ups.push(...sent(r));
    }
    expect(ups.map((m) => (m as Extract<Message, { t: 'update' }>).state.version)).toEqual([1n, 2n, 3n]);
    expect(dev.proposals).toHaveLength(3);
    expect(dev.queue.map((q) => q.ref)).toEqual([4, 5]);
    const updates: PeerUpdate[] = ups.map(
      (m) => (toEvent(m, 'hub') as Extract<EngineEvent, { type: 'peer-updates' }>).updates[0]!,
    );
    const hub = online('hub');
    expect(newestCandidate(hub, updates)).toBe(2);
    const before = { ...cryptos.hub };
    const h = run(hub, { type: 'peer-updates', updates });
    expect(cryptos.hub.recovers - before.recovers).toBe(1);
    expect(cryptos.hub.signs - before.signs).toBe(1);
    expect(sent(h).map((m) => m.t)).toEqual(['ack']);
    expect(frame(h, 'ack').version).toBe(3n);
    expect(h.channel.latest.state.paidByDevice).toBe(6n);
    // One cumulative ack resolves the three, then the two queued go out as one state.
    const r = deliver(dev, frame(h, 'ack'));
    expect(resolvedRefs(r)).toEqual([1, 2, 3]);
    expect(frame(r, 'update').state).toMatchObject({ version: 4n, paidByDevice: 15n });
  });

  it('a routed payment or an escrow goes alone and is a barrier: nothing is pipelined on top of it', () => {
    const route: RouteInstruction = { to: payee, amount: 5n, paymentId: id32(1) };
    const r = run(online('device'), {
      type: 'pay',
      pays: [
        { ref: 1, amount: 1n },
        { ref: 2, amount: 5n, route },
        { ref: 3, amount: 2n },
      ],
    });
    expect(sent(r).map((m) => (m as Extract<Message, { t: 'update' }>).state.paidByDevice)).toEqual([1n, 6n]);
    expect(frame(r, 'update', 1).route).toEqual(route);
    expect(r.channel.queue.map((q) => q.ref)).toEqual([3]);
  });

  it('a backlog with a bad update in the middle: the bad one is refused, the newest good one accepted', () => {
    let dev = online('device');
    const ups: PeerUpdate[] = [];
    for (let i = 1; i <= 3; i++) {
      const r = run(dev, pay(i, 10n));
      dev = r.channel;
      const m = frame(r, 'update');
      ups.push({ id: m.id, state: m.state, sig: m.sig });
    }
    // The newest is signed by someone else: refused, and the one before it is verified instead.
    const forged = { ...ups[2]!, sig: signAs(malloryKey, ups[2]!.state) };
    const h = run(online('hub'), { type: 'peer-updates', updates: [ups[0]!, ups[1]!, forged] });
    expect(only(h, 'refused').map((e) => e.error.code)).toEqual(['BAD_SIGNATURE']);
    expect(frame(h, 'reject').id).toBe(forged.id);
    expect(frame(h, 'ack').version).toBe(2n);
    expect(h.channel.latest.state.version).toBe(2n);
  });
});

describe('crossing proposals from both sides', () => {
  const yieldMs = DEFAULT_ENGINE_CONFIG.yieldMs;

  it('a device update and a hub credit at one version: both refused, the hub proposes again, the device pays on top', () => {
    let dev = online('device');
    let hub = online('hub');
    const d1 = run(dev, pay(1, 100n));
    dev = d1.channel;
    const h1 = run(hub, { type: 'credit', ref: 9, amount: 50n });
    hub = h1.channel;
    expect(frame(d1, 'update').state.version).toBe(1n);
    expect(frame(h1, 'update').state.version).toBe(1n);

    const dx = deliver(dev, frame(h1, 'update'));
    expect(refusedCode(dx)).toBe('STALE_VERSION');
    expect(dx.channel.yieldUntil).toBe(NOW + yieldMs); // new proposals wait so the hub can re-propose
    dev = dx.channel;
    const hx = deliver(hub, frame(d1, 'update'));
    expect(refusedCode(hx)).toBe('STALE_VERSION');
    expect(hx.channel).toBe(hub);

    // The hub re-proposes its credit on top (v2); the device queues its payment again and holds it.
    const h2 = deliver(hub, frame(dx, 'reject'));
    hub = h2.channel;
    const up2 = frame(h2, 'update');
    expect(up2.state).toMatchObject({ version: 2n, paidByHub: 50n, paidByDevice: 0n });
    expect(hub.proposals[0]!.credit!.attempts).toBe(1);
    const d2 = deliver(dev, frame(hx, 'reject'), NOW + 1);
    dev = d2.channel;
    expect(sent(d2)).toEqual([]);
    expect(only(d2, 'timer')).toEqual([{ type: 'timer', at: NOW + yieldMs }]);
    expect(rejected(d2)).toEqual([]);
    expect(dev.queue.map((q) => q.ref)).toEqual([1]);

    // The device countersigns the credit and its payment follows at v3, on top of it.
    const d3 = deliver(dev, up2, NOW + 2);
    dev = d3.channel;
    expect(only(d3, 'incoming')[0]!.amount).toBe(50n);
    const up3 = frame(d3, 'update');
    expect(up3.state).toMatchObject({ version: 3n, paidByDevice: 100n, paidByHub: 50n });
    const h3 = deliver(hub, frame(d3, 'ack'));
    expect(resolvedRefs(h3)).toEqual([9]);
    const h4 = deliver(h3.channel, up3);
    const d4 = deliver(dev, frame(h4, 'ack'));
    expect(resolvedRefs(d4)).toEqual([1]);
    expect(sameState(run(d4.channel, { type: 'tick' }).channel.latest.state, h4.channel.latest.state)).toBe(true);
  });

  it('when the hub does not re-propose, the held payment goes out once the yield has passed', () => {
    let dev = online('device');
    const d1 = run(dev, pay(1, 100n));
    const h1 = run(online('hub'), { type: 'credit', ref: 9, amount: 50n });
    dev = deliver(d1.channel, frame(h1, 'update')).channel;
    const hx = deliver(h1.channel, frame(d1, 'update'));
    dev = deliver(dev, frame(hx, 'reject')).channel;
    expect(sent(run(dev, { type: 'tick' }, NOW + yieldMs - 1))).toEqual([]);
    const t = run(dev, { type: 'tick' }, NOW + yieldMs);
    expect(frame(t, 'update').state).toMatchObject({ version: 2n, paidByDevice: 100n });
  });

  it('device states pipelined past the crossing win: the hub takes the newer one and re-proposes its credit on top', () => {
    let dev = online('device');
    const d1 = run(dev, pay(1, 10n));
    const d2 = run(d1.channel, pay(2, 20n));
    dev = d2.channel;
    const h1 = run(online('hub'), { type: 'credit', ref: 9, amount: 5n, paymentId: id32(3) });
    const backlog = [...sent(d1), ...sent(d2)].map(
      (m) => (toEvent(m, 'hub') as Extract<EngineEvent, { type: 'peer-updates' }>).updates[0]!,
    );
    const h2 = run(h1.channel, { type: 'peer-updates', updates: backlog });
    // v1 is refused (the hub signed its credit at v1), v2 is countersigned, the credit goes again at v3.
    expect(sent(h2).map((m) => m.t)).toEqual(['reject', 'ack', 'update']);
    expect(frame(h2, 'ack').version).toBe(2n);
    expect(frame(h2, 'update').state).toMatchObject({ version: 3n, paidByDevice: 30n, paidByHub: 5n });
    // The device refuses the crossing credit, then hears: v1 refused, v2 acked, the credit at v3.
    const dx = deliver(dev, frame(h1, 'update'));
    expect(refusedCode(dx)).toBe('STALE_VERSION');
    const dr = deliver(dx.channel, frame(h2, 'reject'));
    expect(rejected(dr)).toEqual([]); // v1's payment rides on v2, which holds it too
    expect(dr.channel.proposals.map((p) => p.pays.map((w) => w.ref))).toEqual([[1, 2]]);
    const da = deliver(dr.channel, frame(h2, 'ack'));
    expect(resolvedRefs(da)).toEqual([1, 2]);
    const dc = deliver(da.channel, frame(h2, 'update'));
    expect(only(dc, 'incoming')[0]).toMatchObject({ amount: 5n, paymentId: id32(3) });
    // The device's refusal of the old credit no longer matches anything at the hub.
    const hr = deliver(h2.channel, frame(dx, 'reject'));
    expect(hr.channel).toBe(h2.channel);
    const hc = deliver(h2.channel, frame(dc, 'ack'));
    expect(resolvedRefs(hc)).toEqual([9]);
    expect(hc.channel.latest.state).toMatchObject({ version: 3n, paidByDevice: 30n, paidByHub: 5n });
  });

  it('a credit refused on a version conflict more than maxCreditRetries times fails its caller', () => {
    let hub = online('hub', { config: { maxCreditRetries: 1 } });
    let r = run(hub, { type: 'credit', ref: 9, amount: 5n });
    hub = r.channel;
    r = run(hub, { type: 'peer-reject', id: frame(r, 'update').id, code: 'STALE_VERSION' });
    expect(frame(r, 'update').state.version).toBe(2n);
    r = run(r.channel, { type: 'peer-reject', id: frame(r, 'update').id, code: 'EQUIVOCATION' });
    // The device holds both hub-signed credits (v1, v2) it did not countersign: the caller is answered once a state
    // both signed goes above them — the hub proposes the latest counters at v3 — not while it could register one.
    expect(rejected(r)).toEqual([]);
    expect(r.channel.unsettled?.map((u) => u.state.version)).toEqual([1n, 2n]);
    expect(frame(r, 'update').state).toMatchObject({ version: 3n, paidByHub: 0n });
    const dev = online('device');
    const a = deliver(dev, frame(r, 'update'));
    const h = deliver(r.channel, frame(a, 'ack'));
    expect(rejected(h)).toEqual([[9, 'EQUIVOCATION']]);
    expect(h.channel.unsettled).toBeUndefined();
    expect(h.channel.proposals).toEqual([]);
  });

  it('a credit refused on the merits fails its caller once the device countersigned a state above it', () => {
    const r0 = run(online('hub'), { type: 'credit', ref: 9, amount: 5n });
    const r = run(r0.channel, { type: 'peer-reject', id: frame(r0, 'update').id, code: 'BAD_ROUND', message: 'no' });
    expect(rejected(r)).toEqual([]);
    expect(persistOf(r)?.gate).toBe(true); // the outstanding proposal leaves the record, the unsettled one enters it
    const credit = frame(r0, 'update');
    expect(r.channel.unsettled).toEqual([
      { state: credit.state, hubSig: signatureToHex(credit.sig), paymentId: undefined, round: undefined },
    ]);
    const up = frame(r, 'update'); // v2: nothing moves
    expect(up.state).toMatchObject({ version: 2n, paidByHub: 0n, paidByDevice: 0n });
    const dev = deliver(online('device'), up);
    expect(only(dev, 'incoming')).toEqual([]); // no money arrived
    const h = deliver(r.channel, frame(dev, 'ack'));
    expect(rejected(h)).toEqual([[9, 'BAD_ROUND']]);
    expect(h.channel.unsettled).toBeUndefined();
  });
});

describe('a credit the device refused but may hold (the hub signed it first)', () => {
  /** The hub credited 5 (v1, payment id 3) and the device refused it: the caller waits, a v2 of nothing is proposed. */
  function refused() {
    const r0 = run(online('hub'), { type: 'credit', ref: 9, amount: 5n, paymentId: id32(3) });
    const credit = frame(r0, 'update');
    const r = run(r0.channel, { type: 'peer-reject', id: credit.id, code: 'INVALID_ARGUMENT', message: 'no' });
    expect(rejected(r)).toEqual([]);
    return { hub: r.channel, credit, bump: frame(r, 'update') };
  }

  it('a device that countersigns the refused credit after all (a sync brings it back) is paid once: delivered', () => {
    const { hub, credit } = refused();
    const devSig = signatureToHex(cryptos.device.sign(cryptos.device.digest(credit.state)));
    const s = run(hub, {
      type: 'peer-sync',
      id: 4,
      latest: { state: credit.state, deviceSig: devSig, hubSig: signatureToHex(credit.sig) },
    });
    expect(resolvedRefs(s)).toEqual([9]);
    expect(persistOf(s)?.writes).toContainEqual({ kind: 'credited', paymentId: id32(3), version: 1n });
    // After a restart no caller waits, but the credit that landed is marked all the same (a router or an outbox that
    // found it unmarked would credit it again).
    const restarted = createChannel({
      role: 'hub',
      ctx,
      latest: hub.latest,
      signedVersion: hub.signedVersion,
      unsettled: hub.unsettled,
    });
    const again = run(restarted, {
      type: 'peer-sync',
      id: 5,
      latest: { state: credit.state, deviceSig: devSig, hubSig: signatureToHex(credit.sig) },
    });
    expect(persistOf(again)?.writes).toEqual([{ kind: 'credited', paymentId: id32(3), version: 1n }]);
    expect(again.channel.latest.state.paidByHub).toBe(5n);
    expect(s.channel.unsettled).toBeUndefined();
    expect(s.channel.latest.state.paidByHub).toBe(5n);
  });

  it('closed on-chain: delivered if at the refused credit’s version, refused at any other', () => {
    const { hub } = refused();
    const closing = run(hub, { type: 'chain-status', status: 'closing' });
    expect(rejected(closing)).toEqual([]);
    const at = run(closing.channel, { type: 'chain-status', status: 'closed', version: 1n });
    expect(resolvedRefs(at)).toEqual([9]);
    expect(only(at, 'resolve')[0]!.state.state.paidByHub).toBe(5n);
    const other = run(closing.channel, { type: 'chain-status', status: 'closed', version: 0n });
    expect(rejected(other)).toEqual([[9, 'INVALID_ARGUMENT']]);
    // Closed at a version not known: the credit stays unanswered (nothing proves the device cannot be paid by it).
    const unknown = run(closing.channel, { type: 'chain-status', status: 'closed' });
    expect([rejected(unknown), resolvedRefs(unknown)]).toEqual([[], []]);
    expect(unknown.channel.unsettled).toHaveLength(1);
  });

  it('closing, the hub signs no final state at the version of a credit the device refused: never two states at one version', () => {
    // The device force-closes, refuses the credit, then asks for a final state of the old counters at the credit's
    // version. Signed, a close with it would count the credit as delivered although the device never got it.
    const r0 = run(online('hub'), { type: 'credit', ref: 9, amount: 5n, paymentId: id32(3) });
    const credit = frame(r0, 'update');
    const closing = run(r0.channel, { type: 'chain-status', status: 'closing' }).channel;
    const r = run(closing, { type: 'peer-reject', id: credit.id, code: 'INVALID_ARGUMENT', message: 'no' });
    expect(r.channel.unsettled?.map((u) => u.state.version)).toEqual([1n]);
    const ask = (version: bigint): EngineEvent => ({
      type: 'peer-close',
      id: 3,
      state: { ...r.channel.latest.state, version, isFinal: true },
      owes: false,
    });
    const same = run(r.channel, ask(1n));
    expect(refusedCode(same)).toBe('CHANNEL_NOT_OPEN');
    expect(same.channel).toBe(r.channel);
    // So after a restart, where the digest signed is not kept: the unsettled credit is at that version.
    const restarted = createChannel({
      role: 'hub',
      ctx,
      status: 'closing',
      latest: r.channel.latest,
      signedVersion: r.channel.signedVersion,
      unsettled: r.channel.unsettled,
    });
    expect(refusedCode(run(restarted, ask(1n)))).toBe('CHANNEL_NOT_OPEN');
    // One version up it is signed, and a close with it answers the credit: refused, not delivered.
    const above = run(r.channel, ask(2n));
    expect(frame(above, 'ack')).toMatchObject({ id: 3, version: 2n });
    const closed = run(above.channel, { type: 'chain-status', status: 'closed', version: 2n });
    expect(rejected(closed)).toEqual([[9, 'INVALID_ARGUMENT']]);
    expect(persistOf(closed)?.writes ?? []).not.toContainEqual(expect.objectContaining({ kind: 'credited' }));
  });

  it('a credit still proposed when the channel closes on-chain is answered by the closing version', () => {
    const r0 = run(online('hub'), { type: 'credit', ref: 9, amount: 5n, paymentId: id32(3) });
    const closing = run(r0.channel, { type: 'chain-status', status: 'closing' });
    expect([rejected(closing), resolvedRefs(closing)]).toEqual([[], []]); // the device may still countersign it
    const at = run(closing.channel, { type: 'chain-status', status: 'closed', version: 1n });
    expect(resolvedRefs(at)).toEqual([9]);
    expect(persistOf(at)?.writes).toContainEqual({ kind: 'credited', paymentId: id32(3), version: 1n });
    expect([at.channel.proposals, at.channel.unsettled]).toEqual([[], undefined]);
    const other = run(closing.channel, { type: 'chain-status', status: 'closed', version: 0n });
    expect(rejected(other)).toEqual([[9, 'CHANNEL_NOT_OPEN']]);
    expect(other.channel.proposals).toEqual([]);
  });

  it('a credit of the same payment asked again after a restart on a closing channel waits for it to settle', () => {
    const { hub } = refused();
    const restarted = createChannel({
      role: 'hub',
      ctx,
      status: 'closing',
      latest: hub.latest,
      signedVersion: hub.signedVersion,
      unsettled: hub.unsettled,
    });
    const again = run(restarted, { type: 'credit', ref: 11, amount: 5n, paymentId: id32(3) });
    expect(rejected(again)).toEqual([]);
    expect(run(restarted, { type: 'credit', ref: 12, amount: 5n, paymentId: id32(4) }).effects).toContainEqual(
      expect.objectContaining({ type: 'reject', ref: 12 }),
    );
    const closed = run(again.channel, { type: 'chain-status', status: 'closed', version: 1n });
    expect(resolvedRefs(closed)).toEqual([11]);
  });

  it('a step that changes nothing durable while it is unsettled asks for no write', () => {
    const { hub, bump } = refused();
    expect([hub.unsettled, hub.deferred].map((x) => x?.length)).toEqual([1, 1]);
    const off = run(hub, { type: 'disconnected' });
    const on = run(off.channel, { type: 'connected' });
    expect(sent(on)).toEqual([bump]); // the bump is sent again, nothing else happens
    for (const r of [off, on]) {
      expect(r.channel).not.toBe(hub); // changed in memory (connected or not)
      expect(only(r, 'persist')).toEqual([]);
      // The same arrays: a new one looks like a change to a shell that compares them.
      expect([r.channel.unsettled, r.channel.deferred]).toEqual([hub.unsettled, hub.deferred]);
      expect(r.channel.unsettled).toBe(hub.unsettled);
      expect(r.channel.deferred).toBe(hub.deferred);
    }
  });

  it('a device that refuses the bump too leaves the caller waiting; its next sync brings another bump', () => {
    const { hub, bump } = refused();
    const r = run(hub, { type: 'peer-reject', id: bump.id, code: 'INVALID_ARGUMENT' });
    expect([rejected(r), sent(r)]).toEqual([[], []]);
    expect(r.channel.unsettled).toHaveLength(1);
    const s = run(r.channel, { type: 'peer-sync', id: 5, latest: null });
    const bump3 = frame(s, 'update');
    expect(bump3.state).toMatchObject({ version: 3n, paidByHub: 0n });
    const dev = deliver(online('device'), bump3);
    expect(rejected(deliver(s.channel, frame(dev, 'ack')))).toEqual([[9, 'INVALID_ARGUMENT']]);
  });
});

describe('acks: duplicate, reordered and lost', () => {
  function threeAcked() {
    let dev = online('device');
    let hub = online('hub');
    const acks: Extract<Message, { t: 'ack' }>[] = [];
    for (let i = 1; i <= 3; i++) {
      const r = run(dev, pay(i, 10n));
      dev = r.channel;
      const h = deliver(hub, frame(r, 'update'));
      hub = h.channel;
      acks.push(frame(h, 'ack'));
    }
    return { dev, hub, acks };
  }

  it('a lost ack is covered by the next one (acks are cumulative)', () => {
    const { dev, acks } = threeAcked();
    const r = deliver(dev, acks[2]!);
    expect(resolvedRefs(r)).toEqual([1, 2, 3]);
    expect(r.channel.unchecked!.state.version).toBe(3n);
    expect(r.channel.proposals).toEqual([]);
  });

  it('an ack arriving after a newer one, or twice, changes nothing', () => {
    const { dev, acks } = threeAcked();
    const r = deliver(dev, acks[1]!);
    expect(resolvedRefs(r)).toEqual([1, 2]);
    const late = deliver(r.channel, acks[0]!);
    expect(late.channel).toBe(r.channel);
    expect(late.effects).toEqual([]);
    const again = deliver(r.channel, acks[1]!);
    expect(again.channel).toBe(r.channel);
    expect(again.effects).toEqual([]);
    const last = deliver(r.channel, acks[2]!);
    expect(resolvedRefs(last)).toEqual([3]);
  });

  it('an ack not signed by the hub: the payments it answers are paid (the hub holds them), its state is never adopted', () => {
    const { dev, hub, acks } = threeAcked();
    const forged = { ...acks[2]!, sig: signAs(malloryKey, dev.proposals[2]!.state) };
    const r = deliver(dev, forged);
    // Checked lazily: the device signed these payments and the hub holds them (an older state pays the device more).
    expect(resolvedRefs(r)).toEqual([1, 2, 3]);
    expect(r.channel.latest).toBe(dev.latest);
    // The check (at the shell's write-behind tick, or any event but pay and ack) drops the state: never latest, never
    // written; the hub is faulty, and asked for its latest state again.
    const c = run(r.channel, { type: 'tick' });
    expect(only(c, 'resync').map((e) => e.error.code)).toEqual(['BAD_SIGNATURE']);
    expect(persistOf(c)).toBeUndefined();
    expect(c.channel.latest).toBe(dev.latest);
    expect(c.channel.unchecked).toBeUndefined();
    // Nothing more is signed before a sync, whose state is checked in full.
    expect(c.channel.synced).toBe(false);
    const p = run(c.channel, pay(4, 1n));
    expect(sent(p)).toEqual([]);
    const s = deliver(p.channel, syncFrame(hub, 0));
    expect(s.channel.latest).toEqual(hub.latest);
    expect(frame(s, 'update').state).toMatchObject({ version: 4n, paidByDevice: 31n });
    // Any other event checks first: a credit on top of a forged ack is not countersigned (the device resyncs).
    const credit = run(hub, { type: 'credit', ref: 9, amount: 5n });
    const k = deliver(r.channel, frame(credit, 'update'));
    expect(sent(k)).toEqual([]);
    expect(only(k, 'resync')).toHaveLength(1);
    expect(k.channel.latest).toBe(dev.latest);
    expect(persistOf(k)).toBeUndefined();
  });

  it('an ack of a lock transition or of a final state is checked at once: a forged one is refused', () => {
    const { dev, acks } = threeAcked();
    const settled = deliver(dev, acks[2]!).channel;
    const closing = run(settled, { type: 'close', ref: 7 });
    const ask = frame(closing, 'close');
    const forged = { t: 'ack', id: ask.id, version: ask.state.version, sig: signAs(malloryKey, ask.state) } as const;
    const r = deliver(closing.channel, forged as Message);
    expect(refusedCode(r)).toBe('BAD_SIGNATURE');
    expect(r.channel).toBe(closing.channel);
  });

  it('a device update the hub already holds is acked again with the same countersignature (a lost ack, resent update)', () => {
    const dev = online('device');
    const r = run(dev, pay(1, 10n));
    const h = deliver(online('hub'), frame(r, 'update'));
    const again = deliver(h.channel, frame(r, 'update'));
    expect(again.channel).toBe(h.channel);
    expect(frame(again, 'ack').sig).toEqual(frame(h, 'ack').sig);
  });
});

describe('retry after a reconnect', () => {
  it('a reconnect and a sync at the same state ask for no write and keep every durable part the same object', () => {
    // The hub shell writes a channel whose record parts changed: a reconnect must leave them as they were. Checked on
    // a channel with a state both signed and a credit of the hub's outstanding.
    const d1 = run(online('device'), pay(1, 100n));
    const h1 = deliver(online('hub'), frame(d1, 'update'));
    const d2 = deliver(d1.channel, frame(h1, 'ack'));
    const h2 = run(h1.channel, { type: 'credit', ref: 3, amount: 5n });
    const hub = h2.channel;
    expect(hub.proposals).toHaveLength(1);
    const durable = (c: EngineChannel) => [
      c.ctx,
      c.status,
      c.latest,
      c.signedVersion,
      c.proposals[0],
      c.locks,
      c.evidenceCount,
      c.unsettled,
    ];
    const off = run(hub, { type: 'disconnected' });
    const on = run(off.channel, { type: 'connected' });
    const synced = run(on.channel, { type: 'peer-sync', id: 9, latest: d2.channel.latest });
    expect(frame(on, 'update').id).toBe(frame(h2, 'update').id); // the outstanding credit is sent again
    expect(frame(synced, 'sync').latest).toEqual(hub.latest);
    for (const r of [off, on, synced]) {
      expect(only(r, 'persist')).toEqual([]);
      durable(r.channel).forEach((part, i) => expect(part).toBe(durable(hub)[i]));
    }
  });

  it('a lost update is sent again, same bytes, once the hub answered the sync; nothing is signed before', () => {
    const d1 = run(online('device'), pay(1, 100n));
    const original = frame(d1, 'update');
    const off = run(d1.channel, { type: 'disconnected' }).channel;
    expect(off).toMatchObject({ connected: false, synced: false });
    const q = run(off, pay(2, 1n));
    expect(sent(q)).toEqual([]);
    const back = run(q.channel, { type: 'connected' });
    expect(sent(back)).toEqual([]); // not before the hub's sync reply
    let hub = run(run(online('hub'), { type: 'disconnected' }).channel, { type: 'connected' }).channel;
    const hs = run(hub, { type: 'peer-sync', id: 7, latest: back.channel.latest });
    hub = hs.channel;
    expect(frame(hs, 'sync')).toMatchObject({ id: 7, latest: { state: Z } });
    const ds = deliver(back.channel, frame(hs, 'sync'));
    expect(ds.channel.synced).toBe(true);
    const ups = sent(ds) as Extract<Message, { t: 'update' }>[];
    expect(ups[0]!.sig).toEqual(original.sig);
    expect(sameState(ups[0]!.state, original.state)).toBe(true);
    expect(ups[1]!.state).toMatchObject({ version: 2n, paidByDevice: 101n });
    const h = run(hub, { type: 'peer-updates', updates: ups.map((m) => ({ id: m.id, state: m.state, sig: m.sig })) });
    const done = deliver(ds.channel, frame(h, 'ack'));
    expect(resolvedRefs(done)).toEqual([1, 2]);
  });

  it('a state the hub acked whose ack was lost is adopted from the sync reply: resolved once, not sent again', () => {
    const d1 = run(online('device'), pay(1, 100n));
    const h1 = deliver(online('hub'), frame(d1, 'update')); // its ack is lost
    const dev = run(run(d1.channel, { type: 'disconnected' }).channel, { type: 'connected' }).channel;
    const hs = run(run(h1.channel, { type: 'connected' }).channel, { type: 'peer-sync', id: 1, latest: dev.latest });
    const ds = deliver(dev, frame(hs, 'sync'));
    expect(persistOf(ds)?.gate).toBe(true);
    expect(resolvedRefs(ds)).toEqual([1]);
    expect(sent(ds)).toEqual([]);
    expect(ds.channel.latest.state.version).toBe(1n);
  });

  it('the hub adopts a credit the device countersigned whose ack was lost, and resolves it from the sync', () => {
    const h1 = run(online('hub'), { type: 'credit', ref: 4, amount: 9n, paymentId: id32(4) });
    const d1 = deliver(online('device'), frame(h1, 'update')); // the device's ack is lost
    const hub = run(run(h1.channel, { type: 'disconnected' }).channel, { type: 'connected' });
    expect(frame(hub, 'update').id).toBe(frame(h1, 'update').id); // the outstanding credit is sent again
    const hs = run(hub.channel, { type: 'peer-sync', id: 2, latest: d1.channel.latest });
    expect(persistOf(hs)).toMatchObject({
      gate: true,
      writes: [{ kind: 'credited', paymentId: id32(4), version: 1n }],
    });
    expect(resolvedRefs(hs)).toEqual([4]);
    expect(hs.channel.proposals).toEqual([]);
  });

  it('a state offered in a sync that is not signed by both is ignored', () => {
    const d1 = run(online('device'), pay(1, 100n));
    const half: SignedState = { state: frame(d1, 'update').state, deviceSig: signatureToHex(frame(d1, 'update').sig) };
    const hub = online('hub');
    const hs = run(hub, { type: 'peer-sync', id: 3, latest: half });
    expect(hs.channel.latest.state.version).toBe(0n);
    expect(persistOf(hs)).toBeUndefined();
    const forged: SignedState = { ...half, hubSig: signatureToHex(signAs(malloryKey, half.state)) };
    expect(run(hub, { type: 'peer-sync', id: 3, latest: forged }).channel.latest.state.version).toBe(0n);
    const elsewhere: SignedState = { ...half, state: { ...half.state, channelId: id32(1) as never } };
    expect(run(hub, { type: 'peer-sync', id: 3, latest: elsewhere }).channel.latest.state.version).toBe(0n);
  });
});

// ---------- a scripted world: every persist can fail, every record can be restarted from ----------

type Outcome = 'pending' | 'resolved' | 'rejected' | 'orphaned';

/** Both parties and the messages between them, driven the way the shells drive the engine. */
class Pair {
  now = NOW;
  readonly net: { to: Role; msg: Message }[] = [];
  readonly outcome = new Map<number, { role: Role; amount: bigint; status: Outcome }>();
  /** Signatures each party released (in adopted steps): version → digest hex. */
  readonly signed: Record<Role, Map<bigint, string>>;
  /** Every record the engine asked to persist, with the other party and the signature log at that moment. */
  readonly records: {
    role: Role;
    channel: EngineChannel;
    peer: EngineChannel;
    signed: Record<Role, Map<bigint, string>>;
    outcome: Map<number, Outcome>;
  }[] = [];
  persists = 0;
  failed: { role: Role; event: EngineEvent['type'] } | undefined;

  constructor(
    public dev: EngineChannel,
    public hub: EngineChannel,
    public failAt = -1,
    signed?: Record<Role, Map<bigint, string>>,
  ) {
    this.signed = signed
      ? { device: new Map(signed.device), hub: new Map(signed.hub) }
      : { device: new Map(), hub: new Map() };
  }

  party(role: Role): EngineChannel {
    return role === 'device' ? this.dev : this.hub;
  }

  step(role: Role, ev: EngineEvent): void {
    const before = this.party(role);
    // Everything but the role's rules (shared, frozen functions) is plain data, cloned to compare after the step.
    const { rules, ...data } = before;
    const snapshot = structuredClone(data);
    const signing: Uint8Array[] = [];
    const base = cryptos[role];
    const crypto: EngineCrypto = {
      digest: base.digest,
      recover: base.recover,
      sign: (d) => (signing.push(d), base.sign(d)),
    };
    const r = step(before, ev, { crypto, now: this.now });
    // The engine never changes the channel it was given: a discarded step leaves nothing behind.
    expect(before).toEqual({ ...snapshot, rules });
    expect(r.channel.rules).toBe(rules);
    const p = persistOf(r);
    if (p && this.persists++ === this.failAt) {
      this.failed = { role, event: ev.type };
      this.discarded(role, ev);
      return;
    }
    for (const d of signing) {
      // A final state the hub signed first is in neither its proposals nor its latest (it keeps the state both signed).
      const hubFinal = { ...r.channel.latest.state, version: r.channel.signedVersion, isFinal: true };
      const s =
        r.channel.proposals.find((x) => toHexDigest(x.state) === hexOf(d))?.state ??
        (toHexDigest(hubFinal) === hexOf(d) ? hubFinal : r.channel.latest.state);
      const known = this.signed[role].get(s.version);
      expect(
        known === undefined || known === hexOf(d),
        `${role} signed two different states at version ${s.version}`,
      ).toBe(true);
      this.signed[role].set(s.version, hexOf(d));
    }
    if (role === 'device') this.dev = r.channel;
    else this.hub = r.channel;
    if (p)
      this.records.push({
        role,
        channel: r.channel,
        peer: this.party(role === 'device' ? 'hub' : 'device'),
        signed: { device: new Map(this.signed.device), hub: new Map(this.signed.hub) },
        outcome: new Map([...this.outcome].map(([k, v]) => [k, v.status])),
      });
    for (const e of r.effects) {
      if (e.type === 'send') this.net.push({ to: role === 'device' ? 'hub' : 'device', msg: e.msg });
      if (e.type === 'resolve' || e.type === 'reject') {
        const o = this.outcome.get(e.ref);
        if (!o) continue;
        expect(o.status, `ref ${e.ref} answered twice`).toBe('pending');
        o.status = e.type === 'resolve' ? 'resolved' : 'rejected';
      }
    }
  }

  /** The shell's answer to a failed persist: the step is gone; its callers and the peer hear STORE_FAILURE. */
  discarded(role: Role, ev: EngineEvent): void {
    const fail = (ref: number) => {
      const o = this.outcome.get(ref);
      if (o) o.status = 'rejected';
    };
    if (ev.type === 'pay') ev.pays.forEach((x) => fail(x.ref));
    if (ev.type === 'credit' || ev.type === 'close') fail(ev.ref);
    const to = role === 'device' ? 'hub' : 'device';
    const latest = this.party(role).latest;
    const ids = ev.type === 'peer-updates' ? ev.updates.map((u) => u.id) : ev.type === 'peer-close' ? [ev.id] : [];
    for (const id of ids)
      this.net.push({
        to,
        msg: { t: 'reject', id, channelId: ctx.channelId, code: 'STORE_FAILURE', message: 'store failed', latest },
      });
  }

  pay(ref: number, amount: bigint): void {
    this.outcome.set(ref, { role: 'device', amount, status: 'pending' });
    this.step('device', pay(ref, amount));
  }

  credit(ref: number, amount: bigint): void {
    this.outcome.set(ref, { role: 'hub', amount, status: 'pending' });
    this.step('hub', { type: 'credit', ref, amount });
  }

  close(ref: number): void {
    this.outcome.set(ref, { role: 'device', amount: 0n, status: 'pending' });
    this.step('device', { type: 'close', ref });
  }

  deliverAll(): void {
    for (let n = 0; this.net.length > 0; n++) {
      expect(n).toBeLessThan(1_000);
      const m = this.net.shift()!;
      this.step(m.to, toEvent(m.msg, m.to));
    }
  }

  /** A new connection: what was in flight is gone; the device resyncs, then everything is delivered. */
  reconnect(): void {
    this.net.length = 0;
    this.step('device', { type: 'disconnected' });
    this.step('hub', { type: 'disconnected' });
    this.step('hub', { type: 'connected' });
    this.step('device', { type: 'connected' });
    this.net.push({ to: 'hub', msg: { t: 'sync', id: 0, channelId: ctx.channelId, latest: this.dev.latest } });
    this.deliverAll();
  }

  tick(ms: number): void {
    this.now += ms;
    this.step('device', { type: 'tick' });
    this.step('hub', { type: 'tick' });
    this.deliverAll();
  }

  heal(): void {
    this.failAt = -1;
    this.reconnect();
    this.tick(60_000);
    this.reconnect();
  }

  /** The device shell's write-behind: a tick, which checks the hub's signature on the newest state acked first. */
  check(): void {
    this.step('device', { type: 'tick' });
  }

  /** Both hold the same state, and it holds exactly what resolved: nothing lost, nothing twice, nothing refused. */
  expectConsistent(orphansAllowed = false): void {
    this.check();
    expect(sameState(this.dev.latest.state, this.hub.latest.state)).toBe(true);
    let paid = 0n;
    let credited = 0n;
    let orphanPaid = 0n;
    let orphanCredited = 0n;
    for (const [ref, o] of this.outcome) {
      if (!orphansAllowed) expect(o.status, `ref ${ref}`).not.toBe('pending');
      if (o.status === 'resolved') o.role === 'device' ? (paid += o.amount) : (credited += o.amount);
      if (o.status === 'pending' || o.status === 'orphaned')
        o.role === 'device' ? (orphanPaid |= o.amount) : (orphanCredited |= o.amount);
    }
    const s = this.hub.latest.state;
    // Distinct powers of two: the counter is the resolved ones plus, at most, some orphaned ones.
    expect(s.paidByDevice & ~orphanPaid).toBe(paid);
    expect(s.paidByHub & ~orphanCredited).toBe(credited);
    if (!orphansAllowed) {
      expect(s.paidByDevice).toBe(paid);
      expect(s.paidByHub).toBe(credited);
    }
  }
}

const hexOf = (d: Uint8Array) => Buffer.from(d).toString('hex');
const toHexDigest = (s: State) => hexOf(stateDigest(ctx.separator, s));

/** Pipelined pays, a credit, a crossing, a close: every kind of persist the engine asks for. */
function scenario(w: Pair): void {
  w.reconnect();
  w.pay(1, 1n);
  w.pay(2, 2n);
  w.deliverAll();
  w.credit(3, 4n);
  w.deliverAll();
  w.pay(4, 8n);
  w.credit(5, 16n);
  w.deliverAll();
  w.tick(1_000);
  w.pay(6, 32n);
  w.deliverAll();
  w.close(7);
  w.deliverAll();
}

const fresh = () => new Pair(make('device', { needsSync: true }), make('hub'));

describe('the scripted world', () => {
  it('runs clean: everything resolves and the channel closes', () => {
    const w = fresh();
    scenario(w);
    w.expectConsistent();
    expect([...w.outcome.values()].every((o) => o.status === 'resolved')).toBe(true);
    expect(w.hub.latest.state).toMatchObject({ isFinal: true, paidByDevice: 43n, paidByHub: 20n });
    expect(w.persists).toBeGreaterThan(10);
  });
});

describe('a failed persist at every effect', () => {
  const clean = fresh();
  scenario(clean);
  const n = clean.persists;

  it.each(Array.from({ length: n }, (_, k) => k))(
    'persist #%i fails: the step is discarded, nothing leaks, and after healing nothing is lost or paid twice',
    (k) => {
      const w = new Pair(make('device', { needsSync: true }), make('hub'), k);
      scenario(w);
      expect(w.failed).toBeDefined();
      w.heal();
      w.expectConsistent();
    },
  );
});

describe('restart from every record the engine asked to persist', () => {
  const clean = fresh();
  scenario(clean);

  /** Rebuild a party from the fields its shell stores (what `recordOf` in the hub and the client keep). */
  function restart(ch: EngineChannel): EngineChannel {
    const out = ch.role === 'hub' ? ch.proposals[0] : undefined;
    return createChannel({
      role: ch.role,
      ctx: { ...ctx, funding: ch.ctx.funding },
      status: ch.status,
      latest: ch.latest,
      signedVersion: ch.signedVersion,
      outgoing: out ? { state: out.state, sig: out.sig!, paymentId: out.credit?.paymentId, ref: -1 } : undefined,
      needsSync: true,
    });
  }

  it.each(clean.records.map((r, k) => [k, r.role] as const))(
    'record #%i (%s): the restarted party resyncs, signs no version twice, and the channel goes on',
    (k) => {
      const rec = clean.records[k]!;
      const restored = restart(rec.channel);
      expect(restored.latest).toBe(rec.channel.latest);
      expect(restored.signedVersion).toBe(rec.channel.signedVersion);
      if (rec.role === 'hub')
        expect(restored.proposals.map((p) => p.sig)).toEqual(rec.channel.proposals.slice(0, 1).map((p) => p.sig));
      const w =
        rec.role === 'device'
          ? new Pair(restored, rec.peer, -1, rec.signed)
          : new Pair(rec.peer, restored, -1, rec.signed);
      // The callers of the process that died never hear back; those of the other one must.
      for (const [ref, status] of rec.outcome) {
        const o = clean.outcome.get(ref)!;
        w.outcome.set(ref, {
          role: o.role,
          amount: o.amount,
          status: status === 'pending' ? (o.role === rec.role ? 'orphaned' : 'pending') : status,
        });
      }
      w.heal();
      expect(w.dev.latest.state.version).toBeGreaterThanOrEqual(rec.channel.latest.state.version);
      w.expectConsistent(true);
      for (const o of w.outcome.values()) if (o.role !== rec.role) expect(o.status).not.toBe('pending');
      if (!w.dev.latest.state.isFinal) {
        w.pay(100, 1n << 19n);
        w.deliverAll();
        expect(w.outcome.get(100)!.status).toBe('resolved');
        w.expectConsistent(true);
      }
    },
  );
});

// ---------- refusals, widths, evidence ----------

/** A hub that holds v1 (the device paid 100), fully signed. */
function hubAtV1() {
  const d = run(online('device'), pay(1, 100n));
  const h = deliver(online('hub'), frame(d, 'update'));
  const dev = run(deliver(d.channel, frame(h, 'ack')).channel, { type: 'tick' }).channel; // checked
  return { hub: h.channel, dev, v1: frame(d, 'update').state };
}

/** A device that holds v1 (the hub credited 30), fully signed. */
function deviceAtV1() {
  const h = run(online('hub'), { type: 'credit', ref: 1, amount: 30n });
  const d = deliver(online('device'), frame(h, 'update'));
  const hub = deliver(h.channel, frame(d, 'ack')).channel;
  return { dev: d.channel, hub, v1: frame(h, 'update').state };
}

describe('refused events leave the channel identical, with a typed error code', () => {
  const closing = (role: Role) => make(role, { status: 'closing' });
  const cases: [string, () => EngineChannel, EngineEvent, ErrorCode][] = [
    ['the hub does not pay()', () => online('hub'), pay(1, 1n), 'INVALID_ARGUMENT'],
    ['the device does not credit', () => online('device'), { type: 'credit', ref: 1, amount: 1n }, 'INVALID_ARGUMENT'],
    ['the hub does not close', () => online('hub'), { type: 'close', ref: 1 }, 'INVALID_ARGUMENT'],
    ['a zero credit without a round', () => online('hub'), { type: 'credit', ref: 1, amount: 0n }, 'INVALID_ARGUMENT'],
    [
      'a credit above uint256',
      () => online('hub'),
      { type: 'credit', ref: 1, amount: MAX_UINT256 + 1n },
      'INVALID_ARGUMENT',
    ],
    [
      'a credit that is not a bigint',
      () => online('hub'),
      { type: 'credit', ref: 1, amount: 5 as unknown as bigint },
      'INVALID_ARGUMENT',
    ],
    [
      'a round above uint64',
      () => online('hub'),
      { type: 'credit', ref: 1, amount: 1n, round: 1n << 64n },
      'INVALID_ARGUMENT',
    ],
    ['a negative round', () => online('hub'), { type: 'credit', ref: 1, amount: 1n, round: -1n }, 'INVALID_ARGUMENT'],
    ['a credit on a closing channel', () => closing('hub'), { type: 'credit', ref: 1, amount: 1n }, 'CHANNEL_NOT_OPEN'],
    ['a close on a closing channel', () => closing('device'), { type: 'close', ref: 1 }, 'CHANNEL_NOT_OPEN'],
    [
      'funding that falls while open',
      () => online('hub'),
      { type: 'funding', funding: { device: FUNDING.device - 1n, hub: FUNDING.hub } },
      'INVALID_ARGUMENT',
    ],
    [
      'funding above uint96',
      () => online('hub'),
      { type: 'funding', funding: { device: MAX_UINT96 + 1n, hub: FUNDING.hub } },
      'INVALID_ARGUMENT',
    ],
    [
      'negative funding',
      () => online('device'),
      { type: 'funding', funding: { device: FUNDING.device, hub: -1n } },
      'INVALID_ARGUMENT',
    ],
    [
      'funding that is not a bigint',
      () => online('device'),
      { type: 'funding', funding: { device: 1, hub: FUNDING.hub } as unknown as Funding },
      'INVALID_ARGUMENT',
    ],
    [
      'a channel that would reopen',
      () => closing('device'),
      { type: 'chain-status', status: 'open' },
      'INVALID_ARGUMENT',
    ],
  ];
  it.each(cases)('%s', (_name, build, ev, code) => {
    const ch = build();
    const r = run(ch, ev);
    expect(r.channel).toBe(ch);
    expect(refusedCode(r)).toBe(code);
    // An intent's caller is answered too, with the same code.
    if (ev.type === 'credit' || ev.type === 'close') expect(rejected(r)).toEqual([[1, code]]);
  });

  it('pay(): each payment refused on its own, the rest go through', () => {
    const ch = online('device');
    const route: RouteInstruction = { to: payee, amount: 3n, paymentId: id32(1) };
    const r = run(ch, {
      type: 'pay',
      pays: [
        { ref: 1, amount: 0n },
        { ref: 2, amount: MAX_UINT256 + 1n },
        { ref: 3, amount: FUNDING.device + 1n },
        { ref: 4, amount: 3n, route, escrowFor: id32(2) },
        { ref: 5, amount: 4n, route },
        { ref: 6, amount: FUNDING.device },
      ],
    });
    expect(rejected(r)).toEqual([
      [1, 'INVALID_ARGUMENT'],
      [2, 'INVALID_ARGUMENT'],
      [3, 'INSUFFICIENT_FUNDS'],
      [4, 'INVALID_ARGUMENT'],
      [5, 'INVALID_ARGUMENT'],
    ]);
    expect(frame(r, 'update').state.paidByDevice).toBe(FUNDING.device); // exactly the deposit is payable
    const more = run(r.channel, pay(7, 1n));
    expect(rejected(more)).toEqual([[7, 'INSUFFICIENT_FUNDS']]);
    expect(only(more, 'reject')[0]!.error.details).toEqual({ available: 0n });
  });

  it('an update from the device the hub must refuse: reject frame with the code, channel unchanged', () => {
    const { hub, v1 } = hubAtV1();
    const sign = (s: State) => ({ id: 9, state: s, sig: signAs(deviceKey, s) });
    const bad: [PeerUpdate, ErrorCode][] = [
      [sign({ ...v1, version: 2n, paidByHub: 1n }), 'WRONG_PAYER'],
      [sign({ ...v1, version: 2n, paidByDevice: 50n }), 'COUNTER_DECREASED'],
      [sign({ ...v1, version: 2n, isFinal: true }), 'MALFORMED'],
      [sign({ ...v1, version: 2n, round: 1n }), 'BAD_ROUND'],
      [sign({ ...v1, version: 2n, paidByDevice: 2n * FUNDING.device }), 'INSUFFICIENT_FUNDS'],
      [sign({ ...v1, version: 0n }), 'STALE_VERSION'],
      [
        {
          ...sign({ ...v1, version: 2n, paidByDevice: 101n }),
          route: { to: payee, amount: 1n, paymentId: id32(1) },
          escrowFor: id32(2),
        },
        'MALFORMED',
      ],
      [
        { ...sign({ ...v1, version: 2n, paidByDevice: 101n }), route: { to: payee, amount: 2n, paymentId: id32(1) } },
        'INSUFFICIENT_FUNDS',
      ],
      [
        { ...sign({ ...v1, version: 2n, paidByDevice: 101n }), route: { to: payee, amount: 0n, paymentId: id32(1) } },
        'INVALID_ARGUMENT',
      ],
      [
        {
          ...sign({ ...v1, version: 2n, paidByDevice: 101n }),
          sig: signAs(malloryKey, { ...v1, version: 2n, paidByDevice: 101n }),
        },
        'BAD_SIGNATURE',
      ],
    ];
    for (const [u, code] of bad) {
      const r = run(hub, { type: 'peer-updates', updates: [u] });
      expect(r.channel, code).toBe(hub);
      expect(refusedCode(r)).toBe(code);
      expect(frame(r, 'reject')).toMatchObject({ id: 9, code, latest: hub.latest });
    }
    // The hub already signed v2 (say, a credit), so a device state at v2 is stale.
    const signedAhead = make('hub', { latest: hub.latest, signedVersion: 2n });
    const r = run(signedAhead, { type: 'peer-updates', updates: [sign({ ...v1, version: 2n, paidByDevice: 101n })] });
    expect(refusedCode(r)).toBe('STALE_VERSION');
    const closed = make('hub', { latest: hub.latest, status: 'closing' });
    expect(
      refusedCode(run(closed, { type: 'peer-updates', updates: [sign({ ...v1, version: 2n, paidByDevice: 101n })] })),
    ).toBe('CHANNEL_NOT_OPEN');
    // A replay of the zero state to a hub that has nothing signed yet: nothing to answer.
    const zero = online('hub');
    const z = run(zero, { type: 'peer-updates', updates: [{ id: 1, state: Z, sig: signAs(deviceKey, Z) }] });
    expect(z.channel).toBe(zero);
    expect(z.effects).toEqual([]);
  });

  it('a credit from the hub the device must refuse: reject frame with the code, channel unchanged', () => {
    const { dev, v1 } = deviceAtV1();
    const sign = (s: State) => ({ id: 4, state: s, sig: signAs(hubKey, s) });
    const bad: [PeerUpdate, ErrorCode][] = [
      [sign({ ...v1, version: 2n, isFinal: true }), 'MALFORMED'],
      [sign({ ...v1, version: 2n, paidByDevice: 1n }), 'WRONG_PAYER'],
      [sign({ ...v1, version: 2n, paidByHub: FUNDING.hub + 1n }), 'INSUFFICIENT_FUNDS'],
      [
        {
          ...sign({ ...v1, version: 2n, paidByHub: 31n }),
          sig: signAs(malloryKey, { ...v1, version: 2n, paidByHub: 31n }),
        },
        'BAD_SIGNATURE',
      ],
    ];
    for (const [u, code] of bad) {
      const r = run(dev, { type: 'peer-updates', updates: [u] });
      expect(r.channel, code).toBe(dev);
      expect(refusedCode(r)).toBe(code);
      expect(frame(r, 'reject')).toMatchObject({ id: 4, code });
    }
    const ahead = make('device', { latest: dev.latest, signedVersion: 3n });
    expect(
      refusedCode(run(ahead, { type: 'peer-updates', updates: [sign({ ...v1, version: 2n, paidByHub: 31n })] })),
    ).toBe('STALE_VERSION');
    const closing = make('device', { latest: dev.latest, status: 'closing' });
    expect(
      refusedCode(run(closing, { type: 'peer-updates', updates: [sign({ ...v1, version: 2n, paidByHub: 31n })] })),
    ).toBe('CHANNEL_NOT_OPEN');
    // Before its resync the device answers nothing at all (the hub resends after the sync).
    const unsynced = make('device', { latest: dev.latest, needsSync: true });
    const u = run(unsynced, { type: 'peer-updates', updates: [sign({ ...v1, version: 2n, paidByHub: 31n })] });
    expect(u.channel).toBe(unsynced);
    expect(refusedCode(u)).toBe('STALE_VERSION');
    expect(sent(u)).toEqual([]);
  });

  it('close messages the hub must refuse', () => {
    const { hub, v1 } = hubAtV1();
    const fin = { ...v1, version: 2n, isFinal: true };
    const close = (s: State, signer = deviceKey, owes = false): EngineEvent => ({
      type: 'peer-close',
      id: 3,
      state: s,
      sig: signAs(signer, s),
      owes,
    });
    const cases: [EngineChannel, EngineEvent, ErrorCode][] = [
      [hub, close({ ...v1, version: 2n }), 'MALFORMED'],
      [hub, close(fin, malloryKey), 'BAD_SIGNATURE'],
      [hub, close({ ...fin, paidByDevice: 101n }), 'BAD_FINAL'],
      [hub, close(fin, deviceKey, true), 'PENDING_CREDITS'],
      [run(hub, { type: 'credit', ref: 1, amount: 1n }).channel, close(fin), 'PENDING_CREDITS'],
      [make('hub', { latest: hub.latest, signedVersion: 2n }), close(fin), 'STALE_VERSION'],
      [make('hub', { latest: hub.latest, status: 'closing' }), close(fin), 'CHANNEL_NOT_OPEN'],
      [online('device'), close(fin), 'MALFORMED'],
    ];
    for (const [ch, ev, code] of cases) {
      const r = run(ch, ev);
      expect(r.channel, code).toBe(ch);
      expect(refusedCode(r)).toBe(code);
      expect(frame(r, 'reject')).toMatchObject({ id: 3, code });
    }
    // The same final state again with nothing to re-acknowledge (no hub signature held on it).
    const unsigned = make('hub', { latest: { state: fin, deviceSig: signatureToHex(signAs(deviceKey, fin)) } });
    expect(refusedCode(run(unsigned, close(fin)))).toBe('STALE_VERSION');
  });

  it('a crypto backend that fails refuses the event with INTERNAL and answers the caller', () => {
    const hub = online('hub');
    const broken: EngineCrypto = {
      ...cryptos.hub,
      sign: () => {
        throw new Error('HSM offline');
      },
    };
    const r = step(hub, { type: 'credit', ref: 8, amount: 1n }, { crypto: broken, now: NOW });
    expect(r.channel).toBe(hub);
    expect(refusedCode(r)).toBe('INTERNAL');
    expect(only(r, 'refused')[0]!.error.cause).toEqual(new Error('HSM offline'));
    expect(rejected(r)).toEqual([[8, 'INTERNAL']]);
  });
});

describe('on-chain widths', () => {
  it('funding is a uint96 when a channel is built', () => {
    expect(() => make('device', { ctx: { ...ctx, funding: { device: MAX_UINT96, hub: MAX_UINT96 } } })).not.toThrow();
    for (const funding of [
      { device: MAX_UINT96 + 1n, hub: 0n },
      { device: 0n, hub: MAX_UINT96 + 1n },
      { device: -1n, hub: 0n },
    ]) {
      expect(() => make('hub', { ctx: { ...ctx, funding } })).toThrow(
        expect.objectContaining({ code: 'INVALID_ARGUMENT' }),
      );
    }
  });

  it('a funding event up to uint96 is recorded durably, and what it allows can then be paid', () => {
    const dev = online('device');
    expect(rejected(run(dev, pay(1, FUNDING.device + 1n)))).toEqual([[1, 'INSUFFICIENT_FUNDS']]);
    const r = run(dev, { type: 'funding', funding: { device: MAX_UINT96, hub: FUNDING.hub } });
    expect(persistOf(r)?.gate).toBe(true);
    expect(r.channel.ctx.funding.device).toBe(MAX_UINT96);
    expect(frame(run(r.channel, pay(2, FUNDING.device + 1n)), 'update').state.paidByDevice).toBe(FUNDING.device + 1n);
    const same = run(r.channel, { type: 'funding', funding: { device: MAX_UINT96, hub: FUNDING.hub } });
    expect(same.channel).toBe(r.channel);
    expect(same.effects).toEqual([]);
  });

  it('funding may fall once the channel is closing (a withdrawal); it is recorded', () => {
    const ch = make('hub', { status: 'closing' });
    const r = run(ch, { type: 'funding', funding: { device: 0n, hub: 0n } });
    expect(r.channel.ctx.funding).toEqual({ device: 0n, hub: 0n });
    expect(persistOf(r)?.gate).toBe(true);
  });

  it('a hub credit beyond what the hub can pay is refused to its caller before anything is signed', () => {
    const hub = online('hub');
    const r = run(hub, { type: 'credit', ref: 3, amount: FUNDING.hub + 1n });
    expect(rejected(r)).toEqual([[3, 'INSUFFICIENT_FUNDS']]);
    expect(sent(r)).toEqual([]);
    expect(r.channel.signedVersion).toBe(0n);
  });
});

describe('equivocation evidence', () => {
  it('kept only when the second state verifies as the peer’s, and bounded by maxEvidence', () => {
    const { hub, v1 } = hubAtV1();
    const bounded = make('hub', { latest: hub.latest, config: { maxEvidence: 2 } });
    const other = (n: bigint) => ({ ...v1, paidByDevice: n });
    const offer = (s: State, signer = deviceKey): EngineEvent => ({
      type: 'peer-updates',
      updates: [{ id: 5, state: s, sig: signAs(signer, s) }],
    });

    const forged = run(bounded, offer(other(50n), malloryKey));
    expect(refusedCode(forged)).toBe('EQUIVOCATION');
    expect(forged.channel).toBe(bounded);
    expect(persistOf(forged)).toBeUndefined();

    const e1 = run(bounded, offer(other(50n)));
    expect(refusedCode(e1)).toBe('EQUIVOCATION');
    expect(frame(e1, 'reject').code).toBe('EQUIVOCATION');
    const [w] = persistOf(e1)!.writes;
    expect(w).toMatchObject({ kind: 'evidence', version: 1n, held: hub.latest, offered: { state: other(50n) } });
    expect(e1.channel.evidenceCount).toBe(1);
    const e2 = run(e1.channel, offer(other(60n)));
    expect(e2.channel.evidenceCount).toBe(2);
    const e3 = run(e2.channel, offer(other(70n)));
    expect(refusedCode(e3)).toBe('EQUIVOCATION');
    expect(persistOf(e3)).toBeUndefined(); // the bound is reached
    expect(e3.channel).toBe(e2.channel);
    // A restored channel keeps counting from what its store holds.
    expect(make('hub', { latest: hub.latest, config: { maxEvidence: 2 }, evidenceCount: 2 }).evidenceCount).toBe(2);
  });

  it('the device keeps the hub’s second state at its version; a sync offering one is kept too', () => {
    const { dev, v1 } = deviceAtV1();
    const other = { ...v1, paidByHub: 31n };
    const r = run(dev, { type: 'peer-updates', updates: [{ id: 6, state: other, sig: signAs(hubKey, other) }] });
    expect(refusedCode(r)).toBe('EQUIVOCATION');
    expect(persistOf(r)!.writes).toEqual([expect.objectContaining({ kind: 'evidence', version: 1n })]);
    const offered: SignedState = {
      state: other,
      hubSig: signatureToHex(signAs(hubKey, other)),
      deviceSig: signatureToHex(signAs(malloryKey, other)),
    };
    const s = run(dev, { type: 'peer-sync', id: 1, latest: offered });
    expect(persistOf(s)!.writes).toEqual([expect.objectContaining({ kind: 'evidence', version: 1n })]);
    expect(s.channel.latest).toBe(dev.latest);
    // The hub side: a device signature on a different state at the hub's latest version, offered in a sync.
    const { hub, v1: hv1 } = hubAtV1();
    const devOther = { ...hv1, paidByDevice: 7n };
    const hs = run(hub, {
      type: 'peer-sync',
      id: 1,
      latest: { state: devOther, deviceSig: signatureToHex(signAs(deviceKey, devOther)) },
    });
    expect(persistOf(hs)!.writes).toEqual([expect.objectContaining({ kind: 'evidence' })]);
    expect(frame(hs, 'sync').latest).toBe(hub.latest);
  });
});

describe('market rounds and credits', () => {
  it('a zero credit that nets a round moves the channel to that round, and both sides sign it', () => {
    const r1 = run(online('hub'), { type: 'credit', ref: 1, amount: 0n, round: 7n });
    const up = frame(r1, 'update');
    expect(up.state).toMatchObject({ version: 1n, paidByHub: 0n, round: 7n });
    const d = deliver(online('device'), up);
    expect(only(d, 'incoming')[0]).toMatchObject({ amount: 0n, round: 7n });
    const h = deliver(r1.channel, frame(d, 'ack'));
    expect(resolvedRefs(h)).toEqual([1]);
    expectFullySigned(h.channel.latest);
    // A later credit for an older round leaves the round where it is.
    const r2 = run(h.channel, { type: 'credit', ref: 2, amount: 5n, round: 3n });
    expect(frame(r2, 'update').state).toMatchObject({ round: 7n, paidByHub: 5n });
  });

  it('a credit restored after a restart is joined by the same credit() call, in flight or queued', () => {
    const h1 = run(online('hub'), { type: 'credit', ref: 1, amount: 9n, paymentId: id32(5) });
    const out = h1.channel.proposals[0]!;
    const restored = createChannel({
      role: 'hub',
      ctx,
      latest: { state: Z },
      signedVersion: 1n,
      outgoing: { state: out.state, sig: out.sig!, paymentId: id32(5), ref: -1 },
    });
    expect(waitingRefs(restored)).toEqual([]); // nobody waits for it yet
    const joined = run(restored, { type: 'credit', ref: 42, amount: 9n, paymentId: id32(5) });
    expect(joined.effects).toEqual([]);
    expect(joined.channel.proposals[0]!.credit!.ref).toBe(42);
    const d = deliver(online('device'), updateOf(restored));
    expect(resolvedRefs(deliver(joined.channel, frame(d, 'ack')))).toEqual([42]);
    // Refused on a conflict while disconnected, the restored credit waits in the queue; a round credit joins too.
    const roundOut = run(online('hub'), { type: 'credit', ref: 1, amount: 0n, round: 4n }).channel.proposals[0]!;
    const r2 = createChannel({
      role: 'hub',
      ctx,
      latest: { state: Z },
      signedVersion: 1n,
      outgoing: { state: roundOut.state, sig: roundOut.sig!, ref: -1 },
    });
    const requeued = run(r2, { type: 'peer-reject', id: r2.proposals[0]!.id, code: 'STALE_VERSION' });
    expect(requeued.channel.queue).toEqual([expect.objectContaining({ ref: -1, round: 4n })]);
    const j2 = run(requeued.channel, { type: 'credit', ref: 43, amount: 0n, round: 4n });
    expect(j2.channel.queue).toEqual([expect.objectContaining({ ref: 43, round: 4n })]);
    expect(waitingRefs(j2.channel)).toEqual([43]);
  });

  describe('a credit asked again while the first is proposed: one proposal, every caller answered with it', () => {
    const P = { paymentId: id32(6) };
    /** Credit 5 of payment P (ref 1) proposed, then asked again (ref 2). */
    function twice(o: Partial<EngineRestore> = {}, terms: { paymentId?: Bytes32; round?: bigint } = P) {
      const r1 = run(online('hub', o), { type: 'credit', ref: 1, amount: 5n, ...terms });
      const proposal = frame(r1, 'update');
      const r2 = run(r1.channel, { type: 'credit', ref: 2, amount: 5n, ...terms });
      expect(r2.effects).toEqual([]); // nothing proposed, nothing written
      expect(r2.channel.proposals).toHaveLength(1);
      expect(r2.channel.queue).toEqual([]);
      expect(waitingRefs(r2.channel)).toEqual([1, 2]);
      return { hub: r2.channel, proposal };
    }

    it.each([
      ['a payment', P],
      ['a market round', { round: 3n }],
    ] as const)('accepted (%s): both callers resolved with the state', (_, terms) => {
      const { hub, proposal } = twice({}, terms);
      const r = deliver(hub, frame(deliver(online('device'), proposal), 'ack'));
      expect(resolvedRefs(r)).toEqual([1, 2]);
      const [a, b] = only(r, 'resolve');
      expect(b!.state).toBe(a!.state);
      expect(a!.state.state).toMatchObject({ version: 1n, paidByHub: 5n });
      expect(sent(r)).toEqual([]); // not proposed a second time
      expect(persistOf(r)?.writes.filter((w) => w.kind === 'credited')).toHaveLength('paymentId' in terms ? 1 : 0);
      // The ack lost, the device's sync brings the state back both signed: both resolved the same.
      const theirs = only(r, 'resolve')[0]!.state;
      expect(resolvedRefs(run(hub, { type: 'peer-sync', id: 7, latest: theirs }))).toEqual([1, 2]);
    });

    it('another amount, lock or payment is another credit: queued, not joined', () => {
      const { hub } = twice();
      const other = run(hub, { type: 'credit', ref: 3, amount: 6n, ...P });
      expect(other.channel.queue).toEqual([expect.objectContaining({ ref: 3 })]);
      const lock = { hash: id32(9), expiry: BigInt(NOW / 1000) + 600n };
      const locked = run(hub, { type: 'credit', ref: 4, amount: 5n, ...P, lock });
      expect(locked.channel.queue).toEqual([expect.objectContaining({ ref: 4, lock })]);
      const plain = run(hub, { type: 'credit', ref: 5, amount: 5n });
      expect(plain.channel.queue).toEqual([expect.objectContaining({ ref: 5 })]);
    });

    it('refused by the device: both wait for the refused state to settle, and are refused together', () => {
      const { hub, proposal } = twice();
      const r = run(hub, { type: 'peer-reject', id: proposal.id, code: 'INVALID_ARGUMENT', message: 'no' });
      expect(rejected(r)).toEqual([]); // the device may still hold v1: deferred, a bump above it proposed
      expect(r.channel.deferred).toEqual([expect.objectContaining({ ref: 1, joined: [2] })]);
      // Asked a third time while deferred: joins the deferral, proposes nothing.
      const third = run(r.channel, { type: 'credit', ref: 3, amount: 5n, ...P });
      expect(third.effects.filter((e) => e.type !== 'persist')).toEqual([]);
      expect(third.channel.proposals).toBe(r.channel.proposals);
      expect(third.channel.deferred).toEqual([expect.objectContaining({ ref: 1, joined: [2, 3] })]);
      const bump = frame(r, 'update');
      const done = deliver(third.channel, frame(deliver(online('device'), bump), 'ack'));
      expect(rejected(done)).toEqual([
        [1, 'INVALID_ARGUMENT'],
        [2, 'INVALID_ARGUMENT'],
        [3, 'INVALID_ARGUMENT'],
      ]);
    });

    it('refused on a conflict more than maxCreditRetries times: both wait for its states to settle, then fail', () => {
      const { hub, proposal } = twice({ config: { maxCreditRetries: 1 } });
      const r1 = run(hub, { type: 'peer-reject', id: proposal.id, code: 'STALE_VERSION' });
      const again = frame(r1, 'update'); // proposed once more, above the refused v1
      expect(again.state).toMatchObject({ version: 2n, paidByHub: 5n });
      const r2 = run(r1.channel, { type: 'peer-reject', id: again.id, code: 'STALE_VERSION' });
      expect(rejected(r2)).toEqual([]); // the device may hold v1 or v2: both callers wait, together
      expect(r2.channel.deferred).toEqual([expect.objectContaining({ ref: 1, joined: [2], versions: [2n, 1n] })]);
      const done = deliver(r2.channel, frame(deliver(online('device'), frame(r2, 'update')), 'ack'));
      expect(rejected(done)).toEqual([
        [1, 'STALE_VERSION'],
        [2, 'STALE_VERSION'],
      ]);
    });

    it('closed on-chain: both delivered at the proposal’s version, both refused at another', () => {
      const { hub } = twice();
      const closing = run(hub, { type: 'chain-status', status: 'closing' });
      expect(resolvedRefs(run(closing.channel, { type: 'chain-status', status: 'closed', version: 1n }))).toEqual([
        1, 2,
      ]);
      expect(rejected(run(closing.channel, { type: 'chain-status', status: 'closed', version: 0n }))).toEqual([
        [1, 'CHANNEL_NOT_OPEN'],
        [2, 'CHANNEL_NOT_OPEN'],
      ]);
    });

    it('queued (the device offline): joined in the queue; failed together when it cannot be proposed or the channel closes', () => {
      const r1 = run(make('hub'), { type: 'credit', ref: 1, amount: FUNDING.hub + 1n, ...P });
      const r2 = run(r1.channel, { type: 'credit', ref: 2, amount: FUNDING.hub + 1n, ...P });
      expect(r2.effects).toEqual([]);
      expect(r2.channel.queue).toEqual([expect.objectContaining({ ref: 1, joined: [2] })]);
      const failed = run(r2.channel, { type: 'connected' }); // more than the hub's deposit: refused when proposed
      const codes = rejected(failed);
      expect(codes.map(([ref]) => ref)).toEqual([1, 2]);
      expect(codes[1]![1]).toBe(codes[0]![1]);
      expect(rejected(run(r2.channel, { type: 'chain-status', status: 'closing' }))).toEqual([
        [1, 'CHANNEL_NOT_OPEN'],
        [2, 'CHANNEL_NOT_OPEN'],
      ]);
    });
  });

  it('several credits in one peer message: one persist for all of them', () => {
    const h1 = run(online('hub'), { type: 'credit', ref: 1, amount: 1n });
    const dev0 = online('device');
    const d1 = deliver(dev0, frame(h1, 'update'));
    const h2 = run(deliver(h1.channel, frame(d1, 'ack')).channel, { type: 'credit', ref: 2, amount: 2n });
    const both = [frame(h1, 'update'), frame(h2, 'update')].map(
      (m) => (toEvent(m, 'device') as Extract<EngineEvent, { type: 'peer-updates' }>).updates[0]!,
    );
    const r = run(dev0, { type: 'peer-updates', updates: both });
    expect(r.effects.filter((e) => e.type === 'persist')).toEqual([{ type: 'persist', gate: true, writes: [] }]);
    expect(r.effects[0]!.type).toBe('persist');
    expect(sent(r).map((m) => m.t)).toEqual(['ack', 'ack']);
    expect(r.channel.latest.state.paidByHub).toBe(3n);
  });
});

function updateOf(hub: EngineChannel): Message {
  return frame(run(hub, { type: 'connected' }), 'update');
}

describe('close', () => {
  it('two close events make one final proposal, one answer for both', () => {
    const { dev, hub } = hubAtV1();
    const c1 = run(dev, { type: 'close', ref: 10 });
    expect(persistOf(c1)?.gate).toBe(true); // durable before the final state leaves
    const fin = frame(c1, 'close');
    expect(fin.state).toMatchObject({ version: 2n, isFinal: true, paidByDevice: 100n });
    const c2 = run(c1.channel, { type: 'close', ref: 11 });
    expect(sent(c2)).toEqual([]);
    expect(c2.channel.proposals).toHaveLength(1);
    expect(c2.channel.proposals[0]!.closeRefs).toEqual([10, 11]);
    expect(waitingRefs(c2.channel)).toEqual([10, 11]);
    const h = deliver(hub, fin);
    expect(persistOf(h)?.gate).toBe(true);
    const ack = frame(h, 'ack');
    // The device closes again by mistake: the hub answers with the same signature.
    const again = deliver(h.channel, fin);
    expect(again.channel).toBe(h.channel);
    expect(frame(again, 'ack').sig).toEqual(ack.sig);
    const done = deliver(c2.channel, ack);
    expect(persistOf(done)?.gate).toBe(true); // the final state goes on-chain: durable first
    expect(resolvedRefs(done)).toEqual([10, 11]);
    expectFullySigned(done.channel.latest);
    // Nothing follows a final state: pay is refused, close answers at once.
    expect(rejected(run(done.channel, pay(12, 1n)))).toEqual([[12, 'CHANNEL_FINAL']]);
    expect(resolvedRefs(run(done.channel, { type: 'close', ref: 13 }))).toEqual([13]);
    expect(refusedCode(run(done.channel, { type: 'credit', ref: 1, amount: 1n }))).toBe('INVALID_ARGUMENT');
    expect(rejected(run(h.channel, { type: 'credit', ref: 14, amount: 1n }))).toEqual([[14, 'CHANNEL_NOT_OPEN']]);
  });

  it('close waits for payments in flight, fails those not yet proposed, and goes out once the window is empty', () => {
    let dev = online('device', { config: { maxInFlight: 1 } });
    const p1 = run(dev, pay(1, 5n));
    const p2 = run(p1.channel, pay(2, 6n)); // queued behind the window
    const c = run(p2.channel, { type: 'close', ref: 3 });
    expect(rejected(c)).toEqual([[2, 'CHANNEL_FINAL']]);
    expect(sent(c)).toEqual([]);
    expect(rejected(run(c.channel, pay(4, 1n)))).toEqual([[4, 'CHANNEL_FINAL']]);
    dev = c.channel;
    const h = deliver(online('hub'), frame(p1, 'update'));
    const a = deliver(dev, frame(h, 'ack'));
    expect(resolvedRefs(a)).toEqual([1]);
    expect(frame(a, 'close').state).toMatchObject({ version: 2n, isFinal: true, paidByDevice: 5n });
  });

  it('a close the hub refuses on the merits fails the callers; after a version conflict it is proposed again', () => {
    const { dev } = hubAtV1();
    const c = run(dev, { type: 'close', ref: 1 });
    const id = frame(c, 'close').id;
    const merits = run(c.channel, { type: 'peer-reject', id, code: 'PENDING_CREDITS' });
    expect(rejected(merits)).toEqual([[1, 'PENDING_CREDITS']]);
    expect(merits.channel.proposals).toEqual([]);
    const conflict = run(c.channel, { type: 'peer-reject', id, code: 'STALE_VERSION' });
    expect(rejected(conflict)).toEqual([]);
    expect(frame(conflict, 'close').state).toMatchObject({ version: 3n, isFinal: true });
    expect(conflict.channel.proposals[0]!.closeRefs).toEqual([1]);
  });

  it('a final state the hub signed whose ack was lost: asked again after the sync, the hub signs it again', () => {
    const { dev, hub } = hubAtV1();
    const c = run(dev, { type: 'close', ref: 1 });
    expect(frame(c, 'close').sig).toBeUndefined(); // the hub signs a final state first
    const h = deliver(hub, frame(c, 'close')); // the ack is lost
    expect(h.channel.status).toBe('closing'); // the hub takes nothing more on this channel
    expect(h.channel.latest.state.isFinal).toBe(false); // and keeps the state both signed, for a challenge
    const back = run(run(c.channel, { type: 'disconnected' }).channel, { type: 'connected' });
    expect(sent(back)).toEqual([]);
    const s = run(back.channel, { type: 'peer-sync', id: 1, latest: h.channel.latest });
    expect(resolvedRefs(s)).toEqual([]);
    const again = frame(s, 'close');
    expect(again.state).toMatchObject({ isFinal: true, paidByDevice: h.channel.latest.state.paidByDevice });
    const h2 = deliver(h.channel, again);
    const done = deliver(s.channel, frame(h2, 'ack'));
    expect(resolvedRefs(done)).toEqual([1]);
    expect(done.channel.latest.state).toEqual(again.state);
    expect(done.channel.latest.deviceSig).toBeDefined();
    // The device's countersignature goes to the hub: it holds the final state both signed too.
    const h3 = deliver(h2.channel, frame(done, 'ack'));
    expect(h3.channel.latest).toEqual(done.channel.latest);
  });

  it('the status moving to closing fails queued payments, durably; the same status again is nothing', () => {
    let dev = online('device', { config: { maxInFlight: 1 } });
    dev = run(dev, pay(1, 5n)).channel;
    dev = run(dev, pay(2, 6n)).channel;
    const r = run(dev, { type: 'chain-status', status: 'closing' });
    expect(persistOf(r)?.gate).toBe(true);
    expect(rejected(r)).toEqual([[2, 'CHANNEL_NOT_OPEN']]);
    expect(r.channel.status).toBe('closing');
    expect(r.channel.queue).toEqual([]);
    const same = run(r.channel, { type: 'chain-status', status: 'closing' });
    expect(same.channel).toBe(r.channel);
    expect(same.effects).toEqual([]);
    expect(run(r.channel, { type: 'chain-status', status: 'closed' }).channel.status).toBe('closed');
  });
});

describe('force close registered on-chain', () => {
  it('the engine submits a challenge only when it holds a newer fully signed state', () => {
    const { dev, hub } = hubAtV1();
    for (const ch of [dev, hub]) {
      const stale = run(ch, { type: 'force-close-registered', version: 0n });
      expect(stale.effects).toEqual([{ type: 'submit', action: 'challenge', state: ch.latest }]);
      expect(stale.channel).toBe(ch);
      expect(run(ch, { type: 'force-close-registered', version: 1n }).effects).toEqual([]);
      expect(run(ch, { type: 'force-close-registered', version: 2n }).effects).toEqual([]);
    }
    // A state signed by one side only is no challenge.
    const half = make('hub', {
      latest: { state: { ...Z, version: 3n }, hubSig: signatureToHex(signAs(hubKey, { ...Z, version: 3n })) },
    });
    expect(run(half, { type: 'force-close-registered', version: 0n }).effects).toEqual([]);
    expect(challengeWith(hub.latest, 0n)).toBe(true);
    expect(challengeWith({ state: Z }, 0n)).toBe(false);
  });
});

describe('routed payments and escrows', () => {
  const route = (n: number, amount: bigint): RouteInstruction => ({ to: payee, amount, paymentId: id32(n) });

  function routedAndAcked(n: number, amount: bigint, receiptFirst?: boolean) {
    const d = run(online('device'), pay(1, amount, { route: route(n, amount) }));
    const up = frame(d, 'update');
    expect(up.route).toEqual(route(n, amount));
    const h = deliver(online('hub'), up);
    return { d, h, up };
  }

  it('the hub makes the route durable with the payer’s state, then forwards it; the payer resolves on the receipt', () => {
    const { d, h } = routedAndAcked(1, 25n);
    expect(persistOf(h)).toEqual({
      type: 'persist',
      gate: true,
      writes: [{ kind: 'route', route: route(1, 25n), from: deviceKey.address }],
    });
    expect(only(h, 'routed')).toEqual([{ type: 'routed', route: route(1, 25n), from: deviceKey.address }]);
    const a = run(d.channel, toEvent(frame(h, 'ack'), 'device'), NOW + 10);
    expect(resolvedRefs(a)).toEqual([]); // acked, but not yet delivered
    expect(only(a, 'timer')).toEqual([{ type: 'timer', at: NOW + 10 + DEFAULT_ENGINE_CONFIG.routeTimeoutMs }]);
    expect(waitingRefs(a.channel)).toEqual([1]);
    const ok = run(a.channel, { type: 'receipt', paymentId: id32(1), delivered: true });
    expect(only(ok, 'resolve')).toEqual([expect.objectContaining({ ref: 1, amount: 25n, paymentId: id32(1) })]);
    const refunded = run(a.channel, { type: 'receipt', paymentId: id32(1), delivered: false });
    expect(rejected(refunded)).toEqual([[1, 'NO_ROUTE']]);
    // No receipt in time: the caller hears TIMEOUT (the hub still delivers or refunds later).
    expect(rejected(run(a.channel, { type: 'tick' }, NOW + 10 + DEFAULT_ENGINE_CONFIG.routeTimeoutMs - 1))).toEqual([]);
    const late = run(a.channel, { type: 'tick' }, NOW + 10 + DEFAULT_ENGINE_CONFIG.routeTimeoutMs);
    expect(rejected(late)).toEqual([[1, 'TIMEOUT']]);
    expect(late.channel.routed).toEqual([]);
    expect(only(late, 'timer')).toEqual([]);
    // A tick that comes early (another timer: a yield's end, a lock's expiry) asks again for the deadline: a shell
    // keeps one timer, and the payment must not wait for ever.
    const early = run(a.channel, { type: 'tick' }, NOW + 500);
    expect(only(early, 'timer')).toEqual([{ type: 'timer', at: NOW + 10 + DEFAULT_ENGINE_CONFIG.routeTimeoutMs }]);
    const checked = run(a.channel, { type: 'tick' }).channel; // the hub's signature on the ack checked
    const unknown = run(checked, { type: 'receipt', paymentId: id32(99), delivered: true });
    expect(unknown.channel).toBe(checked);
  });

  it('a receipt that overtakes the ack is kept and answers the payment when it is acked', () => {
    for (const delivered of [true, false]) {
      const { d, h } = routedAndAcked(2, 7n);
      const early = run(d.channel, { type: 'receipt', paymentId: id32(2), delivered });
      expect(early.channel.early).toEqual([{ paymentId: id32(2), delivered }]);
      const twice = run(early.channel, { type: 'receipt', paymentId: id32(2), delivered });
      expect(twice.channel).toBe(early.channel);
      const a = deliver(early.channel, frame(h, 'ack'));
      if (delivered) expect(resolvedRefs(a)).toEqual([1]);
      else expect(rejected(a)).toEqual([[1, 'NO_ROUTE']]);
      expect(a.channel.early).toEqual([]);
      expect(a.channel.routed).toEqual([]);
    }
  });

  it('an escrow payment carries the order id; the hub records the amount with the state', () => {
    const d = run(online('device'), pay(1, 30n, { escrowFor: id32(8) }));
    const up = frame(d, 'update');
    expect(up.paymentId).toBe(id32(8));
    expect(run(d.channel, pay(2, 1n)).channel.proposals).toHaveLength(1); // a barrier
    const h = deliver(online('hub'), up);
    expect(persistOf(h)!.writes).toEqual([{ kind: 'escrow', orderId: id32(8), amount: 30n }]);
    expect(only(h, 'escrow')).toEqual([{ type: 'escrow', orderId: id32(8), amount: 30n }]);
  });
});

describe('restore and helpers', () => {
  it('a device restored from an older record adopts the hub’s newer state in the sync and reports the money it missed', () => {
    const { dev, hub } = deviceAtV1();
    const old = make('device', { needsSync: true });
    expect(old.synced).toBe(false);
    const c = run(old, { type: 'connected' });
    expect(sent(c)).toEqual([]);
    const s = run(c.channel, { type: 'peer-sync', id: 1, latest: hub.latest });
    expect(persistOf(s)?.gate).toBe(true);
    expect(only(s, 'incoming')).toEqual([expect.objectContaining({ amount: 30n })]);
    expect(s.channel.latest).toBe(hub.latest);
    expect(s.channel.signedVersion).toBe(1n);
    expect(sameState(s.channel.latest.state, dev.latest.state)).toBe(true);
  });

  it('disconnected is idempotent; a hub stays synced across reconnects', () => {
    const hub = make('hub');
    const d = run(hub, { type: 'disconnected' });
    expect(d.channel).toBe(hub);
    const dev = make('device');
    const off = run(run(dev, { type: 'connected' }).channel, { type: 'disconnected' }).channel;
    expect(run(off, { type: 'disconnected' }).channel).toBe(off);
  });

  it('storeFailure, outstandingCredit, availableToPay and settledBalance', () => {
    const cause = new Error('EIO');
    const e = storeFailure(cause);
    expect(e).toMatchObject({ code: 'STORE_FAILURE', cause });
    expect(outstandingCredit(online('device'))).toBeUndefined();
    const h = run(online('hub'), { type: 'credit', ref: 1, amount: 10n });
    expect(availableToPay(h.channel)).toBe(FUNDING.hub - 10n);
    expect(settledBalance(h.channel)).toBe(FUNDING.hub);
    expect(waitingRefs(h.channel)).toEqual([1]);
    const c = run(make('device'), { type: 'close', ref: 2 }); // not connected: the close waits
    expect(waitingRefs(c.channel)).toEqual([2]);
    expect(signatureFromHex(signatureToHex(frame(h, 'update').sig))).toEqual(frame(h, 'update').sig);
  });
});

describe('malformed signatures never count', () => {
  const garbage = new Uint8Array(65); // r = s = 0, v = 0: the verifier throws

  it('a sync state or an equivocation whose signature does not even parse is ignored', () => {
    const { hub, v1 } = hubAtV1();
    const next = { ...v1, version: 2n, paidByDevice: 150n };
    const s = run(hub, {
      type: 'peer-sync',
      id: 1,
      latest: { state: next, deviceSig: signatureToHex(garbage), hubSig: signatureToHex(garbage) },
    });
    expect(s.channel.latest).toBe(hub.latest);
    expect(persistOf(s)).toBeUndefined();
    const other = { ...v1, paidByDevice: 60n };
    const e = run(hub, { type: 'peer-updates', updates: [{ id: 2, state: other, sig: garbage }] });
    expect(refusedCode(e)).toBe('EQUIVOCATION');
    expect(persistOf(e)).toBeUndefined();
    expect(e.channel).toBe(hub);
  });

  it('waiting callers and early receipts cover payments not yet proposed', () => {
    const r: RouteInstruction = { to: payee, amount: 4n, paymentId: id32(6) };
    const queued = run(make('device'), { type: 'pay', pays: [{ ref: 1, amount: 4n, route: r }] }); // not connected: queued
    expect(waitingRefs(queued.channel)).toEqual([1]);
    const early = run(queued.channel, { type: 'receipt', paymentId: id32(6), delivered: true });
    expect(early.channel.early).toEqual([{ paymentId: id32(6), delivered: true }]);
    const inFlight = run(online('device'), pay(2, 3n));
    expect(waitingRefs(inFlight.channel)).toEqual([2]);
  });
});

describe('a device state the hub refused but holds (the device signed it first)', () => {
  /** v1 (pays 100) both signed; v2 routes 50 more and the hub refuses it (NO_ROUTE): the hub never countersigned v2. */
  function refusedRoute(queued: EngineEvent[] = []) {
    const r1 = run(online('device'), pay(1, 100n));
    const h1 = deliver(online('hub'), frame(r1, 'update'));
    let dev = run(deliver(r1.channel, frame(h1, 'ack')).channel, { type: 'tick' }).channel;
    const r2 = run(dev, pay(2, 50n, { route: { to: payee, amount: 50n, paymentId: id32(7) } }));
    dev = r2.channel;
    for (const ev of queued) dev = run(dev, ev).channel; // behind the routed payment (a barrier)
    const refused = frame(r2, 'update');
    const r3 = run(dev, { type: 'peer-reject', id: refused.id, code: 'NO_ROUTE', message: 'no route' });
    return { hub: h1.channel, refused, r3 };
  }

  it('is voided: the idle device proposes the latest counters one version up, the hub countersigns it', () => {
    const { hub, refused, r3 } = refusedRoute();
    expect(refused.state).toMatchObject({ version: 2n, paidByDevice: 150n });
    expect(rejected(r3)).toEqual([[2, 'NO_ROUTE']]);
    expect(r3.channel.refused).toBe(2n);
    const bump = frame(r3, 'update');
    expect(bump.state).toEqual({ ...refused.state, version: 3n, paidByDevice: 100n }); // nothing moves
    expect(persistOf(r3)?.gate).toBe(true); // the refusal is durable first (the bump rides on that write)
    const h = deliver(hub, bump);
    expect(refusedCode(h)).toBeUndefined();
    expect(frame(h, 'ack').version).toBe(3n);
    expect(h.channel.latest.state).toEqual(bump.state);
    expectFullySigned(h.channel.latest);
    const d = run(deliver(r3.channel, frame(h, 'ack')).channel, { type: 'tick' });
    expect(d.channel.latest.state).toEqual(bump.state);
    expect(settledBalance(d.channel)).toBe(FUNDING.device - 100n); // the refused 50 never moved
    // v2, signed by the device alone, is void: a force close registering it is challenged with v3 both signed.
    expect(challengeWith(d.channel.latest, refused.state.version)).toBe(true);
    expect(sent(run(d.channel, { type: 'tick' }))).toEqual([]); // one bump: nothing more to pass
  });

  it('is durable: a device restored with it (a restart) knows it, and voids it after its first sync', () => {
    const { hub, r3 } = refusedRoute();
    expect(persistOf(r3)?.gate).toBe(true); // written before the payment is reported failed
    const restart = (latest: SignedState, refused: bigint | undefined) =>
      make('device', { latest, signedVersion: r3.channel.signedVersion, refused, needsSync: true });
    const restored = restart(r3.channel.latest, r3.channel.refused);
    expect(restored.refused).toBe(2n);
    expect(make('device', { latest: r3.channel.latest, signedVersion: 3n }).refused).toBeUndefined();
    const s = run(run(restored, { type: 'connected' }).channel, { type: 'peer-sync', id: 0, latest: hub.latest });
    const bump = frame(s, 'update');
    expect(bump.state).toEqual({ ...hub.latest.state, version: 4n }); // nothing moves, above all it signed
    const done = run(deliver(s.channel, frame(deliver(hub, bump), 'ack')).channel, { type: 'tick' });
    expect(done.channel.latest.state).toEqual(bump.state);
    // A record written from here on is restored without it: a state both signed is above it.
    expect(restart(done.channel.latest, 2n).refused).toBeUndefined();
  });

  it('refused with a code this version does not know: the callers get UNKNOWN_CODE with the code as sent', () => {
    const r1 = run(online('device'), pay(1, 100n));
    const ev = { type: 'peer-reject', id: frame(r1, 'update').id, code: 'UNKNOWN_CODE', wireCode: 'QUOTA' } as const;
    const r2 = run(r1.channel, ev);
    const [e] = only(r2, 'reject');
    expect(e).toMatchObject({ ref: 1, error: { code: 'UNKNOWN_CODE', details: { wireCode: 'QUOTA' } } });
    expect(r2.channel.refused).toBe(1n); // a refusal like any other: the state it signed is to void
    expect(frame(r2, 'update').state).toEqual({ ...Z, version: 2n });
  });

  it('a device that pays on needs no bump: its next payment goes above the refused state', () => {
    const { r3 } = refusedRoute([pay(3, 7n)]);
    const ups = sent(r3).filter((m) => m.t === 'update');
    expect(ups.map((m) => (m as Extract<Message, { t: 'update' }>).state)).toEqual([
      expect.objectContaining({ version: 3n, paidByDevice: 107n }),
    ]);
  });

  it('a refused bump (it moves nothing) is no state to void, and is tried again only after the next sync', () => {
    const r1 = run(online('device'), pay(1, 100n));
    const r2 = run(r1.channel, { type: 'peer-reject', id: frame(r1, 'update').id, code: 'INSUFFICIENT_FUNDS' });
    expect(r2.channel.refused).toBe(1n); // v1 paid 100 over the zero state: to void
    const bump = frame(r2, 'update').state;
    const r3 = run(r2.channel, { type: 'peer-reject', id: frame(r2, 'update').id, code: 'INTERNAL' });
    expect(bump).toEqual({ ...Z, version: 2n });
    expect(r3.channel.refused).toBe(1n); // a refused bump moves nothing: it is not one to void…
    expect(sent(r3)).toEqual([]); // …and is not tried again before the next sync
    const s = run(run(r3.channel, { type: 'disconnected' }).channel, { type: 'connected' });
    const again = run(s.channel, { type: 'peer-sync', id: 0, latest: { state: Z } });
    expect(frame(again, 'update').state).toEqual({ ...Z, version: 3n }); // the sync brings another
  });

  it('a close waits for the bump: the final state is proposed once the hub countersigned it', () => {
    const { hub, r3 } = refusedRoute([{ type: 'close', ref: 9 }]);
    const bump = frame(r3, 'update');
    expect(sent(r3).filter((m) => m.t === 'close')).toEqual([]);
    const d = deliver(r3.channel, frame(deliver(hub, bump), 'ack'));
    expect(frame(d, 'close').state).toMatchObject({ version: 4n, paidByDevice: 100n, isFinal: true });
  });
});

describe('the device reserves versions durably before it signs them', () => {
  it('a device that crashed after signing (write behind lost) signs only above its durable ceiling after the restart', () => {
    const dev0 = online('device');
    const r1 = run(dev0, pay(1, 100n));
    expect(persistOf(r1)?.gate).toBe(true); // ceiling 1024 durable before version 1 leaves
    const signed = frame(r1, 'update').state;
    // The hub refuses it (say it crossed); the device crashes before any write behind lands. What it reloads is the
    // last gated record: latest zero, signedVersion = the ceiling.
    const restored = make('device', { signedVersion: r1.channel.reservedVersion, needsSync: true });
    const r2 = run(run(restored, { type: 'connected' }).channel, {
      type: 'peer-sync',
      id: 0,
      latest: { state: Z },
    });
    // Idle after the sync: it passes its ceiling at once with a state that only raises the version, so that the hub's
    // next credit (at its latest + 1) lands above every version the device may have signed.
    const bump = frame(r2, 'update').state;
    expect(bump).toEqual({ ...Z, version: 1025n });
    expect(persistOf(r2)?.gate).toBe(true); // the new ceiling is durable before it leaves
    const again = run(r2.channel, pay(2, 50n));
    const next = frame(again, 'update').state;
    expect(next.version).toBe(1026n); // pipelined on the bump
    expect(next.version).not.toBe(signed.version); // never a second, different state at version 1
    expect(again.channel.reservedVersion).toBe(1025n + 1023n);
  });
});

// ---------- restore checks, lock terms, claims (coverage of the lock paths from the engine's side) ----------

const preimage = (n: number) => id32(1000 + n);
const hubLock = (n: number, amount = 100n, expiry = 5_000n): Lock => ({
  amount,
  hash: hashPreimage(preimage(n)),
  expiry,
  payer: 'hub',
});
/** A state at `version` whose lock commitment is `locks` (signatures are not checked when a record is restored). */
const lockedState = (version: bigint, locks: readonly Lock[], base: Partial<State> = {}): State => ({
  ...Z,
  ...base,
  version,
  ...lockCommitment(locks),
});
const codeOf = (f: () => unknown): string | undefined => {
  try {
    f();
  } catch (e) {
    return (e as { code?: string }).code;
  }
  return undefined;
};

describe('restoring a channel checks what it is built from', () => {
  it('maxLocks must be an integer from 0 to the on-chain bound; a lock list must match its state', () => {
    for (const maxLocks of [-1, 1.5, 1_000_000])
      expect(codeOf(() => make('hub', { config: { maxLocks } }))).toBe('INVALID_ARGUMENT');
    expect(codeOf(() => make('hub', { latest: { state: Z }, locks: [hubLock(1)] }))).toBe('INVALID_ARGUMENT');
    const s = lockedState(1n, [hubLock(1)]);
    expect(make('hub', { latest: { state: s }, locks: [hubLock(1)], signedVersion: 1n }).locks).toEqual([hubLock(1)]);
  });

  it("a channel is built with its own role's rules; another role's are refused", () => {
    const base = { ctx, latest: { state: Z }, signedVersion: 0n };
    expect(codeOf(() => createEngineChannel({ role: 'device', ...base }, hubRules))).toBe('INVALID_ARGUMENT');
    expect(codeOf(() => createEngineChannel({ role: 'hub', ...base }, deviceRules))).toBe('INVALID_ARGUMENT');
    expect(createEngineChannel({ role: 'hub', ...base }, hubRules).rules).toBe(hubRules);
  });

  it('a device restored without saying so must resync before it signs; a hub never waits for that', () => {
    const base = { ctx, latest: { state: Z }, signedVersion: 0n };
    expect(createChannel({ role: 'device', ...base }).synced).toBe(false);
    expect(createChannel({ role: 'hub', ...base }).synced).toBe(true);
  });

  it('a hub restored with a stored lock proposal proposes that same transition again (add, claim, expire)', () => {
    const lock = hubLock(2, 300n);
    const sig = signatureToHex(signAs(hubKey, Z));
    const add = make('hub', {
      outgoing: {
        state: lockedState(1n, [lock]),
        sig,
        ref: -1,
        locks: [lock],
        lock: { amount: lock.amount, hash: lock.hash, expiry: lock.expiry },
      },
    });
    expect(add.proposals[0]).toMatchObject({
      op: { kind: 'add', lock },
      credit: { amount: 300n, lock: { hash: lock.hash } },
    });

    const held = lockedState(1n, [lock]);
    const claim = make('hub', {
      latest: { state: held },
      locks: [lock],
      signedVersion: 1n,
      outgoing: {
        state: { ...Z, version: 2n, paidByHub: 300n },
        sig,
        ref: -1,
        locks: [],
        unlock: { hash: lock.hash, preimage: preimage(2) },
      },
    });
    expect(claim.proposals[0]).toMatchObject({
      op: { kind: 'claim', hash: lock.hash },
      preimage: preimage(2),
      credit: { amount: 0n, unlock: { hash: lock.hash, preimage: preimage(2) } },
    });
    const expire = make('hub', {
      latest: { state: held },
      locks: [lock],
      signedVersion: 1n,
      outgoing: { state: { ...Z, version: 2n }, sig, ref: -1, locks: [], unlock: { hash: lock.hash } },
    });
    expect(expire.proposals[0]).toMatchObject({ op: { kind: 'expire', hash: lock.hash } });
  });
});

describe('lock terms of a payment are checked before anything is signed', () => {
  it('escrow with a lock, a malformed hash or expiry, an expiry already past, a hash already pending: each refused alone', () => {
    const dev = make('device'); // offline: payments queue, nothing is proposed
    const terms = (n: number, expiry = 5_000n) => ({ hash: hubLock(n).hash, expiry });
    const queued = run(dev, {
      type: 'pay',
      pays: [
        { ref: 1, amount: 5n }, // a plain payment queued first
        { ref: 2, amount: 5n, lock: terms(1) },
      ],
    }).channel;
    const r = run(queued, {
      type: 'pay',
      pays: [
        { ref: 3, amount: 5n, lock: terms(1) }, // the same hash as a queued lock
        { ref: 4, amount: 5n, lock: terms(2), escrowFor: id32(7) },
        { ref: 5, amount: 5n, lock: { hash: '0x1234' as Bytes32, expiry: 5_000n } },
        { ref: 6, amount: 5n, lock: { hash: terms(3).hash, expiry: 5_000 as unknown as bigint } },
        { ref: 7, amount: 5n, lock: { hash: terms(3).hash, expiry: 1n << 64n } },
        { ref: 8, amount: 5n, lock: terms(3, 1_000n) }, // now is second 1000: expires at once
      ],
    });
    expect(rejected(r)).toEqual([
      [3, 'INVALID_ARGUMENT'],
      [4, 'INVALID_ARGUMENT'],
      [5, 'INVALID_ARGUMENT'],
      [6, 'INVALID_ARGUMENT'],
      [7, 'INVALID_ARGUMENT'],
      [8, 'LOCK_EXPIRED'],
    ]);
    expect(r.channel.queue.map((q) => q.ref)).toEqual([1, 2]);
    expect(sent(r)).toEqual([]);
  });

  it('a hub lock credit the hub cannot afford is refused to its caller', () => {
    const r = run(online('hub'), {
      type: 'credit',
      ref: 9,
      amount: FUNDING.hub + 1n,
      lock: { hash: hubLock(1).hash, expiry: 5_000n },
    });
    expect(rejected(r)).toEqual([[9, 'INSUFFICIENT_FUNDS']]);
    expect(r.channel.queue).toEqual([]);
  });
});

describe('claims of a lock the peer pays', () => {
  const lock = hubLock(4, 250n, 2_000n);
  const held = lockedState(1n, [lock]);
  const payee = (o: Partial<EngineRestore> = {}) =>
    online('device', { latest: { state: held }, locks: [lock], signedVersion: 1n, ...o });

  it('refused on a closing channel and after the expiry, to the caller, channel unchanged', () => {
    const closing = payee({ status: 'closing' });
    const r1 = run(closing, { type: 'claim', ref: 1, hash: lock.hash, preimage: preimage(4) });
    expect(rejected(r1)).toEqual([[1, 'CHANNEL_NOT_OPEN']]);
    expect(r1.channel).toBe(closing);
    const open = payee();
    const r2 = run(open, { type: 'claim', ref: 2, hash: lock.hash, preimage: preimage(4) }, 2_001_000);
    expect(rejected(r2)).toEqual([[2, 'LOCK_EXPIRED']]);
    expect(r2.channel).toBe(open);
  });

  it('claimed twice: the first caller is answered, the second takes its place under the same claim id', () => {
    const first = run(payee(), { type: 'claim', ref: 1, hash: lock.hash, preimage: preimage(4) });
    const c1 = frame(first, 'claim');
    const second = run(first.channel, { type: 'claim', ref: 2, hash: lock.hash, preimage: preimage(4) });
    expect(rejected(second)).toEqual([[1, 'INVALID_ARGUMENT']]);
    expect(frame(second, 'claim').id).toBe(c1.id);
    expect(second.channel.nextId).toBe(first.channel.nextId);
    expect(second.channel.claims).toEqual([expect.objectContaining({ ref: 2, hash: lock.hash })]);
    // Offline, a claim is kept and sent after the reconnect's sync, not now.
    const offline = run(make('device', { latest: { state: held }, locks: [lock], signedVersion: 1n }), {
      type: 'claim',
      ref: 3,
      hash: lock.hash,
      preimage: preimage(4),
    });
    expect(sent(offline)).toEqual([]);
    expect(offline.channel.claims).toHaveLength(1);
  });

  it('the payer: a claim on a closing channel is refused; a copy of a claim being answered changes nothing; after an expiry is proposed a claim is LOCK_EXPIRED', () => {
    const payer = (o: Partial<EngineRestore> = {}) =>
      online('hub', { latest: { state: held }, locks: [lock], signedVersion: 1n, ...o });
    const ev = { type: 'peer-claim', id: 7, hash: lock.hash, preimage: preimage(4) } as const;
    const closing = payer({ status: 'closing' });
    const r0 = run(closing, ev);
    expect(frame(r0, 'reject').code).toBe('CHANNEL_NOT_OPEN');
    expect(r0.channel).toBe(closing);

    const r1 = run(payer(), ev);
    expect(persistOf(r1)?.writes).toEqual([{ kind: 'preimage', hash: lock.hash, preimage: preimage(4) }]);
    expect(r1.channel.proposals[0]?.op).toEqual({ kind: 'claim', hash: lock.hash });
    const copy = run(r1.channel, { ...ev, id: 8 });
    expect(copy.channel).toBe(r1.channel);
    expect(copy.effects).toEqual([]);
    // Offline the claim stays queued; a copy of it is the same claim.
    const queued = run(payer({}), { type: 'disconnected' }).channel;
    const q1 = run(queued, ev);
    expect(q1.channel.queue).toHaveLength(1);
    expect(run(q1.channel, { ...ev, id: 9 }).effects).toEqual([]);

    // Past the expiry the payer proposes taking the lock back; a claim then comes too late.
    const expired = run(payer(), { type: 'tick' }, 2_001_000);
    expect(expired.channel.proposals[0]?.op).toEqual({ kind: 'expire', hash: lock.hash });
    const late = run(expired.channel, ev, 2_001_000);
    expect(frame(late, 'reject').code).toBe('LOCK_EXPIRED');
    expect(late.channel).toBe(expired.channel);
  });
});

describe('locks settled by a state adopted from a sync', () => {
  const lock = hubLock(5, 250n, 2_000n);
  const held = lockedState(1n, [lock]);
  const signedBoth = (s: State): SignedState => ({
    state: s,
    deviceSig: signatureToHex(signAs(deviceKey, s)),
    hubSig: signatureToHex(signAs(hubKey, s)),
  });
  const payee = () => online('device', { latest: signedBoth(held), locks: [lock], signedVersion: 1n });
  const sync = (s: State, locks?: readonly Lock[]): EngineEvent => ({
    type: 'peer-sync',
    id: 1,
    latest: signedBoth(s),
    locks,
  });

  it('a lock the hub paid gone with its amount paid: claimed, and a claim of ours waiting on it resolves', () => {
    const claimed = run(payee(), { type: 'claim', ref: 5, hash: lock.hash, preimage: preimage(5) }).channel;
    const r = run(claimed, sync({ ...Z, version: 2n, paidByHub: 250n }, []));
    expect(r.channel.latest.state.version).toBe(2n);
    expect(r.channel.locks).toEqual([]);
    expect(r.channel.claims).toEqual([]);
    expect(only(r, 'lock-settled')).toEqual([
      expect.objectContaining({ lock, outcome: 'claimed', preimage: preimage(5) }),
    ]);
    expect(only(r, 'resolve')).toEqual([expect.objectContaining({ ref: 5, amount: 250n })]);
    expect(only(r, 'incoming')).toEqual([expect.objectContaining({ amount: 250n })]);
  });

  it('a lock gone without its amount while a claim of ours waits on it: refunded, and the claim fails LOCK_EXPIRED', () => {
    const claimed = run(payee(), { type: 'claim', ref: 5, hash: lock.hash, preimage: preimage(5) }).channel;
    const r = run(claimed, sync({ ...Z, version: 2n }, []));
    expect(r.channel.latest.state.version).toBe(2n);
    expect(r.channel.locks).toEqual([]);
    expect(r.channel.claims).toEqual([]);
    expect(only(r, 'lock-settled')).toEqual([
      expect.objectContaining({ lock, outcome: 'refunded', preimage: undefined }),
    ]);
    expect(only(r, 'resolve')).toEqual([]);
    expect(only(r, 'incoming')).toEqual([]);
    expect(rejected(r)).toEqual([[5, 'LOCK_EXPIRED']]);
  });

  it('a lock gone without its amount: refunded to its payer', () => {
    const r = run(payee(), sync({ ...Z, version: 2n }, []));
    expect(only(r, 'lock-settled')).toEqual([
      expect.objectContaining({ lock, outcome: 'refunded', preimage: undefined }),
    ]);
    expect(only(r, 'incoming')).toEqual([]);
    expect(rejected(r)).toEqual([]);
  });

  it('a lock the device paid, gone with the device’s counter raised by its amount, was claimed; a lock kept stays; a new one toward us is reported', () => {
    const mine: Lock = { ...hubLock(6, 40n), payer: 'device' };
    const start = lockedState(1n, [mine, lock]);
    const dev = online('device', { latest: signedBoth(start), locks: [mine, lock], signedVersion: 1n });
    const incoming = hubLock(7, 10n);
    const next = lockedState(2n, [lock, incoming], { paidByDevice: 40n });
    const r = run(dev, sync(next, [lock, incoming]));
    expect(r.channel.locks).toEqual([lock, incoming]);
    expect(only(r, 'lock-settled')).toEqual([expect.objectContaining({ lock: mine, outcome: 'claimed' })]);
    expect(only(r, 'lock-incoming')).toEqual([expect.objectContaining({ lock: incoming })]);
  });

  it('a sync state whose lock list nobody can show is not adopted', () => {
    const r = run(payee(), sync(lockedState(2n, [hubLock(8)])));
    expect(r.channel.latest.state.version).toBe(1n);
    expect(only(r, 'lock-settled')).toEqual([]);
  });
});

describe('a claim the payer refuses', () => {
  const peerUpdateOf = (s: State, by: Role, extra: Partial<PeerUpdate>): EngineEvent => ({
    type: 'peer-updates',
    updates: [{ id: 21, state: s, sig: signAs(by === 'hub' ? hubKey : deviceKey, s), ...extra }],
  });
  const lock = hubLock(9, 70n, 2_000n);
  const held = lockedState(1n, [lock]);
  const claimed = () =>
    run(online('device', { latest: { state: held }, locks: [lock], signedVersion: 1n }), {
      type: 'claim',
      ref: 4,
      hash: lock.hash,
      preimage: preimage(9),
    });

  it('BAD_PREIMAGE fails its caller with the payer’s code and message; the claim stands while its lock is pending', () => {
    const c = claimed();
    const id = frame(c, 'claim').id;
    const r = run(c.channel, { type: 'peer-reject', id, code: 'BAD_PREIMAGE', message: 'nope' });
    expect(rejected(r)).toEqual([[4, 'BAD_PREIMAGE']]);
    expect(only(r, 'reject')[0]!.error.shortMessage ?? only(r, 'reject')[0]!.error.message).toMatch(/nope/);
    expect(r.channel.claims).toEqual([expect.objectContaining({ ref: -1, hash: lock.hash })]);
  });

  it.each(['hub', 'device'] as const)(
    'the %s, shown a payer’s UNKNOWN_LOCK for a lock still pending, refuses its return after the expiry LOCK_CLAIMED',
    (role) => {
      // The payer says it holds no such lock, then takes it back once it expired: the preimage it was shown in time
      // (the payee paid for it downstream, or sold its goods) would be free.
      const l = { ...lock, payer: role === 'hub' ? ('device' as const) : ('hub' as const) };
      const payee = online(role, { latest: { state: lockedState(1n, [l]) }, locks: [l], signedVersion: 1n });
      const c = run(payee, { type: 'claim', ref: 4, hash: l.hash, preimage: preimage(9) });
      const id = frame(c, 'claim').id;
      const r = run(c.channel, { type: 'peer-reject', id, code: 'UNKNOWN_LOCK' });
      expect(rejected(r)).toEqual([[4, 'UNKNOWN_LOCK']]);
      const back = lockedState(2n, []);
      const payer = role === 'hub' ? 'device' : 'hub';
      const ret = run(r.channel, peerUpdateOf(back, payer, { unlock: { hash: l.hash } }), 2_001_000);
      expect(frame(ret, 'reject').code).toBe('LOCK_CLAIMED');
      expect(ret.channel.latest).toBe(r.channel.latest);
    },
  );

  it('past the expiry, the hub’s own claim stands only if its preimage was revealed on-chain by then', () => {
    const l = { ...lock, payer: 'device' as const };
    const payee = online('hub', { latest: { state: lockedState(1n, [l]) }, locks: [l], signedVersion: 1n });
    const late = { type: 'claim', ref: 5, hash: l.hash, preimage: preimage(9) } as const;
    expect(rejected(run(payee, late, 2_001_000))).toEqual([[5, 'LOCK_EXPIRED']]);
    expect(rejected(run(payee, { ...late, revealedAt: 2_001n }, 2_001_000))).toEqual([[5, 'LOCK_EXPIRED']]);
    const inTime = run(payee, { ...late, revealedAt: 2_000n }, 2_001_000);
    expect(rejected(inTime)).toEqual([]);
    expect(frame(inTime, 'claim')).toMatchObject({ unlock: { hash: l.hash, preimage: preimage(9) } });
    const ret = run(
      inTime.channel,
      peerUpdateOf(lockedState(2n, []), 'device', { unlock: { hash: l.hash } }),
      2_001_000,
    );
    expect(frame(ret, 'reject').code).toBe('LOCK_CLAIMED');
  });

  it.each(['RATE_LIMITED', 'STORE_FAILURE'] as const)(
    '%s (a passing refusal) keeps the claim without its caller, sent again after the next sync',
    (code) => {
      const c = claimed();
      const id = frame(c, 'claim').id;
      const r = run(c.channel, { type: 'peer-reject', id, code });
      expect(rejected(r)).toEqual([[4, code]]);
      expect(r.channel.claims).toEqual([expect.objectContaining({ ref: -1, hash: lock.hash })]);
      const back = run(run(r.channel, { type: 'disconnected' }).channel, { type: 'connected' });
      const resync = run(back.channel, { type: 'peer-sync', id: 1, latest: back.channel.latest });
      expect(frame(resync, 'claim')).toMatchObject({ id, unlock: { hash: lock.hash } });
    },
  );

  it('LOCK_EXPIRED (our claim reached it late) keeps the claim, without a caller; a second refusal answers nobody', () => {
    const c = claimed();
    const id = frame(c, 'claim').id;
    const r = run(c.channel, { type: 'peer-reject', id, code: 'LOCK_EXPIRED' });
    expect(rejected(r)).toEqual([[4, 'LOCK_EXPIRED']]);
    expect(r.channel.claims).toEqual([expect.objectContaining({ ref: -1, hash: lock.hash })]);
    const again = run(r.channel, { type: 'peer-reject', id, code: 'LOCK_EXPIRED' });
    expect(again.effects).toEqual([]);
    expect(waitingRefs(again.channel)).toEqual([]);
    // A refusal for an id nobody waits on changes nothing.
    const stray = run(r.channel, { type: 'peer-reject', id: 999, code: 'STALE_VERSION' });
    expect(stray.channel).toBe(r.channel);
  });
});

describe('hub lock transitions the device must refuse, channel unchanged', () => {
  const lock = hubLock(11, 60n, 3_000n);
  const wire = { amount: lock.amount, hash: lock.hash, expiry: lock.expiry };
  const addState = lockedState(1n, [lock]);
  const offer = (s: State, extra: Partial<PeerUpdate>, key = hubKey): EngineEvent => ({
    type: 'peer-updates',
    updates: [{ id: 21, state: s, sig: signAs(key, s), ...extra }],
  });
  const refusal = (ch: EngineChannel, ev: EngineEvent) => {
    const r = run(ch, ev);
    expect(r.channel.latest).toBe(ch.latest);
    expect(r.channel.locks).toBe(ch.locks);
    return frame(r, 'reject').code;
  };

  it('a lock add crossing a payment of ours in flight, or ours crossing a credit: STALE_VERSION', () => {
    const paying = run(online('device'), pay(1, 5n)).channel;
    expect(refusal(paying, offer(lockedState(2n, [lock]), { lock: wire }))).toBe('STALE_VERSION');
    const locking = run(online('device'), {
      type: 'pay',
      pays: [{ ref: 2, amount: 5n, lock: { hash: hubLock(12).hash, expiry: 3_000n } }],
    }).channel;
    expect(locking.proposals[0]?.op?.kind).toBe('add');
    expect(refusal(locking, offer({ ...Z, version: 2n, paidByHub: 5n }, {}))).toBe('STALE_VERSION');
  });

  it('both a lock and an unlock, a wrong preimage, a signature not the hub’s, a version already signed', () => {
    const dev = online('device');
    expect(refusal(dev, offer(addState, { lock: wire, unlock: { hash: lock.hash } }))).toBe('MALFORMED');
    expect(refusal(dev, offer(addState, { lock: wire }, malloryKey))).toBe('BAD_SIGNATURE');
    expect(refusal(online('device', { signedVersion: 5n }), offer(addState, { lock: wire }))).toBe('STALE_VERSION');
    const holding = online('device', { latest: { state: addState }, locks: [lock], signedVersion: 1n });
    const claimState = { ...Z, version: 2n, paidByHub: 60n };
    expect(refusal(holding, offer(claimState, { unlock: { hash: lock.hash, preimage: preimage(99) } }))).toBe(
      'BAD_PREIMAGE',
    );
  });

  it('a copy of the hub’s lock add the device already countersigned is acked again; without its signature, answered by nothing', () => {
    const dev = online('device');
    const r1 = run(dev, offer(addState, { lock: wire }));
    const ack = frame(r1, 'ack');
    const again = run(r1.channel, offer(addState, { lock: wire }));
    expect(frame(again, 'ack').sig).toEqual(ack.sig);
    expect(again.channel).toBe(r1.channel);
    const unsigned = online('device', {
      latest: { state: addState, hubSig: signatureToHex(signAs(hubKey, addState)) },
      locks: [lock],
      signedVersion: 1n,
    });
    const quiet = run(unsigned, offer(addState, { lock: wire }));
    expect(sent(quiet)).toEqual([]);
    expect(quiet.channel).toBe(unsigned);
  });
});

describe('the hub takes a device lock add it already holds as a duplicate', () => {
  it('acked again with the same countersignature, nothing persisted', () => {
    const lock: Lock = { ...hubLock(13, 30n, 3_000n), payer: 'device' };
    const s = lockedState(1n, [lock]);
    const hub = online('hub', {
      latest: { state: s, deviceSig: signatureToHex(signAs(deviceKey, s)), hubSig: signatureToHex(signAs(hubKey, s)) },
      locks: [lock],
      signedVersion: 1n,
    });
    const r = run(hub, {
      type: 'peer-updates',
      updates: [{ id: 3, state: s, sig: signAs(deviceKey, s), lock: { amount: 30n, hash: lock.hash, expiry: 3_000n } }],
    });
    expect(frame(r, 'ack').version).toBe(1n);
    expect(persistOf(r)).toBeUndefined();
    expect(r.channel.latest).toBe(hub.latest);
  });
});

describe('a lock pipelined after plain payments, and expiries already being proposed', () => {
  it('plain payments go in one state, the lock in the next one', () => {
    const r = run(online('device'), {
      type: 'pay',
      pays: [
        { ref: 1, amount: 5n },
        { ref: 2, amount: 7n },
        { ref: 3, amount: 9n, lock: { hash: hubLock(14).hash, expiry: 3_000n } },
      ],
    });
    const ups = sent(r).filter((m): m is Extract<Message, { t: 'update' }> => m.t === 'update');
    expect(ups.map((u) => [u.state.version, u.state.paidByDevice, u.state.lockedByDevice])).toEqual([
      [1n, 12n, 0n],
      [2n, 12n, 9n],
    ]);
    expect(ups[1]!.lock?.hash).toBe(hubLock(14).hash);
  });

  it('a hub whose own lock expired proposes its return once, behind a credit already in flight', () => {
    const lock = hubLock(15, 20n, 2_000n);
    const s = lockedState(1n, [lock]);
    const hub = online('hub', { latest: { state: s }, locks: [lock], signedVersion: 1n });
    const credit = run(hub, { type: 'credit', ref: 1, amount: 3n });
    expect(credit.channel.proposals).toHaveLength(1);
    const t1 = run(credit.channel, { type: 'tick' }, 2_001_000);
    expect(t1.channel.queue.map((q) => q.unlock?.hash)).toEqual([lock.hash]); // waits behind the credit
    const t2 = run(t1.channel, { type: 'tick' }, 2_002_000);
    expect(t2.channel.queue).toHaveLength(1);
    const solo = run(hub, { type: 'tick' }, 2_001_000);
    expect(solo.channel.proposals[0]?.op).toEqual({ kind: 'expire', hash: lock.hash });
    const again = run(solo.channel, { type: 'tick' }, 2_002_000);
    expect(again.channel.proposals).toHaveLength(1);
    expect(again.channel.queue).toEqual([]);
  });
});

describe('own lock transitions whose ack was lost, adopted from the sync reply', () => {
  it('a lock add behind a plain payment: both resolve once, the lock list comes from our own proposal', () => {
    const dev = online('device');
    const hub = online('hub');
    const r = run(dev, {
      type: 'pay',
      pays: [
        { ref: 1, amount: 5n },
        { ref: 2, amount: 8n, lock: { hash: hubLock(16).hash, expiry: 3_000n } },
      ],
    });
    const [u1, u2] = sent(r).filter((m): m is Extract<Message, { t: 'update' }> => m.t === 'update');
    const h1 = deliver(hub, u1!);
    const h2 = run(h1.channel, {
      type: 'peer-updates',
      updates: [{ id: u2!.id, state: u2!.state, sig: u2!.sig, lock: u2!.lock }],
    });
    expect(frame(h2, 'ack').version).toBe(2n); // both acks are lost
    const back = run(run(r.channel, { type: 'disconnected' }).channel, { type: 'connected' }).channel;
    const s = run(back, { type: 'peer-sync', id: 1, latest: h2.channel.latest });
    expect(s.channel.latest.state).toEqual(u2!.state);
    expect(s.channel.locks).toEqual(h2.channel.locks);
    expect(s.channel.proposals).toEqual([]);
    expect(resolvedRefs(s).sort()).toEqual([1, 2]);
  });

  it('the return of our expired lock: adopted as refunded, by our own transition', () => {
    const lock: Lock = { ...hubLock(17, 12n, 2_000n), payer: 'device' };
    const s1 = lockedState(1n, [lock]);
    const both: SignedState = {
      state: s1,
      deviceSig: signatureToHex(signAs(deviceKey, s1)),
      hubSig: signatureToHex(signAs(hubKey, s1)),
    };
    const late = 2_001_000;
    const dev = online('device', { latest: both, locks: [lock], signedVersion: 1n });
    const t = run(dev, { type: 'tick' }, late);
    const up = frame(t, 'update');
    expect(up.unlock).toEqual({ hash: lock.hash });
    const hub = online('hub', { latest: both, locks: [lock], signedVersion: 1n });
    const h = run(
      hub,
      { type: 'peer-updates', updates: [{ id: up.id, state: up.state, sig: up.sig, unlock: up.unlock }] },
      late,
    );
    expect(frame(h, 'ack').version).toBe(2n); // lost
    const s = run(t.channel, { type: 'peer-sync', id: 1, latest: h.channel.latest }, late);
    expect(s.channel.latest.state.version).toBe(2n);
    expect(s.channel.locks).toEqual([]);
    expect(only(s, 'lock-settled')).toEqual([expect.objectContaining({ lock, outcome: 'refunded' })]);
    expect(s.channel.proposals).toEqual([]);
  });
});
