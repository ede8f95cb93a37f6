/**
 * Model test of the channel engine (issue #14, "Tests without sockets or processes"): random event sequences over a
 * device and a hub joined by a simulated network that reorders, duplicates and drops messages, with random persist
 * failures (the step is discarded, as the shells do), random crashes (a party is rebuilt from its last durable
 * record; the device's write-behind records may be lost) and random disconnects. After every step:
 *
 * - no payment a caller saw resolved is lost, and none is paid twice (every pay and credit has a distinct power of
 *   two as its amount, so a cumulative counter names exactly the payments it holds);
 * - no party signs two different states at one version (within one life of a party, every signature it makes;
 *   across a crash, every signature the peer ever received);
 * - balances sum to the deposits (payouts of each party's latest fully signed state);
 * - versions never go down (the hub's; the device's within one life and in its durable record).
 *
 * Then the network heals (no more failures, drops or crashes) and every caller still alive must get an answer, both
 * parties must hold the same latest state, and it must hold exactly the resolved payments (plus, possibly, those
 * whose caller died in a crash).
 *
 * Crypto: the real @noble/secp256k1 signs ~2,800 and recovers ~340 digests per second here, far too slow for 10,000
 * sequences, so THIS FILE ONLY uses a fast deterministic fake: the digest is the real EIP-712 `stateDigest`, a
 * "signature" is digest ‖ 32 bytes naming the key ‖ v, and recovery returns the named key's address when the digest
 * matches (an unrelated address otherwise). The unit tests (engine.test.ts) use real secp256k1.
 *
 * The network reorders freely (both directions, any message), drops single messages, and duplicates any message
 * but a `sync`, with one limit: no copy of a proposal arrives after its receiver refused it (see `refusedDelivery`).
 * A connection break or a crash drops everything in flight on it.
 *
 * KNOWN GAP (not asserted, reported to the lead): the device writes its own proposals behind. If the hub refused a
 * device proposal at version v (a crossing, a STORE_FAILURE) and the device then crashes before that write, the
 * restarted device resyncs to the hub's latest (below v) and may sign a different state at v. The hub then holds two
 * device-signed states at v, and could countersign the older one. So across device lives the signature check is:
 * no two different fully signed states at one version, ever; and the hub never receives two different states signed
 * by the hub at one version.
 *
 * Runs: 10,000 sequences by default; TRICKLE_MODEL_RUNS and TRICKLE_MODEL_SEED set the count and the seed, and
 * TRICKLE_MODEL_PATH (with the seed) replays one failing sequence. The long manual run (1,000,000) goes in chunks
 * with their own seeds: `node scripts/model-long.mjs` (see the protocol package's README).
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { channelContext, payouts, sameState, zeroState, type ChannelContext } from './channel.js';
import { stateDigest } from './eip712.js';
import {
  createEngineChannel,
  step,
  type EngineChannel,
  type EngineRestore,
  type EngineCrypto,
  type EngineEffect,
  type EngineEvent,
  type EngineStatus,
} from './engine.js';
import { deviceRules } from './engine-device.js';
import { hubRules } from './engine-hub.js';
import { toHex } from './hex.js';
import { signatureFromHex } from './signer.js';
import type { Message } from './codec.js';
import type { Address, ChannelParams, Funding, Role, SignatureHex, SignedState, State } from './types.js';

/** A channel built with its role's rules, as a hub or device shell builds it. */
const createChannel = (r: EngineRestore): EngineChannel =>
  createEngineChannel(r, r.role === 'hub' ? hubRules : deviceRules);

