import { CHANNEL_LIMITS, validateParams, zeroState } from '@trickle/protocol/channel';
import { channelIdOf } from '@trickle/protocol/eip712';
import { DEFAULT_MAX_FRAME_BYTES, type Message } from '@trickle/protocol/codec';
import { randomBytes32 } from '@trickle/protocol/random';
import { TrickleError, isTrickleError } from '@trickle/protocol/errors';
import { toAddressInput, toChainId, typed, type AddressInput, type ChainIdInput } from '@trickle/protocol/input';
import { nobleVerifier, type Signer, type Verifier } from '@trickle/protocol/signer';
import { bestKeccak256 } from '@trickle/protocol/native';
import type { Keccak256 } from '@trickle/protocol/hex';
import {
  ETH_TOKEN,
  type Address,
  type Bytes32,
  type ChannelId,
  type ChannelParams,
  type Funding,
  type SignedState,
} from '@trickle/protocol/types';
import { ClientChannel, type ChannelBalance, type CreditGuard } from './channel.js';
import { notify } from './notify.js';
import { Connection, type HubIdentity, type ReconnectOptions, type TrustedCa, type RetryInfo } from './connection.js';
import type { ChannelStore, DeviceChannelRecord } from './store.js';
import type { MarketSession } from './market.js';
import { DefaultMarket } from './market-default.js';
import { canGuard, lockGuard, type LockGuardOptions } from './lock-guard.js';
import { tickOutcome } from './stream.js';

export { LOCK_GUARD_DEFAULTS, type LockGuardEvent, type LockGuardOptions } from './lock-guard.js';
import type { Lock } from '@trickle/protocol/locks';
import { deadline } from './timers.js';

/** The on-chain operations a device needs. `@trickle/client/chain` adapts `@trickle/chain` to it. */
export interface ClientChain {
  readonly chainId: bigint;
  readonly adjudicator: Address;
  /** Approve (ERC20) and open with a deposit; resolves when mined, with what was credited. */
  openChannel(params: ChannelParams, deposit: bigint): Promise<{ deposit: bigint }>;
  /**
   * Approve (ERC20) and add `amount` to this device's deposit in an open channel; resolves when mined, with the
   * device's whole deposit now (optional: a chain without it cannot `topUp`).
   */
  deposit?(params: ChannelParams, amount: bigint): Promise<{ total: bigint }>;
  /** Submit a final state both signed; pays out in the same transaction. */
  cooperativeClose(signed: SignedState): Promise<{ hash: string }>;
  /**
   * Register the latest state both signed and start the challenge period; `locks` are the state's pending locks in
   * committed order (required when it has any).
   */
  forceClose(signed: SignedState, locks?: readonly Lock[]): Promise<{ hash: string; deadline: bigint }>;
  /**
   * Deposits as the adjudicator records them, deep enough in the chain for the device to count them (the hub's
   * top-ups are learned this way, and a hub credit above them is refused): `adjudicatorClientChain` reads them
   * `fundingConfirmations` blocks behind the head.
   */
  readFunding(channelId: ChannelId): Promise<Funding>;
  // The lock guard's operations (see `lock-guard.ts`): a chain without all of them runs no guard.
  /** Record a lock's preimage in the adjudicator's registry; resolves with when it first became known there. */
  reveal?(preimage: Bytes32): Promise<{ revealedAt: bigint }>;
  /** When the preimage of `hash` was first revealed (unix seconds), 0n if never. */
  revealedAt?(hash: Bytes32): Promise<bigint>;
  /** The chain's clock: the latest block's timestamp (seconds). */
  chainTime?(): Promise<bigint>;
  /** The channel's on-chain status and, while closing, its registration (version, deadline, lock root). */
  readChannel?(channelId: ChannelId): Promise<OnChainView>;
  /** Replace an older registered state with `signed` (and its locks) before the deadline. */
  challenge?(signed: SignedState, locks: readonly Lock[]): Promise<{ hash: string }>;
  /** Pay out a force-closed channel after its deadline, with the registered state's locks. */
  settle?(channelId: ChannelId, locks: readonly Lock[]): Promise<{ hash: string }>;
}

/** A channel as the adjudicator records it, as far as the lock guard needs it. */
export interface OnChainView {
  readonly status: 'none' | 'open' | 'closing' | 'closed';
  /** The registered state's version (0 unless closing). */
  readonly version: bigint;
  /** Unix seconds from which `settle` is accepted (0 unless closing). */
  readonly deadline: bigint;
  /** The registered state's lock commitment. */
  readonly locksRoot: Bytes32;
}

