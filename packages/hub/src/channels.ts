import { payouts, validateParams, zeroState, type ChannelContext } from '@trickle/protocol/channel';
import { channelIdOf, domainSeparator, stateDigest, trickleDomain } from '@trickle/protocol/eip712';
import { BadSignatureError, TrickleError, isTrickleError, type ErrorCode } from '@trickle/protocol/errors';
import {
  createEngineChannel,
  newestCandidate,
  step,
  storeFailure,
  type EngineChannel,
  type EngineCrypto,
  type EngineEffect,
  type EngineEvent,
  type EngineWrite,
  type LockTerms,
  type PendingCredit,
  type PeerUpdate,
  waitingRefs,
  lockSlotsLeft,
  DEFAULT_ENGINE_CONFIG,
} from '@trickle/protocol/engine';
import { deferralOf, hubRules, joinCredit } from '@trickle/protocol/engine-hub';
import type { Lock } from '@trickle/protocol/locks';
import type { Signer, Verifier } from '@trickle/protocol/signer';
import type { Keccak256 } from '@trickle/protocol/hex';
import type { HubCrypto, StateAnswer, StateDomain } from './crypto.js';
import { DEFAULT_HUB_LIMITS } from './options.js';
import type { Message, RouteInstruction, WireLock } from '@trickle/protocol/codec';
import type { Address, Bytes32, ChannelId, ChannelParams, Funding, SignedState, State } from '@trickle/protocol/types';
import { stringifyJson } from '@trickle/protocol/json';
import type { Committer } from './committer.js';
import { IdleRecords } from './idle-record.js';
import { fencedError } from './leases.js';
import {
  HASH_META,
  ROUTE_META,
  StoreRefusal,
  channelRecordJson,
  outcomeUnknown,
  staleChannels,
  type ChannelRecord,
  type ChannelStatus,
  type RouteRecord,
  type StoreWrite,
} from './store/types.js';

/** What the hub reads from the chain to admit a channel. */
export interface OnChainChannel {
  readonly status: ChannelStatus;
  readonly device: Address;
  readonly hub: Address;
  readonly token: Address;
  readonly funding: Funding;
  /** The version of the state registered by a force close or challenge, while `closing` (absent when not read). */
  readonly version?: bigint | undefined;
}

/** Hooks the channel table calls; the hub wires them to sessions, the router and metrics. */
export interface ChannelTableDeps {
  /** Hot-path signature work (verify device updates, countersign), inline or on worker threads. */
  readonly crypto: HubCrypto;
  /** The hub key for the rare synchronous signatures (credits, re-signing when a precomputed one does not apply). */
  readonly signer?: Signer | undefined;
  /** For synchronous checks (acks, states offered in a sync). */
  readonly verifier: Verifier;
  /** keccak-256 for state digests (the compiled one when installed: `bestKeccak256()`); default pure JS. */
  readonly keccak?: Keccak256 | undefined;
  readonly committer: Committer;
  /** Send a frame to a device if it is connected; false when it is not. */
  readonly send: (device: Address, msg: Message) => boolean;
  readonly isConnected: (device: Address) => boolean;
  /** A device update carrying a route was made durable: forward it. Default: nothing (a table that routes nothing). */
  readonly onRouted?: ((route: RouteRecord) => void) | undefined;
  /** Refuse a route before the payer's update is accepted (unknown payee, in-flight limit); `extra` is routed
   * earlier in the same batch; `lock` is the payer's lock for a conditional route. A promise when the answer needs
   * the store (a cluster looks up a payee served by another process); the update waits for it. Default: no refusal.
   * @throws TrickleError NO_ROUTE / LIMIT_EXCEEDED / EXPIRY_TOO_SHORT */
  readonly checkRoute?:
    | ((from: Address, token: Address, route: RouteInstruction, extra: bigint, lock?: WireLock) => void | Promise<void>)
    | undefined;
  /**
   * The step holding the updates of these routes (checked by `checkRoute`) has been answered: committed (its routes
   * forwarded through `onRouted` first), refused or failed. The router lets go of what it held for a route between its
   * check and its forward (its payment id; a conditional route's lock slot on the payee's channel).
   */
  readonly routeChecked?: ((paymentIds: readonly Bytes32[]) => void) | undefined;
  /**
   * Refuse an escrow payment (an update carrying an order id) on a channel in another token than the market's, or
   * under an order id that already has one: the escrow record is keyed by the id, so a second payment would overwrite
   * the first and the hub would keep it. A promise when the answer needs the store (a cluster); the update waits.
   * @throws TrickleError BAD_ORDER
   */
  readonly checkEscrow?: ((device: Address, orderId: Bytes32, token: Address) => void | Promise<void>) | undefined;
  /**
   * An escrow payment `checkEscrow` let through was refused by the engine (a bad signature, past the deposit, …): it
   * paid nothing, and the room `checkEscrow` counted for it in its round is given back.
   */
  readonly releaseEscrow?: ((orderId: Bytes32) => void) | undefined;
  /**
   * The channel's deposits as the chain holds them now (at the confirmed head), read when a device's update asks for
   * more than the deposits the hub knows cover: a top-up the hub's chain follower has not recorded yet. Undefined
   * when the read was not made (the device's share of chain reads is spent, the node failed): the update is then
   * judged on the deposits known, and refused `INSUFFICIENT_FUNDS` if they do not cover it.
   */
  readonly refreshFunding?: ((device: Address, channelId: ChannelId) => Promise<Funding | undefined>) | undefined;
  /**
   * When the preimage of `hash` was revealed on-chain (seconds; 0n never), read when a device takes back its lock after
   * the expiry: one revealed by then is the hub's on-chain (a payee cut off from the hub revealed it, the hub's chain
   * follower not there yet), and the engine refuses its return. Undefined: not read (the engine judges by its claims).
   * @throws TrickleError TIMEOUT (not readable now: the device proposes it again) / RATE_LIMITED
   */
  readonly revealedAt?: ((device: Address, hash: Bytes32) => Promise<bigint>) | undefined;
  /** Writes to commit with a routed payment's payer state besides its route record (a cluster's outbox row). */
  readonly routeWrites?: ((route: RouteRecord) => readonly StoreWrite[]) | undefined;
  /** A lock left a channel's latest state (claimed or refunded); durable. */
  readonly onLockSettled?:
    | ((channelId: ChannelId, lock: Lock, outcome: 'claimed' | 'refunded', preimage: Bytes32 | undefined) => void)
    | undefined;
  /** A payee showed the preimage of a lock the hub pays; durable (stored under {@link preimageKey}). */
  readonly onPreimage?: ((channelId: ChannelId, hash: Bytes32, preimage: Bytes32) => void) | undefined;
  /** Most pending locks per channel. */
  readonly maxLocks?: number | undefined;
  /**
   * A device paid the escrow of a market order (its update carried the order id); made durable with it. Default:
   * nothing.
   */
  readonly onEscrow?: ((escrow: EscrowRecord) => void) | undefined;
  /** Counts an update outcome for metrics: 'accepted' or an error code. Default: nothing. */
  readonly onOutcome?: ((outcome: 'accepted' | ErrorCode, n?: number) => void) | undefined;
  /** How many times a credit that crossed with a device update is proposed again. Default: the hub's (20). */
  readonly maxCreditRetries?: number | undefined;
  /** The clock (ms). Default: `Date.now()`. */
  readonly now?: (() => number) | undefined;
  /** Whether something outside the table (open market orders or escrows) still owes this channel a credit. */
  readonly owesCredit?: ((channelId: ChannelId, device: Address) => boolean) | undefined;
  /**
   * One channel's stored record (the store's `loadChannel`), read when a commit of the channel failed with its outcome
   * unknown: whether the stored record is the step's tells whether the step landed.
   */
  readonly loadChannel?: ((channelId: ChannelId) => Promise<ChannelRecord | undefined>) | undefined;
  /** A channel froze (its store write failed) or thawed. */
  readonly onFrozen?: ((channelId: ChannelId, frozen: boolean, cause?: unknown) => void) | undefined;
  /**
   * The hub-signed states a device refused but may still hold on a channel changed (see `UnsettledState`): `count`
   * now, `deferred` the credits whose callers (a routed payment's refund, a round's credit) wait for them to settle.
   */
  readonly onUnsettled?: ((channelId: ChannelId, count: number, deferred: number) => void) | undefined;
}