const DEVICE = '0x1111111111111111111111111111111111111111' as Address;
const HUB = '0x2222222222222222222222222222222222222222' as Address;
const NOBODY = '0x3333333333333333333333333333333333333333' as Address;
const params: ChannelParams = {
  chainId: 31337n,
  adjudicator: '0x5FbDB2315678afecb367f032d93F642f64180aa3' as Address,
  device: DEVICE,
  hub: HUB,
  token: '0x0000000000000000000000000000000000000000' as Address,
  challengeDuration: 3600n,
  salt: ('0x' + '00'.repeat(32)) as never,
};
/** Each side can pay its first 60 payments (amounts 2^0 … 2^59); a later one is refused INSUFFICIENT_FUNDS, which the model allows. */
const FUNDING: Funding = { device: 1n << 60n, hub: 1n << 60n };
const CTX: ChannelContext = channelContext(params, FUNDING);

// ---------- fake crypto (see the module doc) ----------

const digests = new WeakMap<State, Uint8Array>();
/** Digest hex → the state it was computed from (to know the version a signature is for). */
const stateOfDigest = new Map<string, State>();
const TAG: Record<Role, number> = { device: 0xd1, hub: 0x4b };

function fakeDigest(s: State): Uint8Array {
  let d = digests.get(s);
  if (!d) {
    d = stateDigest(CTX.separator, s);
    digests.set(s, d);
    if (stateOfDigest.size > 100_000) stateOfDigest.clear();
    stateOfDigest.set(toHex(d), s);
  }
  return d;
}

function fakeSig(role: Role, d: Uint8Array): Uint8Array {
  const sig = new Uint8Array(65);
  sig.set(d, 0);
  sig.fill(TAG[role], 32, 64);
  sig[64] = 27;
  return sig;
}

function fakeRecover(d: Uint8Array, sig: Uint8Array): Address {
  for (let i = 0; i < 32; i++) if (sig[i] !== d[i]) return NOBODY;
  return sig[32] === TAG.device ? DEVICE : sig[32] === TAG.hub ? HUB : NOBODY;
}

/** Who signed `sig` and over which digest (hex), per the fake scheme. */
function signerOf(sig: Uint8Array): { role: Role; digest: string } | undefined {
  const role = sig[32] === TAG.device ? 'device' : sig[32] === TAG.hub ? 'hub' : undefined;
  return role ? { role, digest: toHex(sig.subarray(0, 32)) } : undefined;
}

// ---------- the simulated world ----------

/** What a party's store holds: the fields the shells persist. */
interface DurableRecord {
  readonly latest: SignedState;
  readonly signedVersion: bigint;
  readonly funding: Funding;
  readonly status: EngineStatus;
  readonly outgoing?: { readonly state: State; readonly sig: SignatureHex; readonly paymentId?: never } | undefined;
}

function recordOf(ch: EngineChannel): DurableRecord {
  const out = ch.role === 'hub' ? ch.proposals[0] : undefined;
  return {
    latest: ch.latest,
    signedVersion: ch.signedVersion,
    funding: ch.ctx.funding,
    status: ch.status,
    outgoing: out ? { state: out.state, sig: out.sig! } : undefined,
  };
}

function restore(role: Role, r: DurableRecord | undefined): EngineChannel {
  return createChannel({
    role,
    ctx: { ...CTX, funding: r?.funding ?? FUNDING },
    status: r?.status,
    latest: r?.latest ?? { state: zeroState(CTX.channelId) },
    signedVersion: r?.signedVersion ?? 0n,
    outgoing: r?.outgoing ? { state: r.outgoing.state, sig: r.outgoing.sig, ref: -1 } : undefined,
    needsSync: true,
    config: { maxInFlight: 3, yieldMs: 50, maxCreditRetries: 30 },
  });
}

type Status = 'pending' | 'resolved' | 'rejected' | 'orphaned';

interface Party {
  readonly role: Role;
  ch: EngineChannel;
  durable: DurableRecord | undefined;
  /** A write-behind record not yet on disk. */
  behind: boolean;
  life: number;
  /** Highest durable version (never goes down). */
  durableVersion: bigint;
}

interface InFlight {
  readonly from: Role;
  readonly msg: Message;
  readonly conn: number;
}

class Violation extends Error {}

