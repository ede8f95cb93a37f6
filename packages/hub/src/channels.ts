import { checkTransition, checkFullySigned, sameState, validateParams, zeroState, type ChannelContext } from '@trickle/protocol/channel';
import { channelIdOf, domainSeparator, stateDigest, trickleDomain } from '@trickle/protocol/eip712';
import { TrickleError, isTrickleError, type ErrorCode } from '@trickle/protocol/errors';
import { signatureToHex, signatureFromHex, type Verifier } from '@trickle/protocol/signer';
import type { HubCrypto } from './crypto.js';
import type { Message, RouteInstruction } from '@trickle/protocol/codec';
import type { Address, Bytes32, ChannelId, ChannelParams, Funding, SignedState, State } from '@trickle/protocol/types';
import { stringifyJson } from '@trickle/protocol/json';
import type { Committer } from './committer.js';
import type { ChannelRecord, ChannelStatus, RouteRecord, StoreWrite } from './store/types.js';

/** What the hub reads from the chain to admit a channel. */
export interface OnChainChannel {
  readonly status: ChannelStatus;
  readonly device: Address;
  readonly hub: Address;
  readonly token: Address;
  readonly funding: Funding;
}

/** Hooks the channel table calls; the hub wires them to sessions, the router and metrics. */
export interface ChannelTableDeps {
  /** Hot-path signature work (verify device updates, countersign), inline or on worker threads. */
  readonly crypto: HubCrypto;
  /** For the rare synchronous checks (states offered in a sync). */
  readonly verifier: Verifier;
  readonly committer: Committer;
  /** Send a frame to a device if it is connected; false when it is not. */
  readonly send: (device: Address, msg: Message) => boolean;
  readonly isConnected: (device: Address) => boolean;
  /** A device update carrying a route was made durable: forward it. */
  readonly onRouted: (route: RouteRecord) => void;
  /** Refuse a route before the payer's update is accepted (unknown payee, in-flight limit); `extra` is routed
   * earlier in the same batch. @throws TrickleError NO_ROUTE / LIMIT_EXCEEDED */
  readonly checkRoute: (from: Address, token: Address, route: RouteInstruction, extra: bigint) => void;
  /** A device paid the escrow of a market order (its update carried the order id); made durable with it. */
  readonly onEscrow: (escrow: EscrowRecord) => void;
  /** Counts an update outcome for metrics: 'accepted' or an error code. */
  readonly onOutcome: (outcome: 'accepted' | ErrorCode, n?: number) => void;
  readonly maxCreditRetries: number;
  readonly now: () => number;
  /** Whether something outside the table (open market orders or escrows) still owes this channel a credit. */
  readonly owesCredit?: ((channelId: ChannelId) => boolean) | undefined;
}

/** A credit the hub wants to pay a device (routed payment, refund, market round). */
interface CreditJob {
  readonly amount: bigint;
  readonly paymentId?: Bytes32 | undefined;
  readonly round?: bigint | undefined;
  attempts: number;
  readonly resolve: (s: SignedState) => void;
  readonly reject: (e: TrickleError) => void;
  /**
   * Set on the credit rebuilt at startup from a proposal the hub had signed and stored before it stopped: whoever
   * asks for that same credit again (the router resuming a route, the market resuming a round) waits for this one
   * instead of adding a second. Holds their callbacks; `claimed` once someone has.
   */
  readonly restored?: { waiters: { resolve: (s: SignedState) => void; reject: (e: TrickleError) => void }[]; claimed: boolean };
}

/**
 * The credit a stored outstanding proposal stands for: what it adds over the latest state both signed, the round it
 * nets (when it moves the round on) and the payment it delivers.
 */
function restoredCredit(record: ChannelRecord): CreditJob | undefined {
  const out = record.outgoing;
  if (!out) return undefined;
  const latest = record.latest.state;
  const restored: NonNullable<CreditJob['restored']> = { waiters: [], claimed: false };
  return {
    amount: out.state.paidByHub - latest.paidByHub,
    paymentId: out.paymentId,
    round: out.state.round > latest.round ? out.state.round : undefined,
    attempts: 0,
    resolve: (st) => restored.waiters.forEach((w) => w.resolve(st)),
    reject: (e) => restored.waiters.forEach((w) => w.reject(e)),
    restored,
  };
}

