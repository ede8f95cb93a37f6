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
  waitingRefs,
  type EngineChannel,
  type EngineCrypto,
  type EngineEffect,
  type EngineEvent,
  type EngineRestore,
  type PeerUpdate,
  type StepResult,
} from './engine.js';
import { nobleSigner, nobleVerifier, signatureFromHex, signatureToHex, type Signer } from './signer.js';
import { MAX_UINT256, type Address, type Bytes32, type ChannelParams, type Funding, type Role, type SignedState, type State } from './types.js';
import type { Message, RouteInstruction } from './codec.js';
import type { ErrorCode } from './errors.js';

const deviceKey = nobleSigner('0x' + '11'.repeat(32));
const hubKey = nobleSigner('0x' + '22'.repeat(32));
const malloryKey = nobleSigner('0x' + '33'.repeat(32));
const payee = nobleSigner('0x' + '44'.repeat(32)).address;
const params: ChannelParams = {
  chainId: 31337n,
  adjudicator: '0x5FbDB2315678afecb367f032d93F642f64180aa3' as Address,
  device: deviceKey.address,
  hub: hubKey.address,
  token: '0x0000000000000000000000000000000000000000' as Address,
  challengeDuration: 3600n,
  salt: ('0x' + '00'.repeat(32)) as Bytes32,
};
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
const run = (ch: EngineChannel, ev: EngineEvent, now = NOW): StepResult => step(ch, ev, { crypto: cryptos[ch.role], now });

function make(role: Role, o: Partial<EngineRestore> = {}): EngineChannel {
  return createEngineChannel({ role, ctx, latest: { state: Z }, signedVersion: 0n, needsSync: false, ...o });
}
/** A party whose peer is connected (a device that has already resynced). */
const online = (role: Role, o: Partial<EngineRestore> = {}): EngineChannel => run(make(role, o), { type: 'connected' }).channel;