function check(cond: boolean, what: string, details?: () => unknown): asserts cond {
  if (!cond)
    throw new Violation(
      `${what}${details ? ': ' + JSON.stringify(details(), (_k, v) => (typeof v === 'bigint' ? v.toString() : v)) : ''}`,
    );
}

/** Bits set in a counter: which payments (distinct powers of two) it holds. */
const has = (counter: bigint, amount: bigint): boolean => amount !== 0n && (counter & amount) === amount;

class World {
  now = 1_000;
  readonly device: Party = {
    role: 'device',
    ch: restore('device', undefined),
    durable: undefined,
    behind: false,
    life: 0,
    durableVersion: 0n,
  };
  readonly hub: Party = {
    role: 'hub',
    ch: restore('hub', undefined),
    durable: undefined,
    behind: false,
    life: 0,
    durableVersion: 0n,
  };
  link = false;
  conn = 0;
  net: InFlight[] = [];
  /** Device pays and hub credits by ref: amount and what the caller saw. */
  readonly pays = new Map<number, { amount: bigint; status: Status }>();
  readonly credits = new Map<number, { amount: bigint; status: Status }>();
  readonly closes = new Map<number, Status>();
  nextRef = 1;
  nextPayBit = 0n;
  nextCreditBit = 0n;
  /** Signatures made, per signer: version → digest → lives it was made in. */
  readonly signed: Record<Role, Map<bigint, Map<string, Set<number>>>> = { device: new Map(), hub: new Map() };
  /** Signatures the peer received, per signer: version → digests. */
  readonly seen: Record<Role, Map<bigint, Set<string>>> = { device: new Map(), hub: new Map() };
  /** The message being delivered, if any. */
  delivering: Message | undefined;
  /** Fully signed states seen in either party's latest: version → digest. */
  readonly fullySigned = new Map<bigint, string>();
  /** Digests signed in the step being run (released only if the step is adopted). */
  signing: Uint8Array[] = [];
  /** Persist outcome for the next persisting step: true = fail. */
  failNext = false;
  readonly log: string[] = [];

  party(role: Role): Party {
    return role === 'device' ? this.device : this.hub;
  }

  cryptoOf(p: Party): EngineCrypto {
    return {
      digest: fakeDigest,
      sign: (d) => {
        this.signing.push(d);
        return fakeSig(p.role, d);
      },
      recover: fakeRecover,
    };
  }

  /** Step one party the way its shell does: persist first; a failed persist discards the step. */
  step(p: Party, ev: EngineEvent): void {
    this.signing = [];
    const r = step(p.ch, ev, { crypto: this.cryptoOf(p), now: this.now });
    const persist = r.effects[0]?.type === 'persist' ? r.effects[0] : undefined;
    this.log.push(
      `${p.role} ${ev.type}${persist ? (persist.gate ? ' [gated]' : ' [behind]') : ''} -> ${r.effects.map((e) => e.type + (e.type === 'send' ? ':' + e.msg.t : '')).join(',')}`,
    );
    if (persist?.gate) {
      // A write-behind is not awaited (its failure only loses the record, see flush); a gated one is.
      const fail = this.failNext;
      this.failNext = false;
      if (fail) {
        this.log.push(`  persist failed: step discarded`);
        this.discarded(p, ev);
        return;
      }
    }
    // Nothing of the step takes effect before its persist: a gated write makes the record durable now; a
    // write-behind (device's own payments) is durable only after a later flush or gated write.
    if (persist?.gate) this.makeDurable(p, r.channel);
    else if (persist) p.behind = true;
    else {
      const a = recordOf(p.ch);
      const b = recordOf(r.channel);
      check(
        a.latest === b.latest &&
          a.signedVersion === b.signedVersion &&
          a.outgoing?.sig === b.outgoing?.sig &&
          a.status === b.status &&
          a.funding === b.funding,
        `${p.role} ${ev.type}: the record changed without a persist effect`,
      );
    }
    this.checkStepLocal(p, r.channel);
    // The step is adopted: what it signed is out (sent or recorded).
    for (const d of this.signing) this.recordSignature(p, d);
    p.ch = r.channel;
    const m = this.delivering;
    if (m && r.effects.some((e) => e.type === 'send' && e.msg.t === 'reject' && 'id' in m && e.msg.id === m.id))
      this.refusedDelivery();
    for (const e of r.effects) this.act(p, e);
    this.checkInvariants();
  }

