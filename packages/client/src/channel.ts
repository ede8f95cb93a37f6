import { randomBytes } from 'node:crypto';
import { checkFullySigned, checkTransition, channelContext, type ChannelContext } from '@trickle/protocol/channel';
import type { Message, RouteInstruction } from '@trickle/protocol/codec';
import { stateDigest } from '@trickle/protocol/eip712';
import { TrickleError, isTrickleError, type ErrorCode } from '@trickle/protocol/errors';
import { signatureFromHex, signatureToHex, type Signer, type Verifier } from '@trickle/protocol/signer';
import type { Address, Bytes32, ChannelId, Funding, SignedState, State } from '@trickle/protocol/types';
import type { Connection } from './connection.js';
import type { ChannelStore, DeviceChannelRecord } from './store.js';

/** An incoming payment: the hub raised what it paid this device, and both signed it. */
export interface IncomingPayment {
  readonly channelId: ChannelId;
  readonly amount: bigint;
  /** The routed payment this delivers, or the refund of one of ours. */
  readonly paymentId?: Bytes32 | undefined;
  /** Set when the credit nets a market round. */
  readonly round?: bigint | undefined;
  readonly state: SignedState;
}

/** What `pay` resolves to. */
export interface PaymentReceipt {
  readonly amount: bigint;
  /** Version of the fully signed state that includes this payment. */
  readonly version: bigint;
  /** Cumulative paid by the device in that state. */
  readonly paidByDevice: bigint;
  readonly paymentId?: Bytes32 | undefined;
}

/** Balances from this device's point of view, in token base units. */
export interface ChannelBalance {
  readonly deposit: bigint;
  readonly paid: bigint;
  readonly received: bigint;
  /** What the device would get if the channel settled on the latest fully signed state. */
  readonly settled: bigint;
  /** `settled` less payments queued or in flight. */
  readonly available: bigint;
}

/** A check run before countersigning a hub credit (the market uses it to recompute a round). Throw to refuse. */
export type CreditGuard = (credit: { channelId: ChannelId; previous: State; state: State; amount: bigint; paymentId?: Bytes32 | undefined }) => void | Promise<void>;

export interface ChannelDeps {
  readonly signer: Signer;
  readonly verifier: Verifier;
  readonly store: ChannelStore;
  readonly connection: Connection;
  readonly maxInFlight: number;
  /** After a crossing with a hub credit, hold new proposals this long at most while the hub re-proposes. */
  readonly yieldMs: number;
  /** How long a routed payment waits for the hub's receipt before `pay` rejects with TIMEOUT. */
  readonly routeTimeoutMs: number;
  readonly creditGuard?: CreditGuard | undefined;
  /** Reads deposits on-chain: a credit the hub's known deposit cannot cover triggers one refresh. */
  readonly readFunding?: ((channelId: ChannelId) => Promise<Funding>) | undefined;
}

/** One `pay` call waiting for the state that includes it (a class: one fixed shape on the hot path). */
class Waiter {
  /** Cumulative paid by the device once this payment is included (set when it joins a proposal). */
  target = 0n;
  constructor(
    readonly amount: bigint,
    readonly route: RouteInstruction | undefined,
    /** The market order this payment escrows. */
    readonly escrowFor: Bytes32 | undefined,
    readonly resolve: (r: PaymentReceipt) => void,
    readonly reject: (e: TrickleError) => void,
  ) {}
}

// `new Promise(capture)` hands out its resolvers without allocating an executor closure per payment.
const captured: { resolve: (r: PaymentReceipt) => void; reject: (e: TrickleError) => void } = { resolve: () => {}, reject: () => {} };
function capture(resolve: (r: PaymentReceipt) => void, reject: (e: TrickleError) => void): void {
  captured.resolve = resolve;
  captured.reject = reject;
}