/** The deps a caller may leave out, each with a default (see the constructor). */
type Defaulted = 'onRouted' | 'checkRoute' | 'onEscrow' | 'onOutcome' | 'maxCreditRetries' | 'now';
type ResolvedDeps = Omit<ChannelTableDeps, Defaulted> & Required<Pick<ChannelTableDeps, Defaulted>>;

/** A payment a device made as the escrow of a market order. */
export interface EscrowRecord {
  readonly orderId: Bytes32;
  readonly device: Address;
  readonly channelId: ChannelId;
  readonly amount: bigint;
}

/** Store key marking that the hub's credit for `paymentId` was countersigned on `channelId`. */
export const creditedKey = (paymentId: Bytes32, channelId: ChannelId): string =>
  `${ROUTE_META.credited}${paymentId}/${channelId}`;

/** Store key of a preimage the hub learned from a payee (it claims the upstream lock with it, after a restart too). */
export const preimageKey = (hash: Bytes32): string => `${HASH_META.preimage}${hash}`;
/**
 * Store key written with {@link preimageKey} when a payee claims the hub's lock: that payee's conditional route (one
 * pending per hash and payee) is the one whose payer lock the hub claims, after a restart too — not another route on
 * the same hash, whose payer would otherwise buy the preimage for the price of its own lock.
 */
export const claimedKey = (hash: Bytes32, payee: Address): string => `${claimedPrefix(hash)}${payee}`;
/** Prefix of every {@link claimedKey} of one hash. */
export const claimedPrefix = (hash: Bytes32): string => `${HASH_META.claimed}${hash}/`;
/** Store key of a preimage revealed on-chain: every payee can claim with it, so every route on the hash is claimed. */
export const revealedKey = (hash: Bytes32): string => `${HASH_META.revealed}${hash}`;

/** Store key of an escrow record. */
export const escrowKey = (orderId: Bytes32): string => `market/escrow/${orderId}`;

/** The frame id of a claim the hub steps for the device (`payOutRevealed`): no wire id is negative. */
const OWN_CLAIM = -1;

/** Frames and facts for one channel, in arrival order. */
export type Job =
  /** A device's update: the engine's `PeerUpdate` as it is, handed to the step without a copy. */
  | ({ readonly t: 'update' } & PeerUpdate)
  /** The device (a lock's payee) showed a preimage. */
  | {
      readonly t: 'claim';
      readonly id: number;
      readonly hash: Bytes32;
      readonly preimage: Bytes32;
      /** Read from the adjudicator for a claim of the hub's lock past its expiry (see the engine's `peer-claim`). */
      readonly revealedAt?: bigint | undefined;
    }
  /** The hub claims a lock the device pays. */
  | {
      readonly t: 'hub-claim';
      readonly ref: number;
      readonly hash: Bytes32;
      readonly preimage: Bytes32;
      readonly revealedAt?: bigint | undefined;
    }
  /** The hub gives back a lock the device pays (a dead route's). */
  | { readonly t: 'give-back'; readonly ref: number; readonly hash: Bytes32 }
  | { readonly t: 'ack'; readonly id: number; readonly version: bigint; readonly sig: Uint8Array }
  | { readonly t: 'reject'; readonly id: number; readonly code: ErrorCode; readonly message?: string }
  | { readonly t: 'close'; readonly id: number; readonly state: State; readonly sig?: Uint8Array | undefined }
  | {
      readonly t: 'sync';
      readonly id: number;
      readonly latest: SignedState | null;
      readonly locks?: readonly Lock[] | undefined;
    }
  | { readonly t: 'kick' }
  | {
      readonly t: 'credit';
      readonly ref: number;
      readonly amount: bigint;
      readonly paymentId?: Bytes32 | undefined;
      readonly round?: bigint | undefined;
      readonly lock?: LockTerms | undefined;
    }
  | {
      readonly t: 'chain';
      readonly funding?: Funding | undefined;
      readonly status?: ChannelStatus | undefined;
      readonly version?: bigint | undefined;
      readonly done: () => void;
      readonly fail: (e: TrickleError) => void;
    };

interface Caller {
  readonly resolve: (s: SignedState) => void;
  readonly reject: (e: TrickleError) => void;
  /** A credit of a payment or a market round: its key in `#crediting`. */
  readonly key?: string | undefined;
}

interface Runtime {
  channel: EngineChannel;
  /** The durable record, derived from `channel` on demand. */
  record: ChannelRecord | undefined;
  jobs: Job[];
  busy: boolean;
  /** Set while the store refuses this channel's writes: new work is answered STORE_FAILURE until a probe succeeds. */
  frozen: unknown;
  /** Replaced by a reloaded runtime (a cluster took the channel over again): this one commits nothing more. */
  retired?: boolean;
  /**
   * A step whose commit's outcome is unknown, held unanswered until the stored record tells (see #commitFailed).
   * Meanwhile nothing changes `channel`: the step, if it landed, replaces it (see #refuseFrozen).
   */
  unknown?: FailedStep | undefined;
  /**
   * A device update that arrived while the channel's drain was busy (its previous step waiting for its commit), with
   * its signature work started at once on the crypto workers: the step that takes it finds the answer ready instead
   * of starting that work once the commit is done (a worker round trip on every update's path to its own commit).
   */
  early?: { readonly job: Job; readonly answer: Promise<StateAnswer> } | undefined;
  /** The jobs of the step under way, from their turn until it is answered (its outcome in `channel`, or refused). */
  stepping?: readonly Job[] | undefined;
}

/** A step's jobs as engine events, with what was checked for them before the step. */
interface StepEvents {
  readonly list: EngineEvent[];
  readonly jobs: Job[];
  readonly crypto: EngineCrypto;
  readonly escrows: Map<number, Bytes32> | undefined;
  /** Payment ids of the routes `checkRoute` let through in this step. */
  readonly routes: Bytes32[] | undefined;
}

/** How many of `jobs` are credits paying a lock (each takes a lock slot once stepped). */
function lockCredits(jobs: readonly Job[] | undefined): number {
  let n = 0;
  if (jobs) for (const j of jobs) if (j.t === 'credit' && j.lock !== undefined) n++;
  return n;
}

/** A step whose commit failed: discarded, or held until the commit's outcome is known. */
interface FailedStep {
  readonly cause: unknown;
  readonly before: EngineChannel;
  readonly after: EngineChannel;
  readonly effects: EngineEffect[];
  readonly events: { readonly list: EngineEvent[]; readonly jobs: Job[] };
}

/** Restored credits have no caller yet: negative refs, claimed when the router or the market asks for them again. */
const RESTORED_REF = -1;
const PROBE_MS = [100, 250, 500, 1000, 2000];

/**
 * The hub's channels: a thin shell around the protocol's channel engine. Per channel, jobs are reduced in order
 * with `step`; the group commit makes the step durable; only then are frames sent and callers answered. A failed
 * commit discards the step, freezes that channel with `STORE_FAILURE` and leaves the others serving; a probe write
 * thaws it once the store accepts writes again.
 */
export class ChannelTable {
  readonly #deps: ResolvedDeps;
  /** A channel with nothing to do and its device offline is kept as its packed record (see idle-record.ts). */
  readonly #channels = new Map<ChannelId, Runtime | string>();
  /** A device's channel ids: one id, or a set when it has several. */
  readonly #byDevice = new Map<Address, ChannelId | Set<ChannelId>>();
  readonly #idle = new IdleRecords();
  readonly #callers = new Map<number, Caller>();
  /**
   * Credits of a payment (or a market round) whose caller waits, by channel, terms and amount: the ref a credit asked
   * again waits on. The engine joins one asked while the first waits in it (`joinCredit`, a restored credit included);
   * this covers what the engine cannot see — the step that answers the first being committed, or stepped in the same
   * batch as the second — where the second would be proposed anew once the first landed, and the device paid twice.
   */
  readonly #crediting = new Map<string, number>();
  /** Channels with hub-signed states their device refused but may still hold, and how many. */
  readonly #unsettled = new Map<ChannelId, number>();
  #ref = 0;
  /** One engine config for every channel (resolved once by the engine). */
  readonly #config: { readonly maxCreditRetries: number; readonly maxLocks?: number };
  /** One domain separator per (chain, adjudicator), shared by all its channels. */
  readonly #separators = new Map<string, Uint8Array>();
  /** The state domain of each separator, for the crypto backend. */
  readonly #domains = new WeakMap<Uint8Array, StateDomain>();