  recordSignature(p: Party, d: Uint8Array): void {
    const s = stateOfDigest.get(toHex(d));
    check(s !== undefined, 'signed an unknown digest');
    let byDigest = this.signed[p.role].get(s.version);
    if (!byDigest) this.signed[p.role].set(s.version, (byDigest = new Map()));
    const hex = toHex(d);
    let lives = byDigest.get(hex);
    if (!lives) byDigest.set(hex, (lives = new Set()));
    lives.add(p.life);
  }

  makeDurable(p: Party, ch: EngineChannel): void {
    const rec = recordOf(ch);
    check(rec.latest.state.version >= p.durableVersion, `${p.role}: durable version went down`, () => [
      rec.latest.state.version,
      p.durableVersion,
    ]);
    p.durable = rec;
    p.durableVersion = rec.latest.state.version;
    p.behind = false;
  }

  /** The shell's answer to a discarded step: STORE_FAILURE to its callers and to the peer for its messages. */
  discarded(p: Party, ev: EngineEvent): void {
    if (ev.type === 'pay') for (const x of ev.pays) this.answer(this.pays, x.ref, 'rejected');
    if (ev.type === 'credit') this.answer(this.credits, ev.ref, 'rejected');
    if (ev.type === 'close') this.answerClose(ev.ref, 'rejected');
    const reject = (id: number) =>
      this.send(p, {
        t: 'reject',
        id,
        channelId: CTX.channelId,
        code: 'STORE_FAILURE',
        message: 'store failed',
        latest: p.ch.latest,
      });
    if (ev.type === 'peer-updates') for (const u of ev.updates) reject(u.id);
    if (ev.type === 'peer-close') reject(ev.id);
    if (ev.type === 'peer-updates' || ev.type === 'peer-close') this.refusedDelivery();
  }

  /**
   * The network duplicates frames, but delivers no copy of a proposal after the receiver refused it (a reject frame,
   * STORE_FAILURE included): the sender has already failed that proposal's callers on the strength of the reject, so a
   * copy accepted later would pay them anyway. Nothing in a proposal lets the receiver tell a copy from the original
   * once it has refused it (ids are per sender and not remembered); TCP never duplicates a frame, and the engine's own
   * resends never resend a refused proposal.
   */
  refusedDelivery(): void {
    const m = this.delivering;
    if (!m || (m.t !== 'update' && m.t !== 'close')) return;
    const same = (x: Message) => x === m || (x.t === m.t && x.id === m.id && sameState(x.state, m.state));
    this.net = this.net.filter((x) => !same(x.msg));
  }

  answer(
    map: Map<number, { amount: bigint; status: Status }>,
    ref: number,
    status: 'resolved' | 'rejected',
    state?: SignedState,
  ): void {
    const x = map.get(ref);
    if (!x) return; // a restored hub credit (ref -1) has no caller
    check(x.status === 'pending', `ref ${ref} answered twice or after its caller died`, () => [x.status, status]);
    x.status = status;
    if (status === 'resolved' && state && x.amount > 0n) {
      const counter = map === this.pays ? state.state.paidByDevice : state.state.paidByHub;
      check(has(counter, x.amount), `ref ${ref} resolved with a state that does not hold it`, () => [
        x.amount,
        counter,
      ]);
    }
  }

  answerClose(ref: number, status: 'resolved' | 'rejected'): void {
    const x = this.closes.get(ref);
    if (x === undefined) return;
    check(x === 'pending', `close ${ref} answered twice`);
    this.closes.set(ref, status);
  }