/** Whether a credit asked for now is the one a restored proposal already carries (same payment, or same round and amount). */
function sameCredit(job: CreditJob, amount: bigint, paymentId: Bytes32 | undefined, round: bigint | undefined): boolean {
  if (!job.restored || job.restored.claimed || job.amount !== amount) return false;
  if (paymentId !== undefined) return job.paymentId === paymentId;
  return round !== undefined && job.round === round && job.paymentId === undefined;
}

/** A payment a device made as the escrow of a market order. */
export interface EscrowRecord {
  readonly orderId: Bytes32;
  readonly device: Address;
  readonly channelId: ChannelId;
  readonly amount: bigint;
}

/** Store key marking that the hub's credit for `paymentId` was countersigned on `channelId`. */
export const creditedKey = (paymentId: Bytes32, channelId: ChannelId): string => `credited/${paymentId}/${channelId}`;

/** Store key of an escrow record. */
export const escrowKey = (orderId: Bytes32): string => `market/escrow/${orderId}`;

export type Job =
  | { readonly t: 'update'; readonly id: number; readonly state: State; readonly sig: Uint8Array; readonly route?: RouteInstruction | undefined; readonly escrowFor?: Bytes32 | undefined }
  | { readonly t: 'ack'; readonly id: number; readonly version: bigint; readonly sig: Uint8Array }
  | { readonly t: 'reject'; readonly id: number; readonly code: ErrorCode; readonly message?: string }
  | { readonly t: 'close'; readonly id: number; readonly state: State; readonly sig: Uint8Array }
  | { readonly t: 'sync'; readonly id: number; readonly latest: SignedState | null }
  | { readonly t: 'kick' }
  | { readonly t: 'chain'; readonly funding?: Funding | undefined; readonly status?: ChannelStatus | undefined; readonly done: () => void };

interface Runtime {
  record: ChannelRecord;
  ctx: ChannelContext;
  jobs: Job[];
  credits: CreditJob[];
  /** The credit whose proposal is outstanding (record.outgoing), if any. */
  inFlightCredit?: CreditJob | undefined;
  outgoingId: number;
  busy: boolean;
}

/** The output of processing one batch of jobs: written durably first, then frames sent, then callbacks run. */
class Batch {
  readonly writes: StoreWrite[] = [];
  readonly frames: Message[] = [];
  readonly after: (() => void)[] = [];
}

const VERSION_CONFLICT: ReadonlySet<ErrorCode> = new Set(['STALE_VERSION', 'EQUIVOCATION']);

/**
 * The hub's channel state machines: one serial job queue per channel, validated with the protocol core,
 * made durable through group commit before anything is acked or signed-and-sent.
 */
export class ChannelTable {
  readonly #deps: ChannelTableDeps;
  readonly #channels = new Map<ChannelId, Runtime>();
  readonly #byDevice = new Map<Address, Set<ChannelId>>();
  #outgoingSeq = 1;

  constructor(deps: ChannelTableDeps) {
    this.#deps = deps;
  }

  /** Load channels from the store at startup. */
  restore(records: readonly ChannelRecord[]): void {
    for (const r of records) this.#add(r);
  }

  get size(): number {
    return this.#channels.size;
  }

  /** The durable record of a channel, if known. */
  get(channelId: ChannelId): ChannelRecord | undefined {
    return this.#channels.get(channelId)?.record;
  }