  constructor(deps: ChannelTableDeps) {
    const nothing = (): void => {};
    const maxCreditRetries = deps.maxCreditRetries ?? DEFAULT_HUB_LIMITS.maxCreditRetries;
    this.#deps = {
      ...deps,
      onRouted: deps.onRouted ?? nothing,
      checkRoute: deps.checkRoute ?? nothing,
      onEscrow: deps.onEscrow ?? nothing,
      onOutcome: deps.onOutcome ?? nothing,
      maxCreditRetries,
      now: deps.now ?? (() => Date.now()),
    };
    this.#config = deps.maxLocks === undefined ? { maxCreditRetries } : { maxCreditRetries, maxLocks: deps.maxLocks };
  }

  /** Load channels from the store at startup. */
  restore(records: readonly ChannelRecord[]): void {
    for (const r of records) {
      this.#add(r);
      if (r.unsettled) this.#unsettled.set(r.channelId, r.unsettled.length);
    }
  }

  /** How many hub-signed states devices refused but may still hold, over every channel (see `UnsettledState`). */
  unsettledCount(): number {
    let n = 0;
    for (const c of this.#unsettled.values()) n += c;
    return n;
  }

  get size(): number {
    return this.#channels.size;
  }

  /** The durable record of a channel, if known. */
  get(channelId: ChannelId): ChannelRecord | undefined {
    const rt = this.#channels.get(channelId);
    if (typeof rt === 'string') return this.#idle.unpack(channelId, rt);
    return rt ? this.#recordOf(rt) : undefined;
  }

  /** Whether a channel is frozen by a store failure. */
  isFrozen(channelId: ChannelId): boolean {
    const rt = this.#channels.get(channelId);
    return typeof rt === 'object' && rt.frozen !== undefined;
  }

  /** Channel ids of one device. */
  channelsOf(device: Address): ChannelId[] {
    const ids = this.#byDevice.get(device);
    return ids === undefined ? [] : typeof ids === 'string' ? [ids] : [...ids];
  }

  /** Every channel record (for metrics and batch operations). */
  *records(): IterableIterator<ChannelRecord> {
    for (const [id, rt] of this.#channels)
      yield typeof rt === 'string' ? this.#idle.unpack(id, rt) : this.#recordOf(rt);
  }

  /** The runtime of a channel, rebuilt from its packed record if it was idle. */
  #runtime(channelId: ChannelId): Runtime | undefined {
    const rt = this.#channels.get(channelId);
    if (typeof rt !== 'string') return rt;
    const woken = this.#build(this.#idle.unpack(channelId, rt));
    this.#channels.set(channelId, woken);
    return woken;
  }

  /**
   * Keep a channel that has nothing to do, and whose device is offline, as its packed record: the engine value it
   * is rebuilt into on its next job is the one a restarted hub would build from the same record (nothing in flight,
   * nothing signed or proposed beyond the latest state), so nothing but memory changes.
   */
  #rest(rt: Runtime): void {
    if (rt.busy || rt.retired || rt.frozen !== undefined || rt.jobs.length > 0) return;
    const ch = rt.channel;
    const v = ch.latest.state.version;
    if (
      ch.queue.length > 0 ||
      ch.proposals.length > 0 ||
      ch.routed.length > 0 ||
      ch.early.length > 0 ||
      ch.closeRefs.length > 0 ||
      ch.claims.length > 0 ||
      ch.contested.length > 0 ||
      ch.locks.length > 0 ||
      ch.signedVersion !== v ||
      ch.peerVersion !== v ||
      ch.evidenceCount !== 0 ||
      this.#channels.get(ch.ctx.channelId) !== rt ||
      this.#deps.isConnected(ch.ctx.params.device)
    )
      return;
    const packed = this.#idle.pack(this.#recordOf(rt));
    if (packed !== undefined) this.#channels.set(ch.ctx.channelId, packed);
  }

  #recordOf(rt: Runtime): ChannelRecord {
    return (rt.record ??= recordOf(rt.channel));
  }

  #add(record: ChannelRecord): void {
    const old = this.#channels.get(record.channelId);
    // A reloaded channel whose runtime is still in use (a cluster took it over again) gets a new runtime at once.
    const packed = typeof old === 'object' ? undefined : this.#idle.pack(record);
    this.#channels.set(record.channelId, packed ?? this.#build(record, old));
    const ids = this.#byDevice.get(record.params.device);
    if (ids === undefined) this.#byDevice.set(record.params.device, record.channelId);
    else if (typeof ids === 'object') ids.add(record.channelId);
    else if (ids !== record.channelId) this.#byDevice.set(record.params.device, new Set([ids, record.channelId]));
  }

  #build(record: ChannelRecord, old?: Runtime | string): Runtime {
    const p = record.params;
    const key = `${p.chainId}:${p.adjudicator}`;
    let separator = this.#separators.get(key);
    if (!separator) this.#separators.set(key, (separator = domainSeparator(trickleDomain(p.chainId, p.adjudicator))));
    const ctx: ChannelContext = { params: p, channelId: record.channelId, separator, funding: record.funding };
    const channel = createEngineChannel(
      {
        role: 'hub',
        ctx,
        status: record.status,
        latest: record.latest,
        locks: record.locks,
        signedVersion: record.hubSignedVersion,
        outgoing: record.outgoing
          ? {
              state: record.outgoing.state,
              sig: record.outgoing.hubSig,
              paymentId: record.outgoing.paymentId,
              ref: RESTORED_REF,
              locks: record.outgoing.locks,
              lock: record.outgoing.lock,
              unlock: record.outgoing.unlock,
            }
          : undefined,
        evidenceCount: record.evidenceCount,
        unsettled: record.unsettled,
        config: this.#config,
      },
      hubRules,
    );
    const rt: Runtime = { channel, record, jobs: [], busy: false, frozen: undefined };
    if (typeof old === 'object') {
      // Reloaded (a cluster process took the channel over again): the old runtime stops before its next commit —
      // checked in the same turn as the committer captures the lease epoch — and its queued jobs move here.
      old.retired = true;
      rt.jobs = old.jobs.splice(0);
      // Its callers (a market round's credit, a routed payment's, a claim) are answered as fenced: their caller tries
      // again, and a credit tried again joins the proposal the new runtime restored from the record. Left waiting,
      // a market clock that pays a channel's rounds one at a time waited for ever.
      this.#abandon(old.channel, old.unknown?.events.list);
    }
    return rt;
  }

  /** Answer, as fenced, the callers waiting on a runtime replaced by a reload, and those of `events` it took in. */
  #abandon(ch: EngineChannel, events: readonly EngineEvent[] = []): void {
    const error = fencedError([ch.ctx.channelId]);
    for (const ref of waitingRefs(ch)) this.#take(ref)?.reject(error);
    for (const d of ch.deferred ?? []) for (const ref of [d.ref, ...(d.joined ?? [])]) this.#take(ref)?.reject(error);
    for (const ev of events) if (ev.type === 'credit' || ev.type === 'claim') this.#take(ev.ref)?.reject(error);
  }

  /**
   * Admit a channel the device announced, after checking it on-chain: same id, parties, token, open and funded.
   * Idempotent. @returns the hub's latest state of it
   * @throws TrickleError CHANNEL_NOT_OPEN / WRONG_CHANNEL / STORE_FAILURE
   */
  async admit(
    params: ChannelParams,
    device: Address,
    onChain: OnChainChannel | undefined,
    expected: { chainId: bigint; adjudicator: Address },
  ): Promise<SignedState> {
    validateParams(params);
    const mismatch = (what: string, ours: unknown, theirs: unknown) =>
      new TrickleError('WRONG_CHANNEL', what, { details: { hub: String(ours), device: String(theirs) } });
    if (params.device !== device) throw mismatch('channel belongs to another device', device, params.device);
    if (params.hub !== this.#deps.crypto.address)
      throw mismatch('channel is with another hub', this.#deps.crypto.address, params.hub);
    if (params.chainId !== expected.chainId)
      throw mismatch('channel is on another chain', expected.chainId, params.chainId);
    if (params.adjudicator !== expected.adjudicator)
      throw mismatch('channel is on another adjudicator', expected.adjudicator, params.adjudicator);
    const channelId = channelIdOf(params);
    const existing = this.#runtime(channelId);
    if (existing) return existing.channel.latest;
    if (!onChain || onChain.status !== 'open')
      throw new TrickleError('CHANNEL_NOT_OPEN', 'the hub has not seen this channel open on-chain');
    if (onChain.device !== params.device || onChain.hub !== params.hub || onChain.token !== params.token) {
      throw new TrickleError('WRONG_CHANNEL', 'on-chain channel does not match the parameters');
    }
    const record: ChannelRecord = {
      params,
      channelId,
      funding: onChain.funding,
      status: 'open',
      latest: { state: zeroState(channelId) },
      hubSignedVersion: 0n,
    };
    try {
      await this.#deps.committer.write([{ kind: 'channel', record }]);
    } catch (e) {
      throw isTrickleError(e, 'STORE_FAILURE') ? e : storeFailure(e);
    }
    if (!this.#channels.has(channelId)) this.#add(record);
    return this.#runtime(channelId)!.channel.latest;
  }

  /**
   * Funding or status seen on-chain. Goes through the channel's job queue like every other change; resolves once
   * durable (retried while the store fails: an on-chain fact is never dropped).
   */
  onChain(
    channelId: ChannelId,
    change: { funding?: Funding; status?: ChannelStatus; version?: bigint | undefined },
  ): Promise<void> {
    const rt = this.#runtime(channelId);
    if (!rt) return Promise.resolve();
    return new Promise((resolve, reject) => {
      rt.jobs.push({
        t: 'chain',
        funding: change.funding,
        status: change.status,
        version: change.version,
        done: resolve,
        fail: reject,
      });
      this.#pump(rt);
    });
  }

  /** Queue a frame from the device for its channel. Throws synchronously for an unknown or foreign channel. */
  enqueue(device: Address, channelId: ChannelId, job: Job): void {
    const rt = this.#runtime(channelId);
    if (!rt || rt.channel.ctx.params.device !== device) {
      if (rt) this.#rest(rt); // woken for another device's frame: packed again if it was idle
      throw new TrickleError('WRONG_CHANNEL', 'unknown channel, or not this device’s');
    }
    if (job.t === 'update' && rt.busy) this.#startEarly(rt, job);
    rt.jobs.push(job);
    this.#pump(rt);
  }

  /**
   * Start the signature work of `job`, an update queued behind a busy drain, when it is the only update waiting (the
   * engine countersigns the newest candidate only: with two waiting, the work for the first would be wasted, and the
   * step does it for the newest as before). Pure work on the state as signed, for this channel's device and domain:
   * whether the step takes it is decided there, as for any update.
   */
  #startEarly(rt: Runtime, job: Extract<Job, { t: 'update' }>): void {
    const backend = this.#deps.crypto;
    if (!backend.verifyAndSignState || job.state.version <= rt.channel.latest.state.version) return;
    if (rt.jobs.some((j) => j.t === 'update')) {
      rt.early = undefined;
      return;
    }
    const ctx = rt.channel.ctx;
    const answer = backend
      .verifyAndSignState(job.state, job.sig, ctx.params.device, this.#domainOf(ctx))
      .then(undefined, (e: unknown): StateAnswer => ({
        digest: undefined,
        error: isTrickleError(e) ? e : new TrickleError('INTERNAL', String(e)),
      }));
    rt.early = { job, answer };
  }

  /**
   * Pay a device from the hub: the hub signs first, the device countersigns.
   * @returns the fully signed state once it is durable
   * @throws TrickleError CHANNEL_NOT_OPEN / INSUFFICIENT_FUNDS / STORE_FAILURE / the device's refusal code
   */
  credit(
    channelId: ChannelId,
    amount: bigint,
    meta: { paymentId?: Bytes32 | undefined; round?: bigint | undefined; lock?: LockTerms | undefined } = {},
  ): Promise<SignedState> {
    const rt = this.#runtime(channelId);
    if (!rt) return Promise.reject(new TrickleError('WRONG_CHANNEL', 'unknown channel'));
    // A channel not open takes no credit, but one of a payment whose state the device may still register on-chain
    // waits for that state to settle (see `UnsettledState`).
    const ch = rt.channel;
    const held = meta.paymentId !== undefined && ch.unsettled?.some((u) => u.paymentId === meta.paymentId);
    if ((ch.status !== 'open' || ch.latest.state.isFinal) && !held)
      return Promise.reject(new TrickleError('CHANNEL_NOT_OPEN', 'channel is not open'));
    // The same credit asked again while the first's caller waits is answered with it: joined here while that answer
    // is on its way, and in the engine (`joinCredit`) while the credit waits there.
    const key =
      meta.paymentId !== undefined
        ? `${channelId}/${meta.paymentId}/${amount}/${meta.lock?.hash ?? ''}`
        : meta.round !== undefined
          ? `${channelId}/round ${meta.round}/${amount}`
          : undefined;
    const first = key !== undefined ? this.#crediting.get(key) : undefined;
    const waiting = first !== undefined ? this.#callers.get(first) : undefined;
    if (first !== undefined && waiting)
      return new Promise((resolve, reject) => {
        this.#callers.set(first, {
          key,
          resolve: (s) => {
            waiting.resolve(s);
            resolve(s);
          },
          reject: (e) => {
            waiting.reject(e);
            reject(e);
          },
        });
      });
    return new Promise((resolve, reject) => {
      const ref = (this.#ref = (this.#ref % 0x7fffffff) + 1);
      this.#callers.set(ref, { resolve, reject, key });
      if (key !== undefined) this.#crediting.set(key, ref);
      rt.jobs.push({ t: 'credit', ref, amount, paymentId: meta.paymentId, round: meta.round, lock: meta.lock });
      this.#pump(rt);
    });
  }

  /**
   * Claim a lock the device pays toward the hub: show it the preimage (again after every reconnect). Past the lock's
   * expiry the claim stands only with `revealedAt` (seconds; 0n never) at or before it: the preimage on-chain in time.
   * @returns the state that claimed it, once durable
   * @throws TrickleError UNKNOWN_LOCK / BAD_PREIMAGE / LOCK_EXPIRED / the device's refusal code
   */
  claim(channelId: ChannelId, hash: Bytes32, preimage: Bytes32, revealedAt?: bigint): Promise<SignedState> {
    const rt = this.#runtime(channelId);
    if (!rt) return Promise.reject(new TrickleError('WRONG_CHANNEL', 'unknown channel'));
    return new Promise((resolve, reject) => {
      const ref = (this.#ref = (this.#ref % 0x7fffffff) + 1);
      this.#callers.set(ref, { resolve, reject });
      rt.jobs.push({ t: 'hub-claim', ref, hash, preimage, revealedAt });
      this.#pump(rt);
    });
  }

  /**
   * Give back a lock the device pays the hub (its route died: the payee refused the hub's lock, or it could not be
   * placed): the hub proposes the state without it, no counter moved, ahead of its queued credits, and again after
   * every reconnect of the device until it is countersigned. Resolves with that state; refused `UNKNOWN_LOCK` once the
   * lock is gone (taken back after its expiry meanwhile), `LOCK_CLAIMED` if the hub showed its preimage.
   */
  giveBack(channelId: ChannelId, hash: Bytes32): Promise<SignedState> {
    const rt = this.#runtime(channelId);
    if (!rt) return Promise.reject(new TrickleError('WRONG_CHANNEL', 'unknown channel'));
    return new Promise((resolve, reject) => {
      const ref = (this.#ref = (this.#ref % 0x7fffffff) + 1);
      this.#callers.set(ref, { resolve, reject });
      rt.jobs.push({ t: 'give-back', ref, hash });
      this.#pump(rt);
    });
  }

  /**
   * Pay the device a lock the hub pays it, whose preimage was revealed on-chain (`revealedAt`, the block's time): the
   * adjudicator pays it to the device at settlement, and the hub claims the payer's lock of its route with the same
   * preimage, so the hub proposes the claim itself — as it would if the device showed the preimage, which a device that
   * reads no chain and never knew the key cannot. Refusals (the lock gone or taken back meanwhile) are not sent: the
   * device asked nothing.
   */
  payOutRevealed(channelId: ChannelId, hash: Bytes32, preimage: Bytes32, revealedAt: bigint | undefined): void {
    const rt = this.#runtime(channelId);
    if (!rt) return;
    rt.jobs.push({ t: 'claim', id: OWN_CLAIM, hash, preimage, revealedAt });
    this.#pump(rt);
  }

  /**
   * How many more locks the channel can take now (the engine's `lockSlotsLeft`: its limit less the locks pending,
   * queued or proposed), less the lock credits waiting for their step or in the step under way (the engine has not
   * seen them yet). A packed record has none queued or proposed: its limit less its pending locks.
   */
  lockRoom(channelId: ChannelId): number {
    const rt = this.#channels.get(channelId);
    if (typeof rt === 'object') return lockSlotsLeft(rt.channel) - lockCredits(rt.jobs) - lockCredits(rt.stepping);
    const r = this.get(channelId);
    return r ? (this.#config.maxLocks ?? DEFAULT_ENGINE_CONFIG.maxLocks) - (r.locks?.length ?? 0) : 0;
  }

  /** The pending locks of a channel's latest state. */
  locksOf(channelId: ChannelId): readonly Lock[] {
    const rt = this.#channels.get(channelId);
    return typeof rt === 'object' ? rt.channel.locks : []; // a packed record has no locks
  }

  /** The device (re)connected: propose pending credits and resend an outstanding proposal. */
  deviceConnected(device: Address): void {
    for (const id of this.channelsOf(device)) this.#kick(id);
  }

  /** The device went offline: keep its channels that have nothing to do as packed records. */
  deviceDisconnected(device: Address): void {
    for (const id of this.channelsOf(device)) {
      const rt = this.#channels.get(id);
      if (typeof rt === 'object') this.#rest(rt);
    }
  }

  #pump(rt: Runtime): void {
    if (rt.busy || rt.retired) return;
    rt.busy = true;
    void this.#drain(rt);
  }

  /**
   * Reduce every queued job, commit once, then act; at the end, pump again for jobs that came meanwhile, or rest.
   * (That tail is this function's own `finally`, not a `.finally()` on its promise: no closure and promises per
   * drain, and a device paying in a closed loop makes one drain per update or two.)
   */
  async #drain(rt: Runtime): Promise<void> {
    try {
      while (rt.jobs.length > 0 && !rt.retired) {
        const jobs = rt.jobs.splice(0);
        const early = rt.early;
        rt.early = undefined;
        if (rt.frozen !== undefined) {
          // Frozen: new work is refused at once; on-chain facts wait for the thaw.
          this.#refuseFrozen(rt, jobs);
          return;
        }
        const before = rt.channel;
        rt.stepping = jobs;
        let events: StepEvents | undefined;
        try {
          events = await this.#events(rt, jobs, early);
          const env = { crypto: events.crypto, now: this.#deps.now() };
          let ch = before;
          const effects: EngineEffect[] = [];
          let gate = false;
          const writes: EngineWrite[] = [];
          const connected = this.#deps.isConnected(ch.ctx.params.device);
          if (connected !== ch.connected) {
            const r = step(ch, { type: connected ? 'connected' : 'disconnected' }, env);
            ch = r.channel;
            if (collectEffects(r.effects, effects, writes)) gate = true;
          }
          for (const ev of events.list) {
            const r = step(ch, ev, env);
            ch = r.channel;
            if (collectEffects(r.effects, effects, writes)) gate = true;
          }
          if (rt.retired) {
            // Replaced meanwhile: this step is discarded, the new runtime serves the channel.
            this.#abandon(before, events.list);
            return;
          }
          // Only what reaches the store: a reconnect, a sync at the same state or a credit joined changes the channel
          // object (its connection, callers) but not its record, and writes nothing (1,000 reconnects were 1,000 writes).
          if (gate || writes.length > 0 || recordChanged(before, ch)) {
            try {
              await this.#deps.committer.write(this.#storeWrites(ch, writes));
            } catch (e) {
              if (e instanceof StoreRefusal) {
                this.#stepRefused(rt, e, events);
                continue;
              }
              const outcome = outcomeUnknown(e) && this.#deps.loadChannel ? 'unknown' : 'failed';
              this.#commitFailed(rt, outcome, { cause: e, before, after: ch, effects, events });
              continue;
            }
          }
          this.#landed(rt, before, ch, effects, events.jobs);
          if (events.escrows) this.#releaseRefused(events.escrows, effects);
        } finally {
          rt.stepping = undefined;
          // Answered, whichever way: what the router held for these routes until now is let go of.
          if (events?.routes) this.#deps.routeChecked?.(events.routes);
        }
      }
    } finally {
      rt.busy = false;
      if (rt.jobs.length > 0 && rt.frozen === undefined) this.#pump(rt);
      else this.#rest(rt);
    }
  }

  /** The escrow payments of a step the engine answered with a reject: the room checked for them is given back. */
  #releaseRefused(escrows: Map<number, Bytes32>, effects: readonly EngineEffect[]): void {
    for (const e of effects)
      if (e.type === 'send' && e.msg.t === 'reject') {
        const orderId = escrows.get(e.msg.id);
        if (orderId !== undefined) this.#deps.releaseEscrow?.(orderId);
      }
  }

  /** A step's commit is durable: it takes effect. */
  #landed(rt: Runtime, before: EngineChannel, ch: EngineChannel, effects: EngineEffect[], jobs: readonly Job[]): void {
    rt.channel = ch;
    if (ch !== before) rt.record = undefined;
    if (ch.unsettled !== before.unsettled || ch.deferred !== before.deferred) this.#noteUnsettled(ch);
    for (const j of jobs) if (j.t === 'chain') j.done();
    this.#act(rt, effects);
  }

  #noteUnsettled(ch: EngineChannel): void {
    const id = ch.ctx.channelId;
    const n = ch.unsettled?.length ?? 0;
    if (n > 0) this.#unsettled.set(id, n);
    else this.#unsettled.delete(id);
    this.#deps.onUnsettled?.(id, n, ch.deferred?.length ?? 0);
  }

  #domainOf(ctx: ChannelContext): StateDomain {
    let d = this.#domains.get(ctx.separator);
    if (d === undefined) {
      d = { separator: ctx.separator, chainId: ctx.params.chainId, adjudicator: ctx.params.adjudicator };
      this.#domains.set(ctx.separator, d);
    }
    return d;
  }

  /** Turn jobs into engine events, and do the signature work of the newest device update off the event loop. */
  async #events(rt: Runtime, jobs: Job[], early: Runtime['early']): Promise<StepEvents> {
    const list: EngineEvent[] = [];
    const ch = rt.channel;
    const { device, token } = ch.ctx.params;
    const crypto = new StepCrypto(ch.ctx.separator, device, this.#deps);
    /** Escrow payments let through by checkEscrow, by frame id (their room is given back if the engine refuses them). */
    let checkedEscrows: Map<number, Bytes32> | undefined;
    let checkedRoutes: Bytes32[] | undefined;
    for (let i = 0; i < jobs.length;) {
      const job = jobs[i]!;
      if (job.t === 'update') {
        const updates: PeerUpdate[] = [];
        let routed = 0n;
        let escrows: Set<Bytes32> | undefined;
        while (i < jobs.length && jobs[i]!.t === 'update') {
          const u = jobs[i++] as Extract<Job, { t: 'update' }>;
          // (A replay of the current state, or a stale one, is the engine's to answer: its escrow is the one on record.)
          if (
            u.escrowFor !== undefined &&
            !u.route &&
            this.#deps.checkEscrow &&
            u.state.version > ch.latest.state.version
          ) {
            try {
              if (escrows?.has(u.escrowFor))
                throw new TrickleError('BAD_ORDER', 'an escrow is already paid under this order id');
              const checking = this.#deps.checkEscrow(device, u.escrowFor, token);
              if (checking) await checking;
              (escrows ??= new Set()).add(u.escrowFor);
              (checkedEscrows ??= new Map()).set(u.id, u.escrowFor);
            } catch (e) {
              this.#refuseFrame(rt, u.id, e);
              continue;
            }
          }
          if (u.route) {
            try {
              const checking = this.#deps.checkRoute(device, token, u.route, routed, u.lock);
              (checkedRoutes ??= []).push(u.route.paymentId);
              if (checking) await checking;
              routed += u.route.amount;
            } catch (e) {
              this.#refuseFrame(rt, u.id, e);
              continue;
            }
          }
          if (u.unlock && u.unlock.preimage === undefined && this.#deps.revealedAt) {
            const hash = u.unlock.hash;
            if (ch.locks.some((l) => l.hash === hash && l.payer === 'device')) {
              try {
                updates.push({ ...u, revealedAt: await this.#deps.revealedAt(device, hash) });
              } catch (e) {
                this.#refuseFrame(rt, u.id, e);
              }
              continue;
            }
          }
          updates.push(u);
        }
        if (updates.length === 0) continue;
        // Counters are cumulative: the newest update asks the most of the device's deposit. If the deposits known do
        // not cover it, the device may have topped up since the chain follower last looked: read them again first.
        const newest = updates[updates.length - 1]!.state;
        if (this.#deps.refreshFunding && newest.version > ch.latest.state.version) {
          const known = list.reduce<Funding>((f, e) => (e.type === 'funding' ? e.funding : f), ch.ctx.funding);
          if (payouts(newest, known).device < 0n) {
            const f = await this.#deps.refreshFunding(device, ch.ctx.channelId);
            if (f && (f.device > known.device || f.hub > known.hub))
              list.push({
                type: 'funding',
                funding: {
                  device: f.device > known.device ? f.device : known.device,
                  hub: f.hub > known.hub ? f.hub : known.hub,
                },
              });
          }
        }
        // The engine verifies and countersigns the newest candidate only: do that work on the crypto workers now.
        const k = newestCandidate(ch, updates);
        if (k >= 0) {
          const { state, sig } = updates[k]!;
          // A backend that digests states too does the whole work off the event loop (two keccaks per update).
          const backend = this.#deps.crypto;
          const prefetched = early !== undefined && early.job === updates[k] ? early.answer : undefined;
          const answer = prefetched
            ? await prefetched
            : backend.verifyAndSignState
              ? await backend.verifyAndSignState(state, sig, device, this.#domainOf(ch.ctx))
              : undefined;
          if (answer?.digest) crypto.answered(state, answer.digest, answer.sig, answer.error);
          else {
            const d = crypto.digest(state);
            try {
              crypto.answered(state, d, await backend.verifyAndSign(d, sig, device), undefined);
            } catch (e) {
              crypto.answered(state, d, undefined, isTrickleError(e) ? e : new BadSignatureError('bad signature'));
            }
          }
        }
        list.push({ type: 'peer-updates', updates });
        continue;
      }
      i++;
      switch (job.t) {
        case 'ack':
          list.push({ type: 'peer-ack', id: job.id, version: job.version, sig: job.sig });
          break;
        case 'reject':
          list.push({ type: 'peer-reject', id: job.id, code: job.code, message: job.message });
          break;
        case 'close':
          list.push({
            type: 'peer-close',
            id: job.id,
            state: job.state,
            sig: job.sig,
            owes: this.#deps.owesCredit?.(ch.ctx.channelId, ch.ctx.params.device) ?? false,
          });
          break;
        case 'sync':
          list.push({ type: 'peer-sync', id: job.id, latest: job.latest, locks: job.locks });
          break;
        case 'credit':
          list.push({
            type: 'credit',
            ref: job.ref,
            amount: job.amount,
            paymentId: job.paymentId,
            round: job.round,
            lock: job.lock,
          });
          break;
        case 'claim':
          list.push({
            type: 'peer-claim',
            id: job.id,
            hash: job.hash,
            preimage: job.preimage,
            revealedAt: job.revealedAt,
          });
          break;
        case 'hub-claim':
          list.push({
            type: 'claim',
            ref: job.ref,
            hash: job.hash,
            preimage: job.preimage,
            revealedAt: job.revealedAt,
          });
          break;
        case 'give-back':
          list.push({ type: 'give-back', ref: job.ref, hash: job.hash });
          break;
        case 'chain':
          if (job.funding) list.push({ type: 'funding', funding: job.funding });
          if (job.status) list.push({ type: 'chain-status', status: job.status, version: job.version });
          break;
        case 'kick':
          list.push({ type: 'tick' });
          break;
      }
    }
    return { list, jobs, crypto, escrows: checkedEscrows, routes: checkedRoutes };
  }

  #storeWrites(ch: EngineChannel, writes: readonly EngineWrite[]): StoreWrite[] {
    const channelId = ch.ctx.channelId;
    const out: StoreWrite[] = [];
    // The evidence of these writes fills the channel's slots just below its (already raised) count.
    let seq = ch.evidenceCount;
    for (const w of writes) if (w.kind === 'evidence') seq--;
    for (const w of writes) {
      switch (w.kind) {
        case 'credited':
          out.push({ kind: 'meta', key: creditedKey(w.paymentId, channelId), value: String(w.version) });
          break;
        case 'route': {
          const route = routeRecord(ch, w.route, w.lock);
          out.push({ kind: 'route', route }, ...(this.#deps.routeWrites?.(route) ?? []));
          break;
        }
        case 'preimage':
          out.push(
            { kind: 'meta', key: preimageKey(w.hash), value: w.preimage },
            { kind: 'meta', key: claimedKey(w.hash, ch.ctx.params.device), value: w.preimage },
          );
          break;
        case 'escrow': {
          const escrow: EscrowRecord = {
            orderId: w.orderId,
            device: ch.ctx.params.device,
            channelId,
            amount: w.amount,
          };
          out.push({ kind: 'meta', key: escrowKey(w.orderId), value: stringifyJson(escrow) });
          break;
        }
        case 'evidence':
          out.push({
            kind: 'evidence',
            evidence: {
              channelId,
              version: w.version,
              held: w.held,
              offered: w.offered,
              at: this.#deps.now(),
              seq: seq++,
            },
          });
          break;
      }
    }
    out.push({ kind: 'channel', record: recordOf(ch) });
    return out;
  }

  /** Perform what a durable step asked for. */
  #act(rt: Runtime, effects: readonly EngineEffect[]): void {
    const ch = rt.channel;
    const device = ch.ctx.params.device;
    let accepted = 0;
    for (const e of effects) {
      switch (e.type) {
        case 'send':
          if (e.msg.t === 'reject' && e.msg.id === OWN_CLAIM) break; // refused `payOutRevealed`: nothing to answer
          if (e.msg.t === 'ack' && e.msg.id !== 0) accepted++;
          this.#deps.send(device, e.msg);
          break;
        case 'resolve':
          this.#take(e.ref)?.resolve(e.state);
          break;
        case 'reject':
          this.#take(e.ref)?.reject(e.error);
          break;
        case 'refused':
          this.#deps.onOutcome(e.error.code);
          break;
        case 'routed':
          this.#deps.onRouted(routeRecord(ch, e.route, e.lock));
          break;
        case 'lock-settled':
          this.#deps.onLockSettled?.(ch.ctx.channelId, e.lock, e.outcome, e.preimage);
          break;
        case 'preimage':
          this.#deps.onPreimage?.(ch.ctx.channelId, e.hash, e.preimage);
          break;
        case 'lock-incoming':
          break;
        case 'escrow':
          this.#deps.onEscrow({ orderId: e.orderId, device, channelId: ch.ctx.channelId, amount: e.amount });
          break;
        case 'timer':
          // By id: the channel may have been packed and rebuilt (a new runtime) by the time it fires.
          setTimeout(() => this.#kick(ch.ctx.channelId), Math.max(0, e.at - this.#deps.now())).unref?.();
          break;
        case 'incoming':
        case 'submit':
          break;
      }
    }
    if (accepted > 0) this.#deps.onOutcome('accepted', accepted);
  }

  #kick(channelId: ChannelId): void {
    const rt = this.#runtime(channelId);
    if (!rt) return;
    rt.jobs.push({ t: 'kick' });
    this.#pump(rt);
  }

  #refuseFrame(rt: Runtime, id: number, e: unknown): void {
    const error = isTrickleError(e) ? e : new TrickleError('INTERNAL', 'internal error');
    this.#deps.onOutcome(error.code);
    if (id === OWN_CLAIM) return; // the hub's own claim (`payOutRevealed`): the device sent nothing to answer
    this.#deps.send(rt.channel.ctx.params.device, {
      t: 'reject',
      id,
      channelId: rt.channel.ctx.channelId,
      code: error.code,
      message: error.shortMessage,
      latest: rt.channel.latest,
    });
  }

  /**
   * The store refused a step's commit (a {@link StoreRefusal}: in a cluster, a market escrow past its round's bound,
   * the round's last room taken by another process after this one's check): nothing was written and the store works,
   * so the channel does not freeze. The step is undone as a refused one is: its state and effects are discarded
   * (nothing sent, nothing stored, `channel` as before it) and the device's updates in it are answered with the
   * refusal's code (`LIMIT_EXCEEDED`, as a single process answers before the step). The rest of the step's jobs —
   * credits, claims, acks, on-chain facts, the device's other frames — were not refused: they go back first in the
   * queue and are stepped again at once. A step without device updates (a refusal the device's frames did not cause)
   * is answered whole with the code, as a failed one is, its acks and on-chain facts kept: stepped again, it would be
   * refused again.
   */
  #stepRefused(rt: Runtime, error: StoreRefusal, events: { readonly list: EngineEvent[]; readonly jobs: Job[] }): void {
    const updates = events.list.filter((ev) => ev.type === 'peer-updates');
    if (updates.length === 0) {
      this.#refuseEvents(rt, events.list, error);
      for (const j of events.jobs) if (j.t === 'chain' || j.t === 'ack') rt.jobs.push(j);
      return;
    }
    for (const ev of updates) for (const u of ev.updates) this.#refuseFrame(rt, u.id, error);
    rt.jobs.unshift(...events.jobs.filter((j) => j.t !== 'update'));
  }

  /**
   * A step's commit failed: the channel freezes (new work is answered STORE_FAILURE) and a probe writes its record
   * again until the store takes it, then thaws it. A `failed` step is discarded: everything in it is answered
   * STORE_FAILURE. One whose outcome is `unknown` (see `outcomeUnknown`: the connection to the database went during
   * COMMIT) is held, unanswered, until the probe reads the stored record: the step's own record there means it landed
   * and takes effect; anything else means it failed. Answered STORE_FAILURE at once, a step that had landed would have
   * been written over with the older record by the thaw, and a payment taken twice.
   */
  #commitFailed(rt: Runtime, outcome: 'failed' | 'unknown', step: FailedStep): void {
    if (rt.frozen === undefined) this.#deps.onFrozen?.(rt.channel.ctx.channelId, true, step.cause);
    rt.frozen = step.cause;
    this.#probe(rt, 0);
    if (outcome === 'unknown') {
      rt.unknown = step;
      return;
    }
    const error = isTrickleError(step.cause, 'STORE_FAILURE') ? step.cause : storeFailure(step.cause);
    this.#refuseEvents(rt, step.events.list, error);
    // On-chain facts are not dropped: they wait for the thaw. So does the device's countersignature of our proposal:
    // the device holds that state now and builds on it, so it must land here too once the store takes writes.
    for (const j of step.events.jobs) {
      if (j.t === 'chain' || j.t === 'ack') this.#hold(rt, j);
    }
    // Credits still queued are answered STORE_FAILURE and leave the engine, so none of them can land afterwards (a
    // router or market told "failed" retries: it must never find the first attempt paid as well). A credit already
    // proposed is signed, stored and on the wire: its caller keeps waiting for the device's answer after the thaw.
    if (rt.channel.queue.length > 0) {
      // One the device may still hold a signed state of (it refused or crossed it before) waits for that state to
      // settle instead: answered now, its payer would be refunded while the device can still be paid with it.
      const queue = rt.channel.queue as readonly PendingCredit[];
      rt.channel = { ...rt.channel, queue: [] };
      for (const c of queue) this.#refuseCredit(rt, c, error);
      rt.record = undefined;
    }
    this.#deps.send(rt.channel.ctx.params.device, {
      t: 'error',
      id: 0,
      code: 'STORE_FAILURE',
      message: `channel ${rt.channel.ctx.channelId} is frozen: the hub's store failed`,
    });
  }

  #refuseEvents(rt: Runtime, events: readonly EngineEvent[], error: TrickleError): void {
    for (const ev of events) {
      switch (ev.type) {
        case 'peer-updates':
          for (const u of ev.updates) this.#refuseFrame(rt, u.id, error);
          break;
        case 'peer-close':
        case 'peer-claim':
          this.#refuseFrame(rt, ev.id, error);
          break;
        case 'claim':
          this.#take(ev.ref)?.reject(error);
          break;
        case 'credit':
          if (!this.#joined(rt, ev)) this.#refuseCredit(rt, ev, error);
          break;
        default:
          break;
      }
    }
  }

  /**
   * A credit this table cannot take now (the channel's store failed): its callers are refused — unless the device may
   * still hold a hub-signed state of it (`dangling` versions, or an unsettled state of its payment id): answered now,
   * a routed payment's payer would be refunded while the device can still be paid with that state, so it waits for
   * the state to settle like a credit the device refused (see `UnsettledState`).
   */
  #refuseCredit(rt: Runtime, c: Parameters<typeof deferralOf>[1], error: TrickleError): void {
    const d = deferralOf(rt.channel.unsettled ?? [], c, error);
    if (!d || c.ref < 0) {
      for (const ref of [c.ref, ...(c.joined ?? [])]) this.#take(ref)?.reject(error);
      return;
    }
    rt.channel = { ...rt.channel, deferred: [...(rt.channel.deferred ?? []), d] };
    rt.record = undefined;
  }

  /** A credit asked again while the same one waits joins it (`joinCredit`), frozen or not: no write. */
  #joined(rt: Runtime, c: Parameters<typeof joinCredit>[1]): boolean {
    const ch = joinCredit(rt.channel, c);
    if (ch === undefined) return false;
    rt.channel = ch;
    return true;
  }

  /** The caller waiting on `ref`, removed from the table (each is answered once). */
  #take(ref: number): Caller | undefined {
    const c = this.#callers.get(ref);
    this.#callers.delete(ref);
    if (c?.key !== undefined && this.#crediting.get(c.key) === ref) this.#crediting.delete(c.key);
    return c;
  }

  #refuseFrozen(rt: Runtime, jobs: Job[]): void {
    const error = storeFailure(rt.frozen);
    for (const j of jobs) {
      if (j.t === 'update' || j.t === 'close' || j.t === 'sync' || j.t === 'claim') this.#refuseFrame(rt, j.id, error);
      else if (j.t === 'credit') {
        // While a step's outcome is unknown the channel does not change (a landed step replaces it: a deferral written
        // meanwhile was lost, its caller never answered). A credit whose answer hangs on that outcome — it would join
        // a credit waiting, or be deferred by an unsettled state of its payment, before the step or after it — waits
        // until it is known; any other is refused at once, as on any frozen channel.
        if (rt.unknown) {
          if (hangsOn(rt.unknown.after, j, error) || hangsOn(rt.channel, j, error)) rt.jobs.push(j);
          else this.#take(j.ref)?.reject(error);
        } else if (!this.#joined(rt, j)) this.#refuseCredit(rt, j, error);
      } else if (j.t === 'hub-claim' || j.t === 'give-back') this.#take(j.ref)?.reject(error);
      else if (j.t === 'chain' || j.t === 'ack') this.#hold(rt, j); // taken after the thaw
    }
  }

  /** Keep a job for the thaw. Of acks only the newest (they are cumulative): a frozen channel holds at most one. */
  #hold(rt: Runtime, job: Extract<Job, { t: 'chain' | 'ack' }>): void {
    if (job.t === 'chain') {
      rt.jobs.push(job);
      return;
    }
    const held = rt.jobs.findIndex((j) => j.t === 'ack');
    if (held < 0) rt.jobs.push(job);
    else if ((rt.jobs[held] as Extract<Job, { t: 'ack' }>).version < job.version) rt.jobs[held] = job;
  }

  /**
   * Write the channel's current durable record again until the store takes it; then thaw. A step held for its
   * commit's unknown outcome is settled first, by the stored record (read again until the store answers). A record the
   * store refuses as older than its own is given up for the stored one (see #reread).
   */
  #probe(rt: Runtime, attempt: number): void {
    const delay = PROBE_MS[Math.min(attempt, PROBE_MS.length - 1)]!;
    setTimeout(() => {
      if (rt.retired) return;
      const held = rt.unknown;
      if (held) {
        this.#deps.loadChannel!(held.before.ctx.channelId).then(
          (stored) => {
            if (rt.retired) return;
            rt.unknown = undefined;
            if (stored !== undefined && channelRecordJson(stored) === channelRecordJson(recordOf(held.after)))
              return this.#thaw(rt, held);
            // Not committed (or the channel was written by another process since: its lease moved; the probe's
            // fenced write says so): the step failed. Credits held meanwhile join what still waits, defer, or fail.
            this.#commitFailed(rt, 'failed', held);
            this.#refuseFrozen(rt, rt.jobs.splice(0));
          },
          () => this.#probe(rt, attempt + 1),
        );
        return;
      }
      rt.record = undefined;
      this.#deps.committer.write([{ kind: 'channel', record: this.#recordOf(rt) }]).then(
        () => this.#thaw(rt),
        (e: unknown) => {
          rt.frozen = e;
          // The store holds a newer record (a commit whose outcome was unknown landed unseen): this one, older, is
          // refused for ever. The channel serves from the stored one instead, when it can (see #reread).
          if (staleChannels(e)?.has(rt.channel.ctx.channelId) && this.#rereadable(rt)) this.#reread(rt, attempt);
          else this.#probe(rt, attempt + 1);
        },
      );
    }, delay).unref?.();
  }

  /**
   * Whether a frozen channel can be replaced by its stored record: the store can read it, and nobody waits on the
   * channel. A reload answers its callers as fenced (see `#build`), which a cluster's caller asks again; a single hub's
   * router would refund a routed credit's payer while the device can still countersign the state proposed to it. With
   * callers, the channel stays frozen until a restart reads the record and its credits are asked again (and joined).
   */
  #rereadable(rt: Runtime): boolean {
    const ch = rt.channel;
    return this.#deps.loadChannel !== undefined && waitingRefs(ch).length === 0 && (ch.deferred?.length ?? 0) === 0;
  }

  /** Replace a frozen channel whose record the store refused as older than its own by the stored record, and thaw it. */
  #reread(rt: Runtime, attempt: number): void {
    const id = rt.channel.ctx.channelId;
    this.#deps.loadChannel!(id).then(
      (stored) => {
        if (rt.retired) return;
        if (stored === undefined || !this.#rereadable(rt)) return this.#probe(rt, attempt + 1);
        this.#add(stored);
        const next = this.#channels.get(id) as Runtime; // a runtime in use is always replaced by a new one
        this.#noteUnsettled(next.channel);
        this.#deps.onFrozen?.(id, false);
        next.jobs.push({ t: 'kick' });
        this.#pump(next);
      },
      () => this.#probe(rt, attempt + 1),
    );
  }

  /** The store takes the channel's writes again: a held step that landed takes effect, then the jobs waiting. */
  #thaw(rt: Runtime, landed?: FailedStep): void {
    rt.frozen = undefined;
    this.#deps.onFrozen?.(rt.channel.ctx.channelId, false);
    if (landed) this.#landed(rt, landed.before, landed.after, landed.effects, landed.events.jobs);
    rt.jobs.push({ t: 'kick' });
    this.#pump(rt);
  }
}