  act(p: Party, e: EngineEffect): void {
    switch (e.type) {
      case 'send':
        this.send(p, e.msg);
        break;
      case 'resolve':
        if (p.role === 'device' && this.closes.has(e.ref)) this.answerClose(e.ref, 'resolved');
        else this.answer(p.role === 'device' ? this.pays : this.credits, e.ref, 'resolved', e.state);
        break;
      case 'reject':
        if (p.role === 'device' && this.closes.has(e.ref)) this.answerClose(e.ref, 'rejected');
        else this.answer(p.role === 'device' ? this.pays : this.credits, e.ref, 'rejected');
        break;
      case 'timer':
      case 'refused':
      case 'incoming':
      case 'persist':
        break;
      default:
        throw new Violation(`unexpected effect ${e.type}`);
    }
  }

  send(p: Party, msg: Message): void {
    if (this.link) this.net.push({ from: p.role, msg, conn: this.conn });
  }

  /** Deliver in-flight message `i` (mod the count); `dup` keeps a copy on the wire. */
  deliver(i: number, dup: boolean): void {
    if (this.net.length === 0) return;
    const k = i % this.net.length;
    const m = this.net[k]!;
    // One sync exchange per connection, as the shells do: a sync is never duplicated (each one resends what is in
    // flight, and a resent proposal is a new frame the refused-copy rule below cannot tell from the first).
    if (!dup || m.msg.t === 'sync') this.net.splice(k, 1);
    if (m.conn !== this.conn || !this.link) return;
    this.markSeen(m.msg);
    const to = this.party(m.from === 'device' ? 'hub' : 'device');
    const ev = toEvent(m.msg, to.role);
    this.delivering = m.msg;
    if (ev) this.step(to, ev);
    this.delivering = undefined;
  }

  markSeen(msg: Message): void {
    const sigs: Uint8Array[] = [];
    if ('sig' in msg && msg.sig instanceof Uint8Array) sigs.push(msg.sig);
    if ('latest' in msg && msg.latest) {
      if (msg.latest.deviceSig) sigs.push(signatureFromHex(msg.latest.deviceSig));
      if (msg.latest.hubSig) sigs.push(signatureFromHex(msg.latest.hubSig));
    }
    for (const sig of sigs) {
      const who = signerOf(sig);
      if (!who) continue;
      const s = stateOfDigest.get(who.digest);
      check(s !== undefined, 'a signature over an unknown digest is on the wire');
      let set = this.seen[who.role].get(s.version);
      if (!set) this.seen[who.role].set(s.version, (set = new Set()));
      set.add(who.digest);
      // The device's own proposals are written behind: after a crash that lost them it may sign another state at a
      // version the hub saw signed and refused (see KNOWN GAP in the module doc); within one life it never does (checked in
      // checkInvariants), and no two different fully signed states ever exist at one version (checked there too).
      if (who.role === 'hub')
        check(set.size <= 1, `the device received two different states signed by the hub at version ${s.version}`);
    }
  }

  drop(i: number): void {
    if (this.net.length > 0) this.net.splice(i % this.net.length, 1);
  }

  disconnect(): void {
    if (!this.link) return;
    this.link = false;
    this.net = [];
    this.step(this.device, { type: 'disconnected' });
    this.step(this.hub, { type: 'disconnected' });
  }

  /** The device reconnects: both sides see the connection, then the device sends its sync request. */
  reconnect(): void {
    if (this.link) return;
    this.link = true;
    this.conn++;
    this.step(this.hub, { type: 'connected' });
    this.step(this.device, { type: 'connected' });
    this.send(this.device, { t: 'sync', id: 0, channelId: CTX.channelId, latest: this.device.ch.latest });
  }