  /** Channel ids of one device. */
  channelsOf(device: Address): ChannelId[] {
    return [...(this.#byDevice.get(device) ?? [])];
  }

  /** Every channel record (for metrics and batch operations). */
  *records(): IterableIterator<ChannelRecord> {
    for (const rt of this.#channels.values()) yield rt.record;
  }

  /** One domain separator per (chain, adjudicator), shared by all its channels. */
  readonly #separators = new Map<string, Uint8Array>();

  #add(record: ChannelRecord): Runtime {
    const p = record.params;
    const key = `${p.chainId}:${p.adjudicator}`;
    let separator = this.#separators.get(key);
    if (!separator) this.#separators.set(key, (separator = domainSeparator(trickleDomain(p.chainId, p.adjudicator))));
    const ctx: ChannelContext = { params: p, channelId: record.channelId, separator, funding: record.funding };
    const rt: Runtime = { record, ctx, jobs: [], credits: [], outgoingId: 0, busy: false };
    const restored = restoredCredit(record);
    if (restored) rt.inFlightCredit = restored;
    this.#channels.set(record.channelId, rt);
    let set = this.#byDevice.get(record.params.device);
    if (!set) this.#byDevice.set(record.params.device, (set = new Set()));
    set.add(record.channelId);
    return rt;
  }

  /**
   * Admit a channel the device announced, after checking it on-chain: same id, parties, token, open and funded.
   * Idempotent. @returns the hub's latest state of it
   * @throws TrickleError CHANNEL_NOT_OPEN / WRONG_CHANNEL
   */
  async admit(params: ChannelParams, device: Address, onChain: OnChainChannel | undefined, expected: { chainId: bigint; adjudicator: Address }): Promise<SignedState> {
    validateParams(params);
    if (params.device !== device) throw new TrickleError('WRONG_CHANNEL', 'channel belongs to another device');
    if (params.hub !== this.#deps.crypto.address) throw new TrickleError('WRONG_CHANNEL', 'channel is with another hub');
    if (params.chainId !== expected.chainId || params.adjudicator !== expected.adjudicator) {
      throw new TrickleError('WRONG_CHANNEL', 'channel is on another chain or adjudicator');
    }
    const channelId = channelIdOf(params);
    const existing = this.#channels.get(channelId);
    if (existing) return existing.record.latest;
    if (!onChain || onChain.status !== 'open') throw new TrickleError('CHANNEL_NOT_OPEN', 'the hub has not seen this channel open on-chain');
    if (onChain.device !== params.device || onChain.hub !== params.hub || onChain.token !== params.token) {
      throw new TrickleError('WRONG_CHANNEL', 'on-chain channel does not match the parameters');
    }
    const record: ChannelRecord = {
      params,
      channelId: channelId,
      funding: onChain.funding,
      status: 'open',
      latest: { state: zeroState(channelId) },
      hubSignedVersion: 0n,
    };
    await this.#deps.committer.write([{ kind: 'channel', record }]);
    if (!this.#channels.has(channelId)) this.#add(record);
    return this.#channels.get(channelId)!.record.latest;
  }

  /**
   * Funding or status seen on-chain. Goes through the channel's job queue like every other change, so it is never
   * lost to a batch in progress; resolves once durable.
   */
  onChain(channelId: ChannelId, change: { funding?: Funding; status?: ChannelStatus }): Promise<void> {
    const rt = this.#channels.get(channelId);
    if (!rt) return Promise.resolve();
    return new Promise((resolve) => {
      rt.jobs.push({ t: 'chain', funding: change.funding, status: change.status, done: resolve });
      this.#pump(rt);
    });
  }

  /** Queue a frame from the device for its channel. Throws synchronously for an unknown or foreign channel. */
  enqueue(device: Address, channelId: ChannelId, job: Job): void {
    const rt = this.#channels.get(channelId);
    if (!rt || rt.record.params.device !== device) {
      throw new TrickleError('WRONG_CHANNEL', 'unknown channel, or not this device’s');
    }
    rt.jobs.push(job);
    this.#pump(rt);
  }

  /**
   * Pay a device from the hub: the hub signs first, the device countersigns.
   * @returns the fully signed state once it is durable
   */
  credit(channelId: ChannelId, amount: bigint, meta: { paymentId?: Bytes32 | undefined; round?: bigint | undefined } = {}): Promise<SignedState> {
    const rt = this.#channels.get(channelId);
    if (!rt) return Promise.reject(new TrickleError('WRONG_CHANNEL', 'unknown channel'));
    if (rt.record.status !== 'open' || rt.record.latest.state.isFinal) {
      return Promise.reject(new TrickleError('CHANNEL_NOT_OPEN', 'channel is not open'));
    }
    return new Promise((resolve, reject) => {
      // The same credit may already be on its way: proposed and stored before a restart, not yet answered.
      const pending = rt.inFlightCredit && sameCredit(rt.inFlightCredit, amount, meta.paymentId, meta.round) ? rt.inFlightCredit : rt.credits.find((c) => sameCredit(c, amount, meta.paymentId, meta.round));
      if (pending?.restored) {
        pending.restored.claimed = true;
        pending.restored.waiters.push({ resolve, reject });
        return;
      }
      rt.credits.push({ amount, paymentId: meta.paymentId, round: meta.round, attempts: 0, resolve, reject });
      rt.jobs.push({ t: 'kick' });
      this.#pump(rt);
    });
  }

  /** The device (re)connected: propose pending credits and resend an outstanding proposal. */
  deviceConnected(device: Address): void {
    for (const id of this.channelsOf(device)) {
      const rt = this.#channels.get(id)!;
      rt.jobs.push({ t: 'kick' });
      this.#pump(rt);
    }
  }

  #pump(rt: Runtime): void {
    if (rt.busy) return;
    rt.busy = true;
    void this.#drain(rt).finally(() => {
      rt.busy = false;
      if (rt.jobs.length > 0) this.#pump(rt);
    });
  }

  async #drain(rt: Runtime): Promise<void> {
    while (rt.jobs.length > 0) {
      const jobs = rt.jobs.splice(0);
      const draft = { ...rt.record };
      const batch = new Batch();
      const settle: (() => void)[] = [];
      await this.#process(rt, draft, jobs, batch, settle);
      try {
        if (batch.writes.length > 0) await this.#deps.committer.write(batch.writes);
      } catch (e) {
        // Nothing was made durable: answer every update of the batch with STORE_FAILURE and keep the old record.
        const err = isTrickleError(e) ? e : new TrickleError('STORE_FAILURE', 'store failed', { cause: e });
        for (const j of jobs) {
          if (j.t === 'update' || j.t === 'close') this.#send(rt, this.#reject(rt, j.id, err, rt.record.latest));
          if (j.t === 'chain') rt.jobs.push(j); // on-chain facts are retried until recorded
        }
        if (rt.jobs.length > 0) await new Promise((r) => setTimeout(r, 100));
        continue;
      }
      rt.record = draft;
      if (rt.ctx.funding !== draft.funding) rt.ctx = { ...rt.ctx, funding: draft.funding };
      for (const f of batch.frames) this.#send(rt, f);
      for (const cb of batch.after) cb();
      for (const cb of settle) cb();
    }
  }