/** Options of {@link TrickleClient.connect}; defaults in {@link DEFAULT_CLIENT_OPTIONS}. */
export interface ClientOptions {
  /** The hub's WebSocket URL. */
  readonly url: string;
  /**
   * The market session to make (`MarketSession` from `@trickle/client/market`). Under Node it is made by default; a
   * browser bundle leaves the market out unless it is named here, so a device that does not trade does not ship it.
   */
  readonly market?: typeof MarketSession | undefined;
  /** The device key. */
  readonly signer: Signer;
  /** Durable channel store (`fileChannelStore(dir)` in production). */
  readonly store: ChannelStore;
  /** On-chain access, needed to open and close channels. */
  readonly chain?: ClientChain | undefined;
  /** Verifier for hub signatures (pure JS by default; pass the native one where installed). */
  readonly verifier?: Verifier;
  /** Only talk to this hub (a checksummed or lowercase `0x…` literal is accepted and checked). */
  readonly expectHub?: AddressInput | undefined;
  /**
   * How long `connect` tries to reach and authenticate with the hub before it fails with `DISCONNECTED` naming the
   * URL and the cause (default 30,000 ms; `Infinity` retries until `signal` aborts). Drops after the first
   * connection reconnect per `reconnect`. The lock guard runs meanwhile (see `lockGuard`).
   */
  readonly connectTimeoutMs?: number;
  /** Abort `connect` (it then fails with `DISCONNECTED`, the abort reason as `cause`, and leaves no timer or socket behind). */
  readonly signal?: AbortSignal | undefined;
  /**
   * Called after every failed attempt to reach the hub (while connecting and when reconnecting later) with the URL,
   * the attempt number, the cause and the delay before the next one: the place to log it (the client logs nothing).
   */
  readonly onRetry?: ((info: RetryInfo) => void) | undefined;
  /**
   * For a `wss://` hub URL (Node): trust these CA certificates (PEM), e.g. a hub's self-signed or private-CA
   * certificate. Default: the system roots. Ignored in a browser, which always uses its own roots.
   */
  readonly ca?: TrustedCa | undefined;
  /**
   * A connection that hears nothing from the hub for this long (default 30,000 ms) is dropped and dialled again, so a
   * link that died without closing (a NAT or proxy that black-holes packets, a hub stuck mid-handshake) holds payments
   * for at most this long before they are resent on a fresh one. Halfway into a silence the client asks the hub for a
   * sign of life: a WebSocket ping in Node; in a browser, whose WebSocket cannot ping, a `ping` frame the hub answers
   * at once (wire version `trickle.v2`; at a hub that speaks only `trickle.v1` a browser times only its dials and
   * handshakes). Any frame from the hub counts as heard. `Infinity` turns it off.
   */
  readonly livenessTimeoutMs?: number;
  readonly reconnect?: Partial<ReconnectOptions>;
  /**
   * How long a request to the hub (an open, a sync, a query) waits for its answer. This and the other deadlines
   * here (`routeTimeoutMs`, a close's `timeoutMs`) are judged after the answers already received are read: a device
   * that wakes past one (a blocked event loop, a suspended device or VM) takes the answer that came meanwhile.
   */
  readonly requestTimeoutMs?: number;
  /** Updates in flight per channel. */
  readonly maxInFlight?: number;
  readonly maxFrameBytes?: number;
  /** How long `openChannel` waits for the hub to see the deposit. */
  readonly openTimeoutMs?: number;
  /**
   * Checked before this device countersigns any hub proposal that pays it or adds a lock toward it (after the market's
   * own check of a round's clearing): throw to refuse it — e.g. a conditional payment below an offer's price. See
   * {@link CreditGuard}.
   */
  readonly creditGuard?: CreditGuard | undefined;
  /** How long a routed payment waits for its receipt (judged as `requestTimeoutMs` is). */
  readonly routeTimeoutMs?: number;
  /**
   * Least time (seconds, default 30) a lock toward this device must have left before its expiry, by the device's clock,
   * when the hub adds it and when `claim()` shows its preimage; refused with `EXPIRY_TOO_SHORT` otherwise (the add is
   * answered with a `reject`; the claim shows nothing and stores nothing). A preimage shown off-chain is the goods given
   * away: should the hub then not countersign the claim, the device (or its watchtower) must still get the preimage
   * revealed on-chain before the expiry, or the hub takes the lock back. An honest hub leaves a payee at least its
   * `lockMarginSeconds` (default 60). Keep it above the time a reveal takes to be mined on your chain, plus the lock
   * guard's `pollMs`: a claim shown with less than its `revealMarginSeconds` (60) left is revealed at the guard's next
   * pass unless the hub countersigns it first. 0 turns it off.
   */
  readonly minLockSeconds?: number;
  /**
   * The device's on-chain guard (see `lock-guard.ts`): reveal a claimed lock's preimage when the hub does not
   * countersign the claim in time; answer a force close that registered an older state than the latest one both
   * signed — in every channel with pending locks, with `paidByHub > 0`, or whose close was started — by challenging
   * it and, after the deadline, settling it. Runs when `chain` offers the guard's operations (`adjudicatorClientChain`
   * does), at one `readChannel` per such channel per `pollMs`, from the store's channels as soon as `connect` starts:
   * while it waits for the hub (down, or refusing this device) and retries, and on until `disconnect()`. A `connect`
   * that fails stops it (after the pass running); `connectTimeoutMs: Infinity` keeps a device's guard running for as
   * long as its hub stays away. `false` turns it off.
   */
  readonly lockGuard?: LockGuardOptions | false | undefined;
}