  crash(role: Role): void {
    const p = this.party(role);
    this.link = false;
    this.net = [];
    // Callers of the dead process never get an answer.
    if (role === 'device') {
      for (const x of this.pays.values()) if (x.status === 'pending') x.status = 'orphaned';
      for (const [ref, s] of this.closes) if (s === 'pending') this.closes.set(ref, 'orphaned');
    } else for (const x of this.credits.values()) if (x.status === 'pending') x.status = 'orphaned';
    p.life++;
    p.behind = false;
    p.ch = restore(role, p.durable);
    check(p.ch.latest.state.version === p.durableVersion, 'restored another version than the durable one');
    const other = this.party(role === 'device' ? 'hub' : 'device');
    this.step(other, { type: 'disconnected' });
  }

  flush(): void {
    if (this.device.behind) {
      if (this.failNext) {
        this.failNext = false;
        return;
      }
      this.makeDurable(this.device, this.device.ch);
    }
  }

  pay(n: number): void {
    const pays = [];
    for (let i = 0; i < n; i++) {
      const ref = this.nextRef++;
      const amount = 1n << this.nextPayBit++;
      this.pays.set(ref, { amount, status: 'pending' });
      pays.push({ ref, amount });
    }
    this.step(this.device, { type: 'pay', pays });
  }

  credit(round: boolean, zero: boolean): void {
    const ref = this.nextRef++;
    const amount = zero && round ? 0n : 1n << this.nextCreditBit++;
    this.credits.set(ref, { amount, status: 'pending' });
    this.step(this.hub, {
      type: 'credit',
      ref,
      amount,
      round: round ? this.hub.ch.latest.state.round + 1n : undefined,
    });
  }

  close(): void {
    const ref = this.nextRef++;
    this.closes.set(ref, 'pending');
    this.step(this.device, { type: 'close', ref });
  }

  tick(ms: number): void {
    this.now += ms;
    this.step(this.device, { type: 'tick' });
    this.step(this.hub, { type: 'tick' });
  }

  // ---------- invariants ----------

  /** Checks on one party's transition within one life. */
  checkStepLocal(p: Party, next: EngineChannel): void {
    const prev = p.ch;
    check(next.latest.state.version >= prev.latest.state.version, `${p.role}: latest version went down`, () => [
      prev.latest.state.version,
      next.latest.state.version,
    ]);
    check(next.signedVersion >= prev.signedVersion, `${p.role}: signed version went down`);
  }

  checkInvariants(): void {
    // One life never signs two different states at one version; the hub (which loses nothing) never does at all.
    for (const role of ['device', 'hub'] as const) {
      for (const [v, byDigest] of this.signed[role]) {
        if (byDigest.size <= 1) continue;
        const lives = new Map<number, number>();
        for (const ls of byDigest.values()) for (const l of ls) lives.set(l, (lives.get(l) ?? 0) + 1);
        for (const [l, n] of lives) check(n <= 1, `${role} signed ${n} different states at version ${v} in life ${l}`);
        check(role === 'device', `the hub signed ${byDigest.size} different states at version ${v} across restarts`);
      }
    }
    for (const p of [this.device, this.hub]) {
      const s = p.ch.latest.state;
      if (p.ch.latest.deviceSig && p.ch.latest.hubSig) {
        const d = toHex(fakeDigest(s));
        const known = this.fullySigned.get(s.version);
        check(known === undefined || known === d, `two different fully signed states at version ${s.version}`);
        this.fullySigned.set(s.version, d);
      }
      const f = p.ch.ctx.funding;
      const out = payouts(s, f);
      check(out.device + out.hub === f.device + f.hub, `${p.role}: balances do not sum to the deposits`);
      check(out.device >= 0n && out.hub >= 0n, `${p.role}: a negative payout`);
      this.checkCounters(p.role, s);
    }
    // The hub commits before it acks, so its latest holds every payment the device saw resolved.
    const hubPaid = this.hub.ch.latest.state.paidByDevice;
    for (const [ref, x] of this.pays)
      if (x.status === 'resolved')
        check(has(hubPaid, x.amount), `resolved pay ${ref} is not in the hub's latest`, () => [x.amount, hubPaid]);
    // The device countersigns a credit only once durable: every resolved credit is in the device's durable record.
    const devReceived = this.device.durable?.latest.state.paidByHub ?? 0n;
    for (const [ref, x] of this.credits)
      if (x.status === 'resolved' && x.amount > 0n)
        check(has(devReceived, x.amount), `resolved credit ${ref} is not in the device's durable record`, () => [
          x.amount,
          devReceived,
        ]);
    if (this.hub.ch.latest.state.version === this.device.ch.latest.state.version) {
      check(
        sameState(this.hub.ch.latest.state, this.device.ch.latest.state),
        'the parties hold different fully signed states at one version',
      );
    }
  }