  #send(rt: Runtime, msg: Message): void {
    this.#deps.send(rt.record.params.device, msg);
  }

  #reject(rt: Runtime, id: number, e: unknown, latest: SignedState): Message {
    const err = isTrickleError(e) ? e : new TrickleError('INTERNAL', 'internal error');
    return { t: 'reject', id, channelId: rt.record.channelId, code: err.code, message: err.shortMessage, latest };
  }

  /** Process a batch against `draft` (mutated), collecting writes, frames and callbacks. */
  async #process(rt: Runtime, draft: { -readonly [K in keyof ChannelRecord]: ChannelRecord[K] }, jobs: Job[], batch: Batch, settle: (() => void)[]): Promise<void> {
    const { verifier, crypto } = this.#deps;
    let dirty = false;
    let i = 0;
    while (i < jobs.length) {
      const job = jobs[i]!;
      if (job.t === 'update') {
        // Group consecutive updates: check the arithmetic of each, verify and countersign only the newest.
        const group: Extract<Job, { t: 'update' }>[] = [];
        while (i < jobs.length && jobs[i]!.t === 'update') group.push(jobs[i++] as Extract<Job, { t: 'update' }>);
        if (await this.#processUpdates(rt, draft, group, batch)) dirty = true;
        continue;
      }
      i++;
      switch (job.t) {
        case 'ack': {
          const out = draft.outgoing;
          if (!out || out.state.version !== job.version) break; // late or duplicate ack: nothing to do
          try {
            const digest = stateDigest(rt.ctx.separator, out.state);
            if ((await crypto.recover(digest, job.sig)) !== draft.params.device) throw new TrickleError('BAD_SIGNATURE', 'ack not signed by the device');
            if (out.state.version <= draft.latest.state.version) break;
            draft.latest = { state: out.state, deviceSig: signatureToHex(job.sig), hubSig: out.hubSig };
            draft.outgoing = undefined;
            dirty = true;
            // Atomically with the state: which payment landed where, so a restart never pays it twice.
            if (out.paymentId) batch.writes.push({ kind: 'meta', key: creditedKey(out.paymentId, draft.channelId), value: String(out.state.version) });
            const credit = rt.inFlightCredit;
            rt.inFlightCredit = undefined;
            const signed = draft.latest;
            if (credit) settle.push(() => credit.resolve(signed));
          } catch (e) {
            this.#deps.onOutcome(isTrickleError(e) ? e.code : 'INTERNAL');
          }
          break;
        }
        case 'reject': {
          const out = draft.outgoing;
          if (!out || job.id !== rt.outgoingId) break;
          draft.outgoing = undefined;
          dirty = true;
          const credit = rt.inFlightCredit;
          rt.inFlightCredit = undefined;
          if (credit) {
            if (VERSION_CONFLICT.has(job.code) && ++credit.attempts <= this.#deps.maxCreditRetries) rt.credits.unshift(credit);
            else settle.push(() => credit.reject(new TrickleError(job.code, `the device refused the credit: ${job.message ?? ''}`)));
          }
          break;
        }
        case 'close': {
          try {
            if (draft.status !== 'open') throw new TrickleError('CHANNEL_NOT_OPEN', 'channel is not open');
            if (!job.state.isFinal) throw new TrickleError('MALFORMED', 'close needs a final state');
            // A final state would strand what the hub still owes the device (a refund, a round's credit).
            if (rt.credits.length > 0 || rt.inFlightCredit || draft.outgoing || this.#deps.owesCredit?.(draft.channelId)) {
              throw new TrickleError('PENDING_CREDITS', 'the hub still owes this channel a credit; close after it lands');
            }
            const kind = checkTransition(draft.latest.state, job.state, draft.funding, 'device');
            if (kind === 'duplicate' && draft.latest.hubSig) {
              batch.frames.push({ t: 'ack', id: job.id, channelId: draft.channelId, version: job.state.version, sig: signatureFromHex(draft.latest.hubSig) });
              break;
            }
            if (job.state.version <= draft.hubSignedVersion) throw new TrickleError('STALE_VERSION', 'the hub already signed this version');
            const hubSig = await crypto.verifyAndSign(stateDigest(rt.ctx.separator, job.state), job.sig, draft.params.device);
            draft.latest = { state: job.state, deviceSig: signatureToHex(job.sig), hubSig: signatureToHex(hubSig) };
            draft.hubSignedVersion = job.state.version;
            this.#dropOutgoing(rt, draft);
            dirty = true;
            batch.frames.push({ t: 'ack', id: job.id, channelId: draft.channelId, version: job.state.version, sig: hubSig });
            this.#failCredits(rt, new TrickleError('CHANNEL_FINAL', 'channel closed cooperatively'));
          } catch (e) {
            batch.frames.push(this.#reject(rt, job.id, e, draft.latest));
          }
          break;
        }
        case 'sync': {
          const theirs = job.latest;
          if (theirs && theirs.state.version > draft.latest.state.version) {
            try {
              checkFullySigned(rt.ctx, theirs, verifier);
              // The device holds a state both signed that the hub has not recorded (its ack was lost): adopt it.
              draft.latest = theirs;
              if (theirs.state.version > draft.hubSignedVersion) draft.hubSignedVersion = theirs.state.version;
              dirty = true;
              const out = draft.outgoing;
              if (out && out.state.version <= theirs.state.version) {
                draft.outgoing = undefined;
                const credit = rt.inFlightCredit;
                rt.inFlightCredit = undefined;
                if (sameState(out.state, theirs.state) && out.paymentId) {
                  batch.writes.push({ kind: 'meta', key: creditedKey(out.paymentId, draft.channelId), value: String(out.state.version) });
                }
                if (credit) {
                  if (sameState(out.state, theirs.state)) settle.push(() => credit.resolve(theirs));
                  else rt.credits.unshift(credit);
                }
              }
            } catch (e) {
              this.#deps.onOutcome(isTrickleError(e) ? e.code : 'INTERNAL');
            }
          } else if (theirs && theirs.state.version === draft.latest.state.version && !sameState(theirs.state, draft.latest.state)) {
            batch.writes.push({
              kind: 'evidence',
              evidence: { channelId: draft.channelId, version: theirs.state.version, held: draft.latest, offered: { state: theirs.state, sig: theirs.deviceSig ?? ('0x' as never) }, at: this.#deps.now() },
            });
            this.#deps.onOutcome('EQUIVOCATION');
          }
          batch.frames.push({ t: 'sync', id: job.id, channelId: draft.channelId, latest: draft.latest });
          if (draft.outgoing) batch.after.push(() => this.#resendOutgoing(rt));
          break;
        }
        case 'kick':
          break;
        case 'chain': {
          if (job.funding) draft.funding = job.funding;
          if (job.status) draft.status = job.status;
          dirty = true;
          settle.push(job.done);
          if (draft.status !== 'open') {
            const err = new TrickleError('CHANNEL_NOT_OPEN', 'channel is closing on-chain');
            settle.push(() => this.#failCredits(rt, err));
          }
          break;
        }
      }
    }
    // Propose the next credit once the device's own updates in this batch are handled and none is outstanding.
    if (!draft.outgoing && rt.credits.length > 0 && rt.jobs.length === 0 && this.#deps.isConnected(draft.params.device)) {
      if (await this.#proposeCredit(rt, draft, batch, settle)) dirty = true;
    }
    if (dirty) batch.writes.push({ kind: 'channel', record: draft as ChannelRecord });
  }

  /** @returns whether the draft changed */
  async #processUpdates(rt: Runtime, draft: { -readonly [K in keyof ChannelRecord]: ChannelRecord[K] }, group: Extract<Job, { t: 'update' }>[], batch: Batch): Promise<boolean> {
    const { crypto } = this.#deps;
    const candidates: Extract<Job, { t: 'update' }>[] = [];
    let prev = draft.latest.state;
    const startPaid = prev.paidByDevice;
    let routedPending = 0n;
    for (const job of group) {
      try {
        if (draft.status !== 'open') throw new TrickleError('CHANNEL_NOT_OPEN', 'channel is not open');
        const kind = checkTransition(prev, job.state, draft.funding, 'device');
        if (kind === 'duplicate') {
          // A replay of the current state: answer with the same countersignature, change nothing.
          if (prev === draft.latest.state && draft.latest.hubSig) {
            batch.frames.push({ t: 'ack', id: job.id, channelId: draft.channelId, version: prev.version, sig: signatureFromHex(draft.latest.hubSig) });
          }
          continue;
        }
        if (job.state.version <= draft.hubSignedVersion) {
          throw new TrickleError('STALE_VERSION', 'the hub already signed a state at this version', { details: { hubSignedVersion: draft.hubSignedVersion } });
        }
        if (job.route) {
          const paid = job.state.paidByDevice - prev.paidByDevice;
          if (job.route.amount > paid) throw new TrickleError('INSUFFICIENT_FUNDS', 'routed amount exceeds the payment in this update');
          this.#deps.checkRoute(draft.params.device, draft.params.token, job.route, routedPending);
          routedPending += job.route.amount;
        }
        if (job.route && job.escrowFor) throw new TrickleError('MALFORMED', 'an update is a routed payment or an escrow, not both');
        candidates.push(job);
        prev = job.state;
      } catch (e) {
        this.#deps.onOutcome(isTrickleError(e) ? e.code : 'INTERNAL');
        batch.frames.push(this.#reject(rt, job.id, e, draft.latest));
      }
    }
    let accepted: Extract<Job, { t: 'update' }> | undefined;
    let hubSig: Uint8Array | undefined;
    while (candidates.length > 0) {
      const last = candidates[candidates.length - 1]!;
      try {
        hubSig = await crypto.verifyAndSign(stateDigest(rt.ctx.separator, last.state), last.sig, draft.params.device);
        accepted = last;
        break;
      } catch (e) {
        const err = isTrickleError(e) ? e : new TrickleError('BAD_SIGNATURE', 'bad signature');
        this.#deps.onOutcome(err.code);
        batch.frames.push(this.#reject(rt, last.id, err, draft.latest));
        candidates.pop();
      }
    }
    if (!accepted || !hubSig) return false;
    draft.latest = { state: accepted.state, deviceSig: signatureToHex(accepted.sig), hubSig: signatureToHex(hubSig) };
    draft.hubSignedVersion = accepted.state.version;
    this.#dropOutgoing(rt, draft);
    this.#deps.onOutcome('accepted', candidates.length);
    let before = startPaid;
    for (const c of candidates) {
      const paid = c.state.paidByDevice - before;
      before = c.state.paidByDevice;
      if (c.escrowFor && paid > 0n) {
        const escrow: EscrowRecord = { orderId: c.escrowFor, device: draft.params.device, channelId: draft.channelId, amount: paid };
        batch.writes.push({ kind: 'meta', key: escrowKey(c.escrowFor), value: stringifyJson(escrow) });
        batch.after.push(() => this.#deps.onEscrow(escrow));
      }
      if (!c.route) continue;
      const route: RouteRecord = {
        paymentId: c.route.paymentId,
        from: draft.params.device,
        to: c.route.to,
        fromChannel: draft.channelId,
        amount: c.route.amount,
        status: 'pending',
      };
      batch.writes.push({ kind: 'route', route });
      batch.after.push(() => this.#deps.onRouted(route));
    }
    batch.frames.push({ t: 'ack', id: accepted.id, channelId: draft.channelId, version: accepted.state.version, sig: hubSig });
    return true;
  }

  /** A device state superseded the hub's outstanding proposal: the device will refuse it; re-propose later. */
  #dropOutgoing(rt: Runtime, draft: { outgoing?: ChannelRecord['outgoing'] }): void {
    if (!draft.outgoing) return;
    draft.outgoing = undefined;
    const credit = rt.inFlightCredit;
    rt.inFlightCredit = undefined;
    if (credit) rt.credits.unshift(credit);
  }

  async #proposeCredit(rt: Runtime, draft: { -readonly [K in keyof ChannelRecord]: ChannelRecord[K] }, batch: Batch, settle: (() => void)[]): Promise<boolean> {
    while (rt.credits.length > 0) {
      const credit = rt.credits.shift()!;
      const cur = draft.latest.state;
      const next: State = {
        ...cur,
        version: (cur.version > draft.hubSignedVersion ? cur.version : draft.hubSignedVersion) + 1n,
        paidByHub: cur.paidByHub + credit.amount,
        round: credit.round !== undefined && credit.round > cur.round ? credit.round : cur.round,
      };
      try {
        if (draft.status !== 'open') throw new TrickleError('CHANNEL_NOT_OPEN', 'channel is not open');
        checkTransition(cur, next, draft.funding, 'hub');
      } catch (e) {
        const err = isTrickleError(e) ? e : new TrickleError('INTERNAL', 'credit failed');
        settle.push(() => credit.reject(err));
        continue;
      }
      const hubSig = signatureToHex(await this.#deps.crypto.sign(stateDigest(rt.ctx.separator, next)));
      draft.outgoing = { state: next, hubSig, paymentId: credit.paymentId };
      draft.hubSignedVersion = next.version;
      rt.inFlightCredit = credit;
      rt.outgoingId = this.#outgoingSeq = (this.#outgoingSeq % 0x7fffffff) + 1;
      batch.after.push(() => this.#resendOutgoing(rt));
      return true;
    }
    return false;
  }

  #resendOutgoing(rt: Runtime): void {
    const out = rt.record.outgoing;
    if (!out) return;
    this.#send(rt, { t: 'update', id: rt.outgoingId || 1, state: out.state, sig: signatureFromHex(out.hubSig), paymentId: out.paymentId });
  }

  #failCredits(rt: Runtime, err: TrickleError): void {
    for (const c of rt.credits.splice(0)) c.reject(err);
  }
}