/**
 * The signature work of one step, as the engine asks for it: each state's digest made once, and the newest device
 * update's check and countersignature as the crypto backend answered them. One object per step (a step nearly always
 * holds one digest and one answer: Maps and closures per step were garbage on the hub's hot path); more of either go
 * into Maps made only then.
 */
class StepCrypto implements EngineCrypto {
  readonly #separator: Uint8Array;
  readonly #device: Address;
  readonly #deps: ChannelTableDeps;
  /** The state digested first, its digest, and the others' (rare). */
  #state: State | undefined;
  #digest: Uint8Array | undefined;
  #digests: Map<State, Uint8Array> | undefined;
  /** The digest answered first (by identity), its countersignature or refusal, and the others' (rare). */
  #answeredDigest: Uint8Array | undefined;
  #answer: { sig: Uint8Array } | { error: TrickleError } | undefined;
  #answers: Map<Uint8Array, { sig: Uint8Array } | { error: TrickleError }> | undefined;

  constructor(separator: Uint8Array, device: Address, deps: ChannelTableDeps) {
    this.#separator = separator;
    this.#device = device;
    this.#deps = deps;
  }

  /** The backend verified `state`'s signature over `digest` and countersigned it (`sig`), or refused it (`error`). */
  answered(state: State, digest: Uint8Array, sig: Uint8Array | undefined, error: TrickleError | undefined): void {
    this.#remember(state, digest);
    const answer = error !== undefined ? { error } : { sig: sig! };
    if (this.#answeredDigest === undefined || this.#answeredDigest === digest) {
      this.#answeredDigest = digest;
      this.#answer = answer;
    } else (this.#answers ??= new Map()).set(digest, answer);
  }

  #answerOf(d: Uint8Array): { sig: Uint8Array } | { error: TrickleError } | undefined {
    return d === this.#answeredDigest ? this.#answer : this.#answers?.get(d);
  }