  /** A counter holds only payments whose caller did not see them fail, each at most once. */
  checkCounters(role: Role, s: State): void {
    for (const [map, counter, what] of [
      [this.pays, s.paidByDevice, 'paidByDevice'],
      [this.credits, s.paidByHub, 'paidByHub'],
    ] as const) {
      let allowed = 0n;
      for (const x of map.values()) if (x.status !== 'rejected') allowed |= x.amount;
      check(
        (counter & ~allowed) === 0n,
        `${role}: ${what} holds a payment that was refused to its caller, or one paid twice`,
        () => [counter, allowed],
      );
    }
  }

  /** After healing: every living caller answered, both parties agree, and the counters hold exactly what resolved. */
  checkQuiescent(): void {
    for (const [ref, x] of this.pays) check(x.status !== 'pending', `pay ${ref} never answered`);
    for (const [ref, x] of this.credits) check(x.status !== 'pending', `credit ${ref} never answered`);
    for (const [ref, x] of this.closes) check(x !== 'pending', `close ${ref} never answered`);
    const h = this.hub.ch.latest.state;
    const d = this.device.ch.latest.state;
    check(sameState(h, d), 'hub and device hold different latest states after healing', () => [h, d]);
    for (const [map, counter] of [
      [this.pays, h.paidByDevice],
      [this.credits, h.paidByHub],
    ] as const) {
      for (const [ref, x] of map) {
        if (x.amount === 0n) continue;
        if (x.status === 'resolved') check(has(counter, x.amount), `ref ${ref} resolved but not paid`);
        if (x.status === 'rejected') check(!has(counter, x.amount), `ref ${ref} rejected but paid`);
      }
    }
  }
}

/** A wire message as the receiving shell turns it into an engine event. */
function toEvent(msg: Message, to: Role): EngineEvent | undefined {
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
      throw new Violation(`unexpected message ${msg.t}`);
  }
}

// ---------- the random sequences ----------

type Op =
  | { op: 'pay'; n: number; fail: boolean }
  | { op: 'credit'; round: boolean; zero: boolean; fail: boolean }
  | { op: 'close'; fail: boolean }
  | { op: 'deliver'; i: number; dup: boolean; fail: boolean }
  | { op: 'drop'; i: number }
  | { op: 'disconnect' }
  | { op: 'reconnect'; fail: boolean }
  | { op: 'crash'; role: Role }
  | { op: 'flush'; fail: boolean }
  | { op: 'tick'; ms: number; fail: boolean };

const failArb = fc.nat(11).map((n) => n === 0); // ~1 persist in 12 fails
const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.record({ op: fc.constant('pay' as const), n: fc.integer({ min: 1, max: 3 }), fail: failArb }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      op: fc.constant('credit' as const),
      round: fc.boolean(),
      zero: fc.boolean(),
      fail: failArb,
    }),
  },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('close' as const), fail: failArb }) },
  {
    weight: 20,
    arbitrary: fc.record({
      op: fc.constant('deliver' as const),
      i: fc.nat(15),
      dup: fc.nat(9).map((n) => n === 0),
      fail: failArb,
    }),
  },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('drop' as const), i: fc.nat(15) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('disconnect' as const) }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('reconnect' as const), fail: failArb }) },
  {
    weight: 1,
    arbitrary: fc.record({ op: fc.constant('crash' as const), role: fc.constantFrom<Role>('device', 'hub') }),
  },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('flush' as const), fail: failArb }) },
  {
    weight: 2,
    arbitrary: fc.record({ op: fc.constant('tick' as const), ms: fc.integer({ min: 1, max: 200 }), fail: failArb }),
  },
);