export const DEFAULT_CLIENT_OPTIONS = {
  connectTimeoutMs: 30_000,
  livenessTimeoutMs: 30_000,
  reconnect: { initialDelayMs: 100, maxDelayMs: 5_000, maxAttempts: Number.POSITIVE_INFINITY },
  requestTimeoutMs: 10_000,
  maxInFlight: 8,
  maxFrameBytes: DEFAULT_MAX_FRAME_BYTES,
  openTimeoutMs: 30_000,
  yieldMs: 200,
  routeTimeoutMs: 30_000,
  minLockSeconds: 30,
} as const;

/** A close is answered by the hub's countersignature (`ack`) or a `reject`, with the close's own id. */
const CLOSE_ANSWERS: ReadonlySet<Message['t']> = new Set(['ack', 'reject', 'error']);

/** How a channel was closed. */
export type CloseResult =
  | { readonly mode: 'cooperative'; readonly hash: string; readonly state: SignedState }
  | {
      readonly mode: 'force';
      readonly hash: string;
      readonly deadline: bigint;
      readonly state: SignedState;
      readonly reason: string;
    };

/**
 * A device's connection to its hub and its channels.
 * @example
 * ```ts
 * const client = await TrickleClient.connect({ url: 'ws://hub:8547', signer, store: fileChannelStore('./channels'), chain });
 * const channel = await client.openChannel({ token: usdt, deposit: 10_000_000n });
 * await channel.pay(1_000n);
 * ```
 */
export class TrickleClient {
  readonly address: Address;
  readonly #conn: Connection;
  readonly #opts: ClientOptions;
  readonly #verifier: Verifier;
  /** State digests: the compiled keccak when installed (Node), else pure JS (browsers); byte-identical. */
  readonly #keccak: Keccak256 = bestKeccak256();
  readonly #channels = new Map<ChannelId, ClientChannel>();
  readonly #listeners = new Set<(m: Message) => void>();
  readonly #market: MarketSession | undefined;
  #guard: ReturnType<typeof lockGuard> | undefined;

  private constructor(opts: ClientOptions, conn: Connection, verifier: Verifier) {
    this.#opts = opts;
    this.#conn = conn;
    this.#verifier = verifier;
    this.address = opts.signer.address;
    const Market = opts.market ?? (DefaultMarket as typeof MarketSession | undefined);
    this.#market =
      Market &&
      new Market({
        signer: opts.signer,
        verifier,
        hub: () => this.hub,
        wireVersion: () => this.wireVersion,
        request: (build) => this.request(build),
        store: opts.store.market,
      });
  }