const sent = (r: StepResult): Message[] => r.effects.flatMap((e) => (e.type === 'send' ? [e.msg] : []));
function only<T extends EngineEffect['type']>(r: StepResult, type: T): Extract<EngineEffect, { type: T }>[] {
  return r.effects.filter((e): e is Extract<EngineEffect, { type: T }> => e.type === type);
}
const persistOf = (r: StepResult) => (r.effects[0]?.type === 'persist' ? r.effects[0] : undefined);
function frame<T extends Message['t']>(r: StepResult, t: T, k = 0): Extract<Message, { t: T }> {
  const m = sent(r).filter((x) => x.t === t)[k];
  if (!m) throw new Error(`no ${t} frame in ${JSON.stringify(r.effects.map((e) => e.type + (e.type === 'send' ? ':' + e.msg.t : '')))}`);
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
        ? { type: 'peer-updates', updates: [{ id: msg.id, state: msg.state, sig: msg.sig, route: msg.route, escrowFor: msg.paymentId }] }
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
const pay = (ref: number, amount: bigint, extra: { route?: RouteInstruction; escrowFor?: Bytes32 } = {}): EngineEvent => ({ type: 'pay', pays: [{ ref, amount, ...extra }] });
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
    // The device's own payment is written behind: the hub commits it before acking.
    expect(persistOf(r1)).toEqual({ type: 'persist', gate: false, writes: [] });
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

    const r3 = deliver(r1.channel, ack);
    expect(persistOf(r3)?.gate).toBe(false);
    const [res] = only(r3, 'resolve');
    expect(res).toMatchObject({ ref: 1, amount: 100n });
    expectFullySigned(res!.state);
    expect(sameState(r3.channel.latest.state, r2.channel.latest.state)).toBe(true);
    expect(r3.channel.proposals).toEqual([]);
    expect(settledBalance(r3.channel)).toBe(FUNDING.device - 100n);
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
    expect(persistOf(r3)).toEqual({ type: 'persist', gate: true, writes: [{ kind: 'credited', paymentId: id32(9), version: 1n }] });
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
    const r = run(online('device'), { type: 'pay', pays: [{ ref: 1, amount: 1n }, { ref: 2, amount: 2n }, { ref: 3, amount: 3n }] });
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
    const updates: PeerUpdate[] = ups.map((m) => (toEvent(m, 'hub') as Extract<EngineEvent, { type: 'peer-updates' }>).updates[0]!);
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
    const r = run(online('device'), { type: 'pay', pays: [{ ref: 1, amount: 1n }, { ref: 2, amount: 5n, route }, { ref: 3, amount: 2n }] });
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
    expect(sameState(d4.channel.latest.state, h4.channel.latest.state)).toBe(true);
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
    const backlog = [...sent(d1), ...sent(d2)].map((m) => (toEvent(m, 'hub') as Extract<EngineEvent, { type: 'peer-updates' }>).updates[0]!);
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
    expect(rejected(r)).toEqual([[9, 'EQUIVOCATION']]);
    expect(r.channel.proposals).toEqual([]);
  });

  it('a credit refused on the merits fails its caller at once', () => {
    const r0 = run(online('hub'), { type: 'credit', ref: 9, amount: 5n });
    const r = run(r0.channel, { type: 'peer-reject', id: frame(r0, 'update').id, code: 'BAD_ROUND', message: 'no' });
    expect(rejected(r)).toEqual([[9, 'BAD_ROUND']]);
    expect(persistOf(r)?.gate).toBe(true); // the outstanding proposal leaves the record
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
    expect(r.channel.latest.state.version).toBe(3n);
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

  it('an ack not signed by the peer is refused, channel unchanged', () => {
    const { dev, acks } = threeAcked();
    const forged = { ...acks[2]!, sig: signAs(malloryKey, dev.proposals[2]!.state) };
    const r = deliver(dev, forged);
    expect(r.channel).toBe(dev);
    expect(refusedCode(r)).toBe('BAD_SIGNATURE');
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
    expect(persistOf(hs)).toMatchObject({ gate: true, writes: [{ kind: 'credited', paymentId: id32(4), version: 1n }] });
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
  readonly records: { role: Role; channel: EngineChannel; peer: EngineChannel; signed: Record<Role, Map<bigint, string>>; outcome: Map<number, Outcome> }[] = [];
  persists = 0;
  failed: { role: Role; event: EngineEvent['type'] } | undefined;

  constructor(
    public dev: EngineChannel,
    public hub: EngineChannel,
    public failAt = -1,
    signed?: Record<Role, Map<bigint, string>>,
  ) {
    this.signed = signed ? { device: new Map(signed.device), hub: new Map(signed.hub) } : { device: new Map(), hub: new Map() };
  }

  party(role: Role): EngineChannel {
    return role === 'device' ? this.dev : this.hub;
  }

  step(role: Role, ev: EngineEvent): void {
    const before = this.party(role);
    const snapshot = structuredClone(before);
    const signing: Uint8Array[] = [];
    const base = cryptos[role];
    const crypto: EngineCrypto = { digest: base.digest, recover: base.recover, sign: (d) => (signing.push(d), base.sign(d)) };
    const r = step(before, ev, { crypto, now: this.now });
    // The engine never changes the channel it was given: a discarded step leaves nothing behind.
    expect(before).toEqual(snapshot);
    const p = persistOf(r);
    if (p && this.persists++ === this.failAt) {
      this.failed = { role, event: ev.type };
      this.discarded(role, ev);
      return;
    }
    for (const d of signing) {
      const s = r.channel.proposals.find((x) => toHexDigest(x.state) === hexOf(d))?.state ?? r.channel.latest.state;
      const known = this.signed[role].get(s.version);
      expect(known === undefined || known === hexOf(d), `${role} signed two different states at version ${s.version}`).toBe(true);
      this.signed[role].set(s.version, hexOf(d));
    }
    if (role === 'device') this.dev = r.channel;
    else this.hub = r.channel;
    if (p) this.records.push({ role, channel: r.channel, peer: this.party(role === 'device' ? 'hub' : 'device'), signed: { device: new Map(this.signed.device), hub: new Map(this.signed.hub) }, outcome: new Map([...this.outcome].map(([k, v]) => [k, v.status])) });
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
    for (const id of ids) this.net.push({ to, msg: { t: 'reject', id, channelId: ctx.channelId, code: 'STORE_FAILURE', message: 'store failed', latest } });
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

  /** Both hold the same state, and it holds exactly what resolved: nothing lost, nothing twice, nothing refused. */
  expectConsistent(orphansAllowed = false): void {
    expect(sameState(this.dev.latest.state, this.hub.latest.state)).toBe(true);
    let paid = 0n;
    let credited = 0n;
    let orphanPaid = 0n;
    let orphanCredited = 0n;
    for (const [ref, o] of this.outcome) {
      if (!orphansAllowed) expect(o.status, `ref ${ref}`).not.toBe('pending');
      if (o.status === 'resolved') o.role === 'device' ? (paid += o.amount) : (credited += o.amount);
      if (o.status === 'pending' || o.status === 'orphaned') o.role === 'device' ? (orphanPaid |= o.amount) : (orphanCredited |= o.amount);
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

  it.each(Array.from({ length: n }, (_, k) => k))('persist #%i fails: the step is discarded, nothing leaks, and after healing nothing is lost or paid twice', (k) => {
    const w = new Pair(make('device', { needsSync: true }), make('hub'), k);
    scenario(w);
    expect(w.failed).toBeDefined();
    w.heal();
    w.expectConsistent();
  });
});

describe('restart from every record the engine asked to persist', () => {
  const clean = fresh();
  scenario(clean);

  /** Rebuild a party from the fields its shell stores (what `recordOf` in the hub and the client keep). */
  function restart(ch: EngineChannel): EngineChannel {
    const out = ch.role === 'hub' ? ch.proposals[0] : undefined;
    return createEngineChannel({
      role: ch.role,
      ctx: { ...ctx, funding: ch.ctx.funding },
      status: ch.status,
      latest: ch.latest,
      signedVersion: ch.signedVersion,
      outgoing: out ? { state: out.state, sig: out.sig, paymentId: out.credit?.paymentId, ref: -1 } : undefined,
      needsSync: true,
    });
  }

  it.each(clean.records.map((r, k) => [k, r.role] as const))('record #%i (%s): the restarted party resyncs, signs no version twice, and the channel goes on', (k) => {
    const rec = clean.records[k]!;
    const restored = restart(rec.channel);
    expect(restored.latest).toBe(rec.channel.latest);
    expect(restored.signedVersion).toBe(rec.channel.signedVersion);
    if (rec.role === 'hub') expect(restored.proposals.map((p) => p.sig)).toEqual(rec.channel.proposals.slice(0, 1).map((p) => p.sig));
    const w = rec.role === 'device' ? new Pair(restored, rec.peer, -1, rec.signed) : new Pair(rec.peer, restored, -1, rec.signed);
    // The callers of the process that died never hear back; those of the other one must.
    for (const [ref, status] of rec.outcome) {
      const o = clean.outcome.get(ref)!;
      w.outcome.set(ref, { role: o.role, amount: o.amount, status: status === 'pending' ? (o.role === rec.role ? 'orphaned' : 'pending') : status });
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
  });
});