function apply(w: World, o: Op): void {
  w.failNext = 'fail' in o ? o.fail : false;
  switch (o.op) {
    case 'pay':
      return w.pay(o.n);
    case 'credit':
      return w.credit(o.round, o.zero);
    case 'close':
      return w.close();
    case 'deliver':
      return w.deliver(o.i, o.dup);
    case 'drop':
      return w.drop(o.i);
    case 'disconnect':
      return w.disconnect();
    case 'reconnect':
      return w.reconnect();
    case 'crash':
      return w.crash(o.role);
    case 'flush':
      return w.flush();
    case 'tick':
      return w.tick(o.ms);
  }
}

/** No more failures, drops or crashes: connect, deliver everything in order, let timers fire, until nothing moves. */
function healAll(w: World): void {
  w.failNext = false;
  // A fresh connection: the device resyncs, as a client does after every reconnect.
  w.disconnect();
  for (let round = 0; round < 200; round++) {
    w.reconnect();
    let n = 0;
    while (w.net.length > 0 && n++ < 10_000) w.deliver(0, false);
    w.tick(60_000);
    w.flush();
    if (w.net.length === 0) {
      w.tick(60_000);
      if (w.net.length === 0) return;
    }
  }
  throw new Violation('the network never went quiet');
}

function runSequence(ops: readonly Op[]): World {
  const w = new World();
  w.reconnect();
  try {
    for (const o of ops) apply(w, o);
    healAll(w);
    w.checkQuiescent();
  } catch (e) {
    if (e instanceof Violation) e.message += `\n--- last steps ---\n${w.log.slice(-40).join('\n')}`;
    throw e;
  }
  return w;
}

/** Sequence length (uniform in 1..MAX_OPS): 10,000 sequences take ~10 s of CPU here (~40 s wall on the loaded shared machine). */
const MAX_OPS = 40;
const RUNS = Number(process.env.TRICKLE_MODEL_RUNS ?? 10_000);
const SEED = process.env.TRICKLE_MODEL_SEED === undefined ? undefined : Number(process.env.TRICKLE_MODEL_SEED);
/** fast-check's counterexample path (printed with a failure): with the seed, replays just the failing sequence. */
const PATH = process.env.TRICKLE_MODEL_PATH;

describe('channel engine model', () => {
  it(`${RUNS} random sequences keep every invariant`, { timeout: Math.max(120_000, RUNS * 10) }, () => {
    fc.assert(
      fc.property(fc.array(opArb, { minLength: 1, maxLength: MAX_OPS, size: 'max' }), (ops) => {
        runSequence(ops);
      }),
      { numRuns: RUNS, ...(SEED !== undefined ? { seed: SEED } : {}), ...(PATH ? { path: PATH } : {}) },
    );
  });

  it('a plain run pays, credits and closes as expected (the model itself works)', () => {
    const w = runSequence([
      { op: 'pay', n: 2, fail: false },
      { op: 'deliver', i: 0, dup: false, fail: false },
      { op: 'deliver', i: 0, dup: false, fail: false },
      { op: 'credit', round: false, zero: false, fail: false },
      { op: 'close', fail: false },
    ]);
    expect([...w.pays.values()].map((x) => x.status)).toEqual(['resolved', 'resolved']);
    expect([...w.credits.values()].map((x) => x.status)).toEqual(['resolved']);
    expect([...w.closes.values()]).toEqual(['resolved']);
    expect(w.hub.ch.latest.state).toMatchObject({ paidByDevice: 3n, paidByHub: 1n, isFinal: true });
  });
});