  /**
   * The market: place orders, receive clearings; round credits are checked against them automatically.
   * @throws TrickleError `INVALID_ARGUMENT` in a browser bundle connected without the `market` option
   */
  get market(): MarketSession {
    if (!this.#market)
      throw new TrickleError(
        'INVALID_ARGUMENT',
        "no market in this client: connect with `market: MarketSession` (from '@trickle/client/market')",
      );
    return this.#market;
  }

  /**
   * Connect, authenticate, and resume every channel in the store (sync with the hub, resend what was in flight). The
   * lock guard starts first, from the store, and guards its channels while the hub is dialled (see
   * `ClientOptions.lockGuard`).
   * @throws TrickleError `STORE_FAILURE` (`details.reason: 'IN_USE'`) when another live process holds the store (see
   *   `ChannelStore.acquire`); `UNAUTHORIZED`; `DISCONNECTED` when the hub cannot be reached within `connectTimeoutMs`,
   *   after `reconnect.maxAttempts`, or on `signal` (`details.url`, `details.reason`: ECONNREFUSED, ENOTFOUND, a TLS
   *   code…, the socket error as `cause`); `UNSUPPORTED_PROTOCOL` when the hub speaks none of this client's wire
   *   versions (`WIRE_PROTOCOLS`); `INVALID_ARGUMENT` for a bad `expectHub` or `connectTimeoutMs`
   */
  static async connect(opts: ClientOptions): Promise<TrickleClient> {
    const connectTimeoutMs = opts.connectTimeoutMs ?? DEFAULT_CLIENT_OPTIONS.connectTimeoutMs;
    if (!(connectTimeoutMs > 0))
      throw new TrickleError('INVALID_ARGUMENT', 'connectTimeoutMs must be positive', {
        details: { connectTimeoutMs },
      });
    const livenessTimeoutMs = opts.livenessTimeoutMs ?? DEFAULT_CLIENT_OPTIONS.livenessTimeoutMs;
    if (!(livenessTimeoutMs >= 100))
      throw new TrickleError('INVALID_ARGUMENT', 'livenessTimeoutMs must be at least 100 ms (Infinity: off)', {
        details: { livenessTimeoutMs },
      });
    const conn = new Connection({
      url: opts.url,
      signer: opts.signer,
      reconnect: { ...DEFAULT_CLIENT_OPTIONS.reconnect, ...opts.reconnect },
      requestTimeoutMs: opts.requestTimeoutMs ?? DEFAULT_CLIENT_OPTIONS.requestTimeoutMs,
      maxFrameBytes: opts.maxFrameBytes ?? DEFAULT_CLIENT_OPTIONS.maxFrameBytes,
      expectHub: opts.expectHub === undefined ? undefined : toAddressInput(opts.expectHub, 'expectHub'),
      connectTimeoutMs,
      livenessTimeoutMs,
      signal: opts.signal,
      onRetry: opts.onRetry,
      ca: opts.ca,
    });
    // One device process per store: another one on it would sign on top of this one's states (before any read).
    await opts.store.acquire?.();
    let client: TrickleClient | undefined;
    try {
      client = new TrickleClient(opts, conn, opts.verifier ?? nobleVerifier);
      return await client.#start();
    } catch (e) {
      // Not connected: nothing keeps running and the store is given back (a supervisor's next process may take it).
      // A failure to give it back is thrown instead of the connect's.
      conn.close();
      if (client) {
        client.#market?.stop();
        // The guard's pass running (a reveal on its way) finishes before the store is given back.
        await client.#guard?.stop();
      }
      await opts.store.close?.();
      throw e;
    }
  }

  /** Attach the stored channels, start the lock guard, connect, recover opens cut short (see `connect`). */
  async #start(): Promise<TrickleClient> {
    const opts = this.#opts;
    const conn = this.#conn;
    for (const record of await opts.store.list()) {
      if (record.params.device === this.address) this.#attach(record);
    }
    // Before the hub is dialled: a device restarted while its hub is down or refuses it (after withholding the
    // countersignature of a claim whose preimage is in the store) reveals it on-chain in time all the same.
    if (opts.lockGuard !== false && canGuard(opts.chain)) {
      this.#guard = lockGuard(opts.chain, () => [...this.#channels.values()], opts.lockGuard);
      this.#guard.start();
    }
    // The market's orders and escrows kept before a restart, read before the hub can send their rounds' credits.
    await this.#market?.restore();
    await conn.start({
      onReady: () => void this.#resyncAll(),
      onMessage: (m) => this.#dispatch(m),
      // Proposals in flight stay queued in each channel and are resent after the next sync.
      onDown: () => {
        for (const ch of this.#channels.values()) ch.disconnected();
      },
      onClosed: () => {
        for (const ch of this.#channels.values())
          ch.abandon('gave up reconnecting to the hub (reconnect.maxAttempts): connect again to pay');
      },
    });
    await this.#recoverOpens();
    return this;
  }

  /** The hub's identity from its challenge. */
  get hub(): HubIdentity {
    if (!this.#conn.identity) throw new TrickleError('DISCONNECTED', 'not connected');
    return this.#conn.identity;
  }

  /** The store this client keeps its channels (and receipt purchases) in. */
  get store(): ChannelStore {
    return this.#opts.store;
  }

  /** Whether the connection is up and authenticated. */
  get connected(): boolean {
    return this.#conn.ready;
  }

  /**
   * The wire version the hub answered the current connection with (`trickle.vN` is N; 1 when it answered none),
   * undefined while no socket is up. An `outcome` query is sent only at version 3 or later, and a clearing is verified
   * against the signature of its version (protocol-spec §3, §7).
   */
  get wireVersion(): number | undefined {
    return this.#conn.wireVersion;
  }

  /** A channel this client holds. */
  channel(channelId: ChannelId): ClientChannel | undefined {
    return this.#channels.get(channelId);
  }

  /** Every channel this client holds. */
  channels(): ClientChannel[] {
    return [...this.#channels.values()];
  }

  /** Frames that are not channel traffic (market clearings, routed payments' receipts, stream ticks), for extensions. */
  onMessage(listener: (m: Message) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Send a request to the hub and wait for its reply (market orders). */
  request(build: (id: number) => Message): Promise<Message> {
    return this.#conn.request(build(this.#conn.id()));
  }

  /**
   * Open a channel: deposit on-chain, then wait until the hub has seen it.
   * @param args.token - ERC20 address, or omit for ETH
   * @param args.deposit - device deposit in base units
   * @param args.challengeDuration - seconds (default 3600)
   * @returns the channel, ready to pay
   * @throws TrickleError INVALID_ARGUMENT when the channel of these parameters (this `salt`) is already open; its record
   *   is left as it was. WRONG_CHANNEL, before any deposit, when the hub is on another chain or adjudicator, or takes
   *   on only longer challenge periods (`client.hub.minChallengeSeconds`)
   */
  async openChannel(args: {
    token?: AddressInput;
    deposit: bigint;
    challengeDuration?: bigint;
    salt?: Bytes32;
  }): Promise<ClientChannel> {
    const chain = this.#requireChain();
    const hub = this.hub;
    // A ClientChain written by hand may carry a number or a lowercase address: compare normalised values, and show
    // both sides with their types when they differ.
    const chainId = toChainId(chain.chainId as ChainIdInput, 'chain.chainId');
    const adjudicator = toAddressInput(chain.adjudicator, 'chain.adjudicator');
    if (hub.chainId !== chainId || hub.adjudicator !== adjudicator) {
      throw new TrickleError(
        'WRONG_CHANNEL',
        `the hub uses chain ${hub.chainId}, adjudicator ${hub.adjudicator}; this client's chain is ${chainId}, adjudicator ${adjudicator}`,
        {
          details: {
            hub: { chainId: typed(hub.chainId), adjudicator: hub.adjudicator },
            client: { chainId: typed(chain.chainId), adjudicator: chain.adjudicator },
          },
        },
      );
    }
    const params: ChannelParams = {
      chainId,
      adjudicator,
      device: this.address,
      hub: hub.hub,
      token: args.token === undefined ? ETH_TOKEN : toAddressInput(args.token, 'token'),
      challengeDuration: args.challengeDuration ?? 3600n,
      salt: args.salt ?? randomBytes32(),
    };
    validateParams(params);
    // The hub would refuse it after the deposit, leaving the money in a channel nobody serves: refused here, before
    // anything is written or sent.
    if (hub.minChallengeSeconds !== undefined && params.challengeDuration < hub.minChallengeSeconds)
      throw new TrickleError(
        'WRONG_CHANNEL',
        `the hub takes on channels with a challenge period of at least ${hub.minChallengeSeconds} s, not ${params.challengeDuration} s`,
        { details: { challengeDuration: params.challengeDuration, minChallengeSeconds: hub.minChallengeSeconds } },
      );
    if (args.deposit < 0n || args.deposit > CHANNEL_LIMITS.maxDeposit)
      throw new TrickleError('INVALID_ARGUMENT', 'deposit out of range');
    const channelId = channelIdOf(params);
    // Opened once: a second open of the same parameters (the same salt) would write the zero state over the channel's
    // record (and its signing ceiling) before the chain refused it. Only a record that never got its deposit (an open
    // that died before it) is opened again; an open of it already running in this client is refused too.
    const alreadyOpen = () =>
      new TrickleError('INVALID_ARGUMENT', `channel ${channelId} is already open (each salt opens one channel)`, {
        details: { channelId },
      });
    if (this.#opening.has(channelId)) throw alreadyOpen();
    this.#opening.add(channelId);
    try {
      const existing = this.#channels.get(channelId)?.record ?? (await this.#opts.store.load(channelId));
      if (
        existing &&
        (existing.funding.device > 0n || existing.signedVersion > 0n || existing.latest.state.version > 0n)
      )
        throw alreadyOpen();
      return await this.#open(chain, params, channelId, args.deposit);
    } finally {
      this.#opening.delete(channelId);
    }
  }

  /**
   * Top up this device's deposit in an open channel, without closing it: approve (ERC20) and deposit `amount`
   * on-chain, then record the new deposit, so the channel pays from it at once. The hub counts it once its chain
   * follower sees it as deep as the hub's `confirmations` (at once on a development chain; a payment that needs it
   * sooner makes the hub read the chain again): until then a payment beyond the old deposit is refused
   * `INSUFFICIENT_FUNDS` and may be paid again.
   * @param channelId - a channel this client holds
   * @param amount - base units (> 0)
   * @returns the channel's balance with the top-up
   * @throws TrickleError INVALID_ARGUMENT (no `chain`, or one without `deposit`; `amount` not a positive bigint, or the
   *   deposit would pass the adjudicator's maximum), WRONG_CHANNEL (a channel this client does not hold),
   *   CHANNEL_FINAL (closing or closed: nothing is sent), CHAIN_REVERTED, STORE_FAILURE
   * @example
   * ```ts
   * if (channel.balance().available < 1_000_000n) await client.topUp(channel.channelId, 10_000_000n);
   * ```
   */
  async topUp(channelId: ChannelId, amount: bigint): Promise<ChannelBalance> {
    const chain = this.#requireChain();
    if (!chain.deposit) throw new TrickleError('INVALID_ARGUMENT', 'chain.deposit is missing');
    const ch = this.#channels.get(channelId);
    if (!ch) throw new TrickleError('WRONG_CHANNEL', 'unknown channel', { details: { channelId } });
    if (typeof amount !== 'bigint' || amount <= 0n)
      throw new TrickleError('INVALID_ARGUMENT', 'amount must be a positive bigint', { details: { amount } });
    const before = ch.record;
    if (before.closing !== undefined || before.latest.state.isFinal)
      throw new TrickleError('CHANNEL_FINAL', 'the channel is closing or closed', { details: { channelId } });
    if (before.funding.device + amount > CHANNEL_LIMITS.maxDeposit)
      throw new TrickleError('INVALID_ARGUMENT', 'deposit above the maximum', {
        details: { deposit: before.funding.device, amount, maxDeposit: CHANNEL_LIMITS.maxDeposit },
      });
    const { total } = await chain.deposit(before.params, amount);
    const now = ch.record.funding;
    if (total > now.device) await ch.setFunding({ device: total, hub: now.hub });
    return ch.balance();
  }

  /** Channels whose `openChannel` is running. */
  readonly #opening = new Set<ChannelId>();

  async #open(chain: ClientChain, params: ChannelParams, channelId: ChannelId, amount: bigint): Promise<ClientChannel> {
    // Durable before the deposit: a crash after it must not lose the parameters needed to get the money back.
    let record: DeviceChannelRecord = {
      params,
      channelId,
      funding: { device: 0n, hub: 0n },
      latest: { state: zeroState(channelId) },
      signedVersion: 0n,
    };
    // The record of an open that stopped before its deposit is already attached (at connect): its channel takes the
    // deposit (a record saved beside it would not reach the channel, which would pay from none).
    const attached = this.#channels.get(channelId);
    if (!attached) await this.#opts.store.save(record);
    const { deposit } = await chain.openChannel(params, amount);
    if (attached) {
      await attached.setFunding({ device: deposit, hub: attached.record.funding.hub });
      return this.#announce(attached.record);
    }
    record = { ...record, funding: { device: deposit, hub: 0n } };
    await this.#opts.store.save(record);
    return this.#announce(record);
  }

  /**
   * Channels whose open stopped between its deposit and the record of it (power lost while the transaction was
   * mined): the record says no deposit, so nothing could be paid from the money on-chain, and the hub was never told
   * of the channel. With a chain, each such record (no deposit, nothing signed) is read on-chain once at connect: a
   * deposit found there (`readFunding`: as deep as the device counts deposits, a younger one is found at a later
   * connect) is recorded and the channel announced, as `openChannel` would have done. A failed read leaves
   * the record as it is (the next connect reads again); a failed write freezes the channel (its payments then reject
   * STORE_FAILURE).
   */
  async #recoverOpens(): Promise<void> {
    const chain = this.#opts.chain;
    if (!chain) return;
    await Promise.all(
      [...this.#channels.values()].map(async (ch) => {
        const r = ch.record;
        if (r.funding.device > 0n || r.signedVersion > 0n || r.latest.state.version > 0n || r.closing) return;
        let funding: Funding;
        try {
          funding = await chain.readFunding(r.channelId);
        } catch {
          return; // unread: the record stays as it was, and the next connect reads again
        }
        if (funding.device <= 0n) return; // never funded: openChannel opens it again
        try {
          await ch.setFunding(funding);
          await this.#announce(ch.record);
        } catch {
          // A failed write froze the channel (its payments reject STORE_FAILURE); a hub that did not take the
          // announcement is asked again by the channel's sync on every reconnect.
        }
      }),
    );
  }

  /** Announce a channel that is already open on-chain (e.g. opened by another tool) and resume it. */
  async attachChannel(record: DeviceChannelRecord): Promise<ClientChannel> {
    await this.#opts.store.save(record);
    return this.#announce(record);
  }

  async #announce(record: DeviceChannelRecord): Promise<ClientChannel> {
    const until = Date.now() + (this.#opts.openTimeoutMs ?? DEFAULT_CLIENT_OPTIONS.openTimeoutMs);
    let delay = 50;
    for (;;) {
      try {
        const reply = await this.#conn.request({ t: 'open', id: this.#conn.id(), params: record.params });
        const ch = this.#attach(record);
        if (reply.t === 'sync') ch.receive(reply);
        return ch;
      } catch (e) {
        // Not seen yet, the link down, or the hub's chain-read share used up: try again until the open timeout.
        const again = (['CHANNEL_NOT_OPEN', 'DISCONNECTED', 'RATE_LIMITED'] as const).some((code) =>
          isTrickleError(e, code),
        );
        if (!again || Date.now() > until) throw e;
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, 1000);
      }
    }
  }

  /**
   * Close a channel cooperatively; when the hub does not countersign in `timeoutMs`, force close with the latest
   * state both signed (the challenge period then runs; the client's lock guard settles the channel after it, or the
   * CLI's `trickle settle` when the device is not running then). A hub refusal that
   * can pass (a credit it still owes, its own store failing) is tried again until then. Concurrent calls for one
   * channel make one close and share its result. Before a force close, a state the device signed and the hub refused
   * but holds (`ClientChannel.unvoided`) is voided first, waiting at most `timeoutMs` more for the hub to countersign
   * the state above it; if it does not, the force close goes on and its `reason` says so: the hub may register that
   * state, paying itself the refused payment (reconnect and close again to void it first).
   * @throws TrickleError STORE_FAILURE when the device's own store fails (nothing goes on-chain that it cannot record);
   *   CHANNEL_FINAL when the channel's final state is already closed on-chain (e.g. closed by an earlier run), or (with
   *   a chain that reads channels) the channel is force-closing or closed on-chain (`details.status`, `deadline`);
   *   DISCONNECTED after `disconnect()` (nothing is sent); WRONG_CHANNEL for a channel this client does not hold
   */
  close(channelId: ChannelId, options: { timeoutMs?: number } = {}): Promise<CloseResult> {
    const running = this.#closes.get(channelId);
    if (running) return running;
    const p = this.#close(channelId, options);
    this.#closes.set(channelId, p);
    // A failed close may be tried again; a done one is answered from the store's state by the next call anyway.
    p.then(
      () => undefined,
      () => this.#closes.delete(channelId),
    );
    return p;
  }

  readonly #closes = new Map<ChannelId, Promise<CloseResult>>();
  /** disconnect() was called: nothing more is sent, on the link or on-chain. */
  #disconnected = false;

  async #close(channelId: ChannelId, options: { timeoutMs?: number }): Promise<CloseResult> {
    const chain = this.#requireChain();
    const ch = this.#channels.get(channelId);
    if (!ch) throw new TrickleError('WRONG_CHANNEL', 'unknown channel');
    // A client closed for good (disconnect()) would find no hub and force-close: nothing is sent from it.
    if (this.#disconnected)
      throw new TrickleError('DISCONNECTED', 'the client was disconnected: connect again to close', {
        details: { channelId },
      });
    const timeoutMs = options.timeoutMs ?? 10_000;
    // A final state both signed (the cooperative close of an earlier run, which may have stopped before its
    // transaction was mined) is finished on-chain, never force-closed over; once closed on-chain, nothing is sent.
    const final = ch.latest;
    if (final.state.isFinal && final.deviceSig !== undefined && final.hubSig !== undefined) {
      if (chain.readChannel && (await chain.readChannel(channelId)).status === 'closed')
        throw new TrickleError('CHANNEL_FINAL', `channel ${channelId} is closed on-chain`, { details: { channelId } });
      if (ch.record.closing !== 'cooperative') await ch.markClosing('cooperative');
      const { hash } = await chain.cooperativeClose(final);
      return { mode: 'cooperative', hash, state: final };
    }
    // A channel already closing or closed on-chain (the hub force-closed it while this device was away, or an earlier
    // run did) takes no cooperative close, and a force close of it would revert: CHANNEL_FINAL, nothing sent (the
    // lock guard challenges an older registration and settles after the deadline).
    if (chain.readChannel) {
      const view = await chain.readChannel(channelId);
      if (view.status === 'closed' || view.status === 'closing')
        throw new TrickleError('CHANNEL_FINAL', `channel ${channelId} is ${view.status} on-chain`, {
          details: { channelId, status: view.status, version: view.version, deadline: view.deadline },
        });
    }
    let reason = 'hub did not countersign';
    // A final state can cross with a hub credit in flight (both sides signed that version): then the hub re-proposes
    // its credit, the device takes it, and the close is retried at a later version. While the hub still owes the
    // channel a credit (a refund, a market round), it refuses the close: wait for it, within the timeout.
    const until = Date.now() + timeoutMs;
    for (let attempt = 1; attempt <= 50 && Date.now() < until; attempt++) {
      let signed: SignedState;
      try {
        await ch.idle(timeoutMs);
        signed = await withTimeout(ch.closeCooperative(), Math.max(1, until - Date.now()));
        await ch.markClosing('cooperative');
      } catch (e) {
        reason = isTrickleError(e) ? `${e.code}: ${e.shortMessage}` : String(e);
        // Nothing goes on-chain from a device that cannot record it: its own store failing ends the close here.
        if (isTrickleError(e, 'STORE_FAILURE') && ch.frozen) throw e;
        // Nor from a client its application closed meanwhile (disconnect()): the hub was not refusing. (A client that
        // gave up reconnecting goes on: a hub that cannot be reached is what the force close below is for.)
        if (this.#disconnected)
          throw new TrickleError('DISCONNECTED', 'the client was disconnected: connect again to close', {
            details: { channelId },
            cause: e,
          });
        // The hub's refusals that may pass within the timeout are tried again: a credit it still owes, a crossing
        // state, and its own store failing (a frozen hub channel thaws once its writes succeed again). A hub that
        // stays frozen past the timeout has not countersigned: the channel is force-closed below.
        if (
          isTrickleError(e, 'PENDING_CREDITS') ||
          isTrickleError(e, 'STALE_VERSION') ||
          isTrickleError(e, 'EQUIVOCATION') ||
          isTrickleError(e, 'STORE_FAILURE')
        ) {
          reason = `hub refused: ${e.code}`;
          await new Promise((r) => setTimeout(r, Math.min(100 * attempt, 500)));
          continue;
        }
        break;
      }
      // The final state both signed is durable: a failed transaction is the caller's to see (close() again sends
      // it), never a reason to force-close over a cooperative close.
      const { hash } = await chain.cooperativeClose(signed);
      return { mode: 'cooperative', hash, state: signed };
    }
    // A state this device signed and the hub refused but holds, paying the hub more than `latest`, would let the hub
    // answer this force close by registering it: the state that voids it (proposed once the channel is idle, nothing
    // moves) gets a bounded wait first. Without it the force close goes on, exposed to that state's refused payment.
    if (!(await ch.voidRefused(timeoutMs)))
      reason += `; refused state ${ch.unvoided} not void: the hub may register it`;
    await ch.markClosing('force');
    const latest = ch.latest;
    const { hash, deadline } = await chain.forceClose(latest, ch.locks);
    return { mode: 'force', hash, deadline, state: latest, reason };
  }

  /**
   * Disconnect (channels stay in the store, each with its newest state: what waits to be written behind is written
   * first) and release the files the store keeps open (it reopens them if used again). Payments, claims and closes
   * still waiting are answered `DISCONNECTED` (see `ClientChannel.pay`); a close waiting for the hub sends nothing.
   */
  async disconnect(): Promise<void> {
    this.#disconnected = true;
    this.#market?.stop();
    this.#conn.close();
    // Its pass running may still mark a channel closing: done before the writes are flushed and the store closed.
    await this.#guard?.stop();
    await Promise.all([...this.#channels.values()].map((ch) => ch.flushWrites()));
    for (const ch of this.#channels.values()) ch.abandon('the client was disconnected: connect again to pay');
    await this.#opts.store.close?.();
  }

  /**
   * Run the lock guard once now (it also runs every `lockGuard.pollMs`): reveal claimed preimages that are due,
   * challenge a force close that registered an older state, settle what the guard settles. Resolves when the pass is
   * done; no-op without a guard.
   */
  async guardLocks(): Promise<void> {
    await this.#guard?.pass();
  }

  /** Cut the socket as a network failure would (tests). */
  dropConnectionForTest(): void {
    this.#conn.dropForTest();
  }

  #requireChain(): ClientChain {
    if (!this.#opts.chain) throw new TrickleError('INVALID_ARGUMENT', 'this operation needs the `chain` option');
    return this.#opts.chain;
  }

  #attach(record: DeviceChannelRecord): ClientChannel {
    let ch = this.#channels.get(record.channelId);
    if (!ch) {
      ch = new ClientChannel(record, {
        keccak: this.#keccak,
        signer: this.#opts.signer,
        verifier: this.#verifier,
        store: this.#opts.store,
        connection: this.#conn,
        maxInFlight: this.#opts.maxInFlight ?? DEFAULT_CLIENT_OPTIONS.maxInFlight,
        yieldMs: DEFAULT_CLIENT_OPTIONS.yieldMs,
        routeTimeoutMs: this.#opts.routeTimeoutMs ?? DEFAULT_CLIENT_OPTIONS.routeTimeoutMs,
        minLockSeconds: this.#opts.minLockSeconds ?? DEFAULT_CLIENT_OPTIONS.minLockSeconds,
        creditGuard: async (credit) => {
          if (this.#market) this.#market.check(credit);
          else if (credit.state.round > credit.previous.round)
            throw new TrickleError('BAD_CLEARING', 'a round credit, and no market in this client to check it');
          await this.#opts.creditGuard?.(credit);
        },
        readFunding: this.#opts.chain ? (id) => this.#opts.chain!.readFunding(id) : undefined,
        revealedAt: this.#opts.chain?.revealedAt ? (hash) => this.#opts.chain!.revealedAt!(hash) : undefined,
      });
      // A round credit is reported once countersigned and durable: only then does the market forget what it settles.
      ch.onPayment((p) => {
        if (p.round !== undefined) this.#market?.credited(p.channelId, p.round);
      });
      this.#channels.set(record.channelId, ch);
    }
    return ch;
  }

  async #resyncAll(): Promise<void> {
    await Promise.all(
      [...this.#channels.values()].map(async (ch) => {
        if (ch.record.closing) return;
        try {
          await ch.resync();
        } catch {
          /* the next reconnect retries */
        }
      }),
    );
  }

  #dispatch(m: Message): void {
    switch (m.t) {
      case 'ack':
      case 'reject':
      case 'sync':
      case 'claim':
        this.#channels.get(m.channelId)?.receive(m);
        return;
      case 'update':
        this.#channels.get(m.state.channelId)?.receive(m);
        return;
      case 'receipt':
        // An `outcome` answer that came after its request timed out: "not finished yet" is no outcome.
        if (m.pending) return;
        // Listeners first: a signed payment receipt (x402) is filed before the payment it completes resolves.
        notify(this.#listeners, m);
        for (const ch of this.#channels.values()) ch.receipt(m.paymentId, m.delivered);
        tickOutcome(m.paymentId, m.delivered); // a stream tick that timed out waiting for it
        return;
      case 'round':
      case 'clearing':
        this.#market?.onFrame(m);
        notify(this.#listeners, m);
        return;
      default:
        notify(this.#listeners, m);
    }
  }
}

/** `p`, or TIMEOUT after `ms` (the close falls back to a force close then). */
function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    // A deadline: a countersignature that came in time while this process did not run must not force-close.
    const t = deadline(
      () => reject(new TrickleError('TIMEOUT', 'the hub did not countersign the final state in time')),
      ms,
    );
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(t);
        reject(e);
      },
    );
  });
}