interface Proposal {
  readonly id: number;
  readonly state: State;
  readonly sig: Uint8Array;
  /** The digest signed, kept to check the hub's countersignature without hashing again. */
  readonly digest: Uint8Array;
  readonly route?: RouteInstruction | undefined;
  readonly escrowFor?: Bytes32 | undefined;
}

type Frame = Extract<Message, { t: 'ack' | 'reject' | 'update' | 'sync' }> | { t: 'kick' };

const VERSION_CONFLICT: ReadonlySet<ErrorCode> = new Set(['STALE_VERSION', 'EQUIVOCATION']);

/**
 * One channel as a device sees it. `pay` calls made while updates are in flight coalesce into the next state;
 * every state is persisted fully signed before the payments it includes resolve.
 */
export class ClientChannel {
  readonly channelId: ChannelId;
  #record: DeviceChannelRecord;
  #ctx: ChannelContext;
  readonly #deps: ChannelDeps;
  /** Payments not yet in a sent proposal, in order, and their sum (kept so `pay` and `balance` are O(1)). */
  #queued: Waiter[] = [];
  #queuedTotal = 0n;
  #kickScheduled = false;
  /** Payments in sent proposals, waiting for an ack that covers them. */
  #sent: Waiter[] = [];
  /** Routed payments acked, waiting for their receipt. */
  readonly #routed = new Map<Bytes32, Waiter>();
  readonly #early = new Map<Bytes32, boolean>();
  #proposals: Proposal[] = [];
  #frames: Frame[] = [];
  #busy = false;
  /** Set while the drain only waits for a save: new payments may be proposed on top of the state being saved. */
  #proposeWhileSaving = false;
  #yieldUntil = 0;
  readonly #listeners = new Set<(p: IncomingPayment) => void>();
  #closed = false;

  constructor(record: DeviceChannelRecord, deps: ChannelDeps) {
    this.channelId = record.channelId;
    this.#record = record;
    this.#deps = deps;
    this.#ctx = channelContext(record.params, record.funding);
  }

  /** The durable record (latest fully signed state and parameters). */
  get record(): DeviceChannelRecord {
    return this.#record;
  }

  /** Latest state both parties signed. */
  get latest(): SignedState {
    return this.#record.latest;
  }

  /**
   * Pay the hub (or, with `to`, another device through the hub).
   * @param amount - base units, > 0
   * @param options.to - route the payment to this device; resolves once the payee has countersigned it
   * @returns a receipt once a fully signed state including it is durable
   * @throws TrickleError INSUFFICIENT_FUNDS / NO_ROUTE / LIMIT_EXCEEDED / CHANNEL_FINAL …
   * @example
   * ```ts
   * await channel.pay(1_000n); // 0.001 USDT
   * ```
   */
  pay(amount: bigint, options?: { to?: Address; escrowFor?: Bytes32 }): Promise<PaymentReceipt> {
    if (typeof amount !== 'bigint' || amount <= 0n) return Promise.reject(new TrickleError('INVALID_ARGUMENT', 'amount must be a positive bigint'));
    if (this.#closed || this.#record.latest.state.isFinal || this.#record.closing) return Promise.reject(new TrickleError('CHANNEL_FINAL', 'channel is closing'));
    const available = this.#available();
    if (amount > available) return Promise.reject(new TrickleError('INSUFFICIENT_FUNDS', 'not enough balance in the channel', { details: { available } }));
    const route = options?.to ? { to: options.to, amount, paymentId: `0x${randomBytes(32).toString('hex')}` as Bytes32 } : undefined;
    const promise = new Promise<PaymentReceipt>(capture);
    this.#queued.push(new Waiter(amount, route, route ? undefined : options?.escrowFor, captured.resolve, captured.reject));
    this.#queuedTotal += amount;
    // One proposal per turn at most: pays made in the same synchronous run coalesce before anything is signed.
    if (!this.#kickScheduled) {
      this.#kickScheduled = true;
      queueMicrotask(this.#onKick);
    }
    return promise;
  }

  readonly #onKick = (): void => {
    this.#kickScheduled = false;
    this.#kick();
  };

  /** `settled` less payments queued or in flight, i.e. `balance().available` without building the object (every `pay` asks). */
  #available(): bigint {
    const s = this.#record.latest.state;
    const top = this.#proposals.length > 0 ? this.#proposals[this.#proposals.length - 1]!.state.paidByDevice : s.paidByDevice;
    return this.#record.funding.device + s.paidByHub - top - this.#queuedTotal;
  }