  #remember(state: State, digest: Uint8Array): void {
    if (this.#state === undefined || this.#state === state) {
      this.#state = state;
      this.#digest = digest;
    } else (this.#digests ??= new Map()).set(state, digest);
  }

  digest(state: State): Uint8Array {
    if (state === this.#state) return this.#digest!;
    let d = this.#digests?.get(state);
    if (d === undefined) {
      d = stateDigest(this.#separator, state, this.#deps.keccak);
      this.#remember(state, d);
    }
    return d;
  }

  sign(d: Uint8Array): Uint8Array {
    const p = this.#answerOf(d);
    if (p && 'sig' in p) return p.sig;
    const { signer } = this.#deps;
    if (!signer) throw new TrickleError('INTERNAL', 'no synchronous hub signer configured');
    return signer.signDigest(d);
  }

  recover(d: Uint8Array, sig: Uint8Array): Address {
    const p = this.#answerOf(d);
    if (p) {
      if ('error' in p) throw p.error;
      return this.#device; // verified on the worker against this very digest and signature
    }
    return this.#deps.verifier.recoverAddress(d, sig);
  }
}

/**
 * A step's effects sorted: the writes its persist effects ask for into `writes`, every other effect into `effects`
 * (a function of the module, not a closure per step). @returns whether a persist effect gates on the commit
 */
function collectEffects(list: readonly EngineEffect[], effects: EngineEffect[], writes: EngineWrite[]): boolean {
  let gate = false;
  for (const e of list) {
    if (e.type === 'persist') {
      if (e.gate) gate = true;
      for (const w of e.writes) writes.push(w);
    } else effects.push(e);
  }
  return gate;
}

/** Whether credit `c`, refused now with `error`, would join a credit waiting in `ch` or be deferred by it. */
function hangsOn(ch: EngineChannel, c: Extract<Job, { t: 'credit' }>, error: TrickleError): boolean {
  return joinCredit(ch, c) !== undefined || deferralOf(ch.unsettled ?? [], c, error) !== undefined;
}

/** The hub's durable record of an engine channel. */
function recordOf(ch: EngineChannel): ChannelRecord {
  const out = ch.proposals[0];
  const r: { -readonly [K in keyof ChannelRecord]: ChannelRecord[K] } = {
    params: ch.ctx.params,
    channelId: ch.ctx.channelId,
    funding: ch.ctx.funding,
    status: ch.status,
    latest: ch.latest,
    hubSignedVersion: ch.signedVersion,
  };
  // Optional fields only when present (in this order), without a spread of a temporary object each.
  if (out) r.outgoing = outgoingOf(ch, out);
  if (ch.locks.length > 0) r.locks = ch.locks;
  if (ch.evidenceCount > 0) r.evidenceCount = ch.evidenceCount;
  if (ch.unsettled) r.unsettled = ch.unsettled;
  return r;
}

/**
 * Whether `b`'s record ({@link recordOf}) may differ from `a`'s: one of the parts it is built from is another object or
 * value. Parts the record does not hold (the connection, the queue, callers, the peer's version) are not compared. Kept
 * beside `recordOf`: a field added to the record is compared here too.
 */
function recordChanged(a: EngineChannel, b: EngineChannel): boolean {
  return (
    a !== b &&
    (a.ctx !== b.ctx ||
      a.status !== b.status ||
      a.latest !== b.latest ||
      a.signedVersion !== b.signedVersion ||
      a.proposals[0] !== b.proposals[0] ||
      a.locks !== b.locks ||
      a.evidenceCount !== b.evidenceCount ||
      a.unsettled !== b.unsettled)
  );
}

/** The stored form of the hub's outstanding proposal (its lock list and lock transition only when it has them). */
function outgoingOf(ch: EngineChannel, p: EngineChannel['proposals'][number]): NonNullable<ChannelRecord['outgoing']> {
  const o: {
    -readonly [K in keyof NonNullable<ChannelRecord['outgoing']>]: NonNullable<ChannelRecord['outgoing']>[K];
  } = { state: p.state, hubSig: p.sig!, paymentId: p.credit?.paymentId }; // the hub signs every proposal it makes
  if (p.locks !== ch.locks) o.locks = p.locks;
  if (p.op?.kind === 'add') o.lock = { amount: p.op.lock.amount, hash: p.op.lock.hash, expiry: p.op.lock.expiry };
  else if (p.op) o.unlock = p.op.kind === 'claim' ? { hash: p.op.hash, preimage: p.preimage } : { hash: p.op.hash };
  return o;
}

function routeRecord(ch: EngineChannel, route: RouteInstruction, lock?: Lock): RouteRecord {
  const r: RouteRecord = {
    paymentId: route.paymentId,
    from: ch.ctx.params.device,
    to: route.to,
    fromChannel: ch.ctx.channelId,
    amount: route.amount,
    status: 'pending',
  };
  const withLock = lock ? { ...r, lock } : r;
  // A receipt request or a stream tick stays with the route (finished after a restart or by another process).
  if (!route.receipt && !route.stream) return withLock;
  return { ...withLock, receipt: route.receipt, stream: route.stream, token: ch.ctx.params.token };
}