  /** Subscribe to incoming payments. @returns an unsubscribe function */
  onPayment(listener: (p: IncomingPayment) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Balances from the latest fully signed state and what is pending. */
  balance(): ChannelBalance {
    const s = this.#record.latest.state;
    const deposit = this.#record.funding.device;
    return { deposit, paid: s.paidByDevice, received: s.paidByHub, settled: deposit - s.paidByDevice + s.paidByHub, available: this.#available() };
  }

  /** Payments queued or in flight. */
  get pendingPayments(): number {
    return this.#queued.length + this.#sent.length + this.#routed.size;
  }

  /** New on-chain funding (a top-up) was seen. */
  async setFunding(funding: Funding): Promise<void> {
    this.#record = { ...this.#record, funding };
    this.#ctx = channelContext(this.#record.params, funding);
    await this.#deps.store.save(this.#record);
  }

  /** Frames for this channel from the connection. */
  receive(frame: Frame): void {
    this.#frames.push(frame);
    this.#pump();
  }

  /** A routed payment's outcome. */
  receipt(paymentId: Bytes32, delivered: boolean): void {
    const w = this.#routed.get(paymentId);
    if (!w) {
      // The receipt can overtake the ack's persist: keep it for when the payment is acked (bounded by in-flight).
      if ([...this.#sent, ...this.#queued].some((x) => x.route?.paymentId === paymentId)) this.#early.set(paymentId, delivered);
      return;
    }
    this.#routed.delete(paymentId);
    if (delivered) w.resolve({ amount: w.amount, version: this.#record.latest.state.version, paidByDevice: w.target, paymentId });
    else w.reject(new TrickleError('NO_ROUTE', 'the payee did not take the payment; the hub refunded it'));
  }

  /** After (re)connecting: exchange latest states with the hub, then resend what is in flight. */
  async resync(): Promise<void> {
    const c = this.#deps.connection;
    const reply = await c.request({ t: 'sync', id: c.id(), channelId: this.channelId, latest: this.#record.latest });
    if (reply.t === 'sync') this.receive(reply);
  }

  /** Stop accepting payments (close in progress); queued ones fail. */
  markClosing(mode: 'cooperative' | 'force'): Promise<void> {
    this.#closed = true;
    for (const w of this.#queued.splice(0)) w.reject(new TrickleError('CHANNEL_FINAL', 'channel is closing'));
    this.#queuedTotal = 0n;
    this.#record = { ...this.#record, closing: mode };
    return this.#deps.store.save(this.#record);
  }

  /** Wait until no payment is queued or in flight (for close). */
  async idle(timeoutMs: number): Promise<void> {
    const until = Date.now() + timeoutMs;
    while (this.#queued.length + this.#sent.length + this.#proposals.length > 0) {
      if (Date.now() > until) throw new TrickleError('TIMEOUT', 'payments still in flight');
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  /**
   * Sign the next state as the device (never two different states at one version), after checking it against our
   * own rules: the hub would refuse anything else.
   * @throws InvalidTransitionError before signing anything
   */
  signNext(mutate: (s: State) => State): { state: State; sig: Uint8Array; digest: Uint8Array } {
    const base = this.#proposals.at(-1)?.state ?? this.#record.latest.state;
    const version = (base.version > this.#record.signedVersion ? base.version : this.#record.signedVersion) + 1n;
    const state = mutate({ ...base, version });
    checkTransition(base, state, this.#ctx.funding, 'device');
    const digest = stateDigest(this.#ctx.separator, state);
    const sig = this.#deps.signer.signDigest(digest);
    this.#record = { ...this.#record, signedVersion: version };
    return { state, sig, digest };
  }

  /** Make a state both signed current (cooperative close). */
  async adopt(signed: SignedState): Promise<void> {
    checkFullySigned(this.#ctx, signed, this.#deps.verifier);
    if (signed.state.version <= this.#record.latest.state.version) return;
    this.#record = { ...this.#record, latest: signed };
    await this.#deps.store.save(this.#record);
  }

  #kick(): void {
    if (this.#proposeWhileSaving) this.#propose();
    this.#frames.push({ t: 'kick' });
    this.#pump();
  }

  #pump(): void {
    if (this.#busy) return;
    this.#busy = true;
    void this.#drain()
      .catch(() => {})
      .finally(() => {
        this.#busy = false;
        if (this.#frames.length > 0) this.#pump();
      });
  }

  async #drain(): Promise<void> {
    while (this.#frames.length > 0) {
      const frames = this.#frames.splice(0);
      let newLatest: SignedState | undefined;
      const after: (() => void)[] = [];
      const replies: Message[] = [];
      for (const f of frames) {
        const latest = newLatest ?? this.#record.latest;
        switch (f.t) {
          case 'ack': {
            const p = this.#proposals.find((x) => x.state.version === f.version);
            if (!p || f.version <= latest.state.version) break;
            try {
              if (this.#deps.verifier.recoverAddress(p.digest, f.sig) !== this.#record.params.hub) {
                throw new TrickleError('BAD_SIGNATURE', 'ack not signed by the hub');
              }
            } catch {
              break; // a forged ack changes nothing
            }
            newLatest = { state: p.state, deviceSig: signatureToHex(p.sig), hubSig: signatureToHex(f.sig) };
            this.#proposals = this.#proposals.filter((x) => x.state.version > f.version);
            break;
          }
          case 'reject': {
            const i = this.#proposals.findIndex((x) => x.id === f.id);
            if (i < 0) break;
            const [p] = this.#proposals.splice(i, 1);
            if (!VERSION_CONFLICT.has(f.code)) {
              // A refusal on the merits: fail the payments this proposal added (later proposals include them too
              // and will be refused for the same reason, or were built on it).
              const err = new TrickleError(f.code, f.message);
              const floor = this.#proposals.filter((x) => x.state.version < p!.state.version).at(-1)?.state.paidByDevice ?? latest.state.paidByDevice;
              after.push(() => this.#failSent(floor, p!.state.paidByDevice, err));
            }
            // A version conflict needs nothing here: once every proposal is answered, unacked payments are re-queued.
            break;
          }
          case 'update': {
            replies.push(...(await this.#onCredit(f, latest, (s) => (newLatest = s), after)));
            break;
          }
          case 'sync': {
            const theirs = f.latest;
            if (theirs && theirs.state.version > latest.state.version) {
              try {
                checkFullySigned(this.#ctx, theirs, this.#deps.verifier);
                newLatest = theirs;
                this.#proposals = this.#proposals.filter((x) => x.state.version > theirs.state.version);
                if (theirs.state.version > this.#record.signedVersion) this.#record = { ...this.#record, signedVersion: theirs.state.version };
              } catch {
                /* a hub state that does not verify is ignored */
              }
            }
            // Resend what is still in flight, same bytes: the hub either has it (same ack) or processes it once.
            for (const p of this.#proposals) this.#deps.connection.send({ t: 'update', id: p.id, state: p.state, sig: p.sig, route: p.route, paymentId: p.escrowFor });
            break;
          }
          case 'kick':
            break;
        }
      }
      if (newLatest) {
        this.#record = { ...this.#record, latest: newLatest };
        const saved = this.#deps.store.save(this.#record); // durable before anything is reported or acked
        // Payments keep going out while this state is being made durable (theirs resolve only after their own save) —
        // unless we owe the hub an ack first, or payments left behind by a crossing must be queued again.
        const top = this.#sent.length > 0 ? this.#sent[this.#sent.length - 1]!.target : 0n;
        this.#proposeWhileSaving = replies.length === 0 && (this.#proposals.length > 0 || top <= newLatest.state.paidByDevice);
        if (this.#proposeWhileSaving) this.#propose();
        try {
          await saved;
        } finally {
          this.#proposeWhileSaving = false;
        }
        this.#settleSent(newLatest.state.paidByDevice, newLatest.state.version);
      }
      for (const r of replies) this.#deps.connection.send(r);
      for (const cb of after) cb();
      if (this.#proposals.length === 0 && this.#sent.length > 0) this.#requeueSent();
      this.#propose();
    }
  }

  async #onCredit(f: Extract<Message, { t: 'update' }>, latest: SignedState, adopt: (s: SignedState) => void, after: (() => void)[]): Promise<Message[]> {
    const reject = (e: unknown): Message[] => {
      const err = isTrickleError(e) ? e : new TrickleError('INTERNAL', 'internal error');
      return [{ t: 'reject', id: f.id, channelId: this.channelId, code: err.code, message: err.shortMessage, latest }];
    };
    // Crossing: we signed our own state at this version (or later) and it is in flight. Refuse and let the hub
    // re-propose on top of it; hold our next proposals briefly so it can.
    if (this.#proposals.length > 0 && f.state.version <= this.#record.signedVersion) {
      this.#yieldUntil = Date.now() + this.#deps.yieldMs;
      return reject(new TrickleError('STALE_VERSION', 'crossed with an update of the device'));
    }
    try {
      let kind: 'new' | 'duplicate';
      try {
        kind = checkTransition(latest.state, f.state, this.#ctx.funding, 'hub');
      } catch (e) {
        // The hub may have topped up since we last looked: re-read the deposits once, then decide.
        if (!isTrickleError(e, 'INSUFFICIENT_FUNDS') || !this.#deps.readFunding) throw e;
        const funding = await this.#deps.readFunding(this.channelId);
        if (funding.hub <= this.#ctx.funding.hub && funding.device <= this.#ctx.funding.device) throw e;
        this.#record = { ...this.#record, funding };
        this.#ctx = channelContext(this.#record.params, funding);
        kind = checkTransition(latest.state, f.state, this.#ctx.funding, 'hub');
      }
      const digest = stateDigest(this.#ctx.separator, f.state);
      if (this.#deps.verifier.recoverAddress(digest, f.sig) !== this.#record.params.hub) throw new TrickleError('BAD_SIGNATURE', 'not signed by the hub');
      if (kind === 'duplicate') {
        return latest.deviceSig ? [{ t: 'ack', id: f.id, channelId: this.channelId, version: latest.state.version, sig: signatureFromHex(latest.deviceSig) }] : [];
      }
      if (f.state.version <= this.#record.signedVersion) throw new TrickleError('STALE_VERSION', 'the device already signed this version');
      const amount = f.state.paidByHub - latest.state.paidByHub;
      if (this.#deps.creditGuard) await this.#deps.creditGuard({ channelId: this.channelId, previous: latest.state, state: f.state, amount, paymentId: f.paymentId });
      const sig = this.#deps.signer.signDigest(digest);
      this.#record = { ...this.#record, signedVersion: f.state.version };
      const signed: SignedState = { state: f.state, deviceSig: signatureToHex(sig), hubSig: signatureToHex(f.sig) };
      adopt(signed);
      this.#yieldUntil = 0;
      const payment: IncomingPayment = { channelId: this.channelId, amount, paymentId: f.paymentId, round: f.state.round > latest.state.round ? f.state.round : undefined, state: signed };
      after.push(() => {
        for (const l of this.#listeners) l(payment);
      });
      return [{ t: 'ack', id: f.id, channelId: this.channelId, version: f.state.version, sig }];
    } catch (e) {
      return reject(e);
    }
  }

  #settleSent(paid: bigint, version: bigint): void {
    let k = 0;
    while (k < this.#sent.length && this.#sent[k]!.target <= paid) k++;
    if (k === 0) return;
    const done = this.#sent;
    if (k === done.length) this.#sent = [];
    else {
      this.#sent = done.slice(k);
      done.length = k;
    }
    for (const w of done) {
      if (w.route) {
        this.#routed.set(w.route.paymentId, w);
        const id = w.route.paymentId;
        setTimeout(() => {
          if (this.#routed.get(id) !== w) return;
          this.#routed.delete(id);
          w.reject(new TrickleError('TIMEOUT', 'no receipt for the routed payment yet; the hub delivers it or refunds it later', { details: { paymentId: id } }));
        }, this.#deps.routeTimeoutMs).unref?.();
        const early = this.#early.get(w.route.paymentId);
        if (early !== undefined) {
          this.#early.delete(w.route.paymentId);
          this.receipt(w.route.paymentId, early);
        }
      } else {
        w.resolve({ amount: w.amount, version, paidByDevice: w.target });
      }
    }
  }

  #failSent(floor: bigint, ceiling: bigint, err: TrickleError): void {
    const keep: Waiter[] = [];
    for (const w of this.#sent) {
      if (w.target > floor && w.target <= ceiling) w.reject(err);
      else keep.push(w);
    }
    this.#sent = keep;
  }

  /** Every proposal was answered and some payments are still unacked (their proposals crossed): queue them again. */
  #requeueSent(): void {
    for (const w of this.#sent) this.#queuedTotal += w.amount;
    this.#queued = [...this.#sent, ...this.#queued];
    this.#sent = [];
  }

  #propose(): void {
    if (this.#queued.length === 0 || this.#proposals.length >= this.#deps.maxInFlight || !this.#deps.connection.ready) return;
    // A routed payment or an escrow is a barrier: nothing is pipelined on top of it. Were a later cumulative state
    // accepted while it was refused (a version crossing), the hub would hold the money without the instruction.
    const top = this.#proposals.at(-1);
    if (top && (top.route || top.escrowFor)) return;
    if (this.#yieldUntil > Date.now()) {
      setTimeout(() => this.#kick(), this.#yieldUntil - Date.now() + 1);
      return;
    }
    // Coalesce everything queued into one state; a routed payment or an escrow rides alone on its own update.
    let route: RouteInstruction | undefined;
    let escrowFor: Bytes32 | undefined;
    let total = 0n;
    let n = 0;
    for (const w of this.#queued) {
      const alone = w.route !== undefined || w.escrowFor !== undefined;
      if (alone && n > 0) break;
      n++;
      total += w.amount;
      if (alone) {
        route = w.route;
        escrowFor = w.escrowFor;
        break;
      }
    }
    const batch = n === this.#queued.length ? this.#queued : this.#queued.slice(0, n);
    this.#queued = n === this.#queued.length ? [] : this.#queued.slice(n);
    this.#queuedTotal -= total;
    const base = this.#proposals.at(-1)?.state ?? this.#record.latest.state;
    let target = base.paidByDevice;
    for (const w of batch) w.target = target += w.amount;
    let signed: ReturnType<ClientChannel['signNext']>;
    try {
      signed = this.signNext((s) => ({ ...s, paidByDevice: s.paidByDevice + total }));
    } catch (e) {
      const err = isTrickleError(e) ? e : new TrickleError('INTERNAL', 'cannot sign');
      for (const w of batch) w.reject(err);
      return;
    }
    const id = this.#deps.connection.id();
    this.#proposals.push({ id, state: signed.state, sig: signed.sig, digest: signed.digest, route, escrowFor });
    if (this.#sent.length === 0) this.#sent = batch;
    else for (const w of batch) this.#sent.push(w);
    this.#deps.connection.send({ t: 'update', id, state: signed.state, sig: signed.sig, route, paymentId: escrowFor });
    if (this.#queued.length > 0) this.#propose();
  }

}
