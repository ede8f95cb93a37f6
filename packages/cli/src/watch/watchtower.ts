/**
 * The watchtower: guards channels for a party that may be offline. It is handed the latest state both parties
 * signed (over HTTP, from a device store directory, or with `addState`), keeps the newest per channel in its own
 * LMDB database, follows the adjudicator's dispute events, and answers a force close that registered an older
 * version with `challenge` before the deadline. `challenge` may be sent by anyone (Adjudicator.sol: "Anyone may
 * submit (e.g. a watchtower)"), so the sender key only pays gas; it needs no participant's key.
 *
 * Parts: {@link openWatchDb} (durable states, cursor), {@link followStep} (events, confirmations, reorgs),
 * {@link Responder} (checks, challenges, retries), {@link storeReader} (device store), {@link startApi} (HTTP).
 */
import type { Provider, Signer as EthersSigner } from 'ethers';
import { Adjudicator } from '@trickle/chain/adjudicator';
import type { ReplaceOptions } from '@trickle/chain/types';
import { toChainId, typed, type ChainIdInput } from '@trickle/protocol/input';
import { channelContext, checkFullySigned, sameState } from '@trickle/protocol/channel';
import { commitsTo } from '@trickle/protocol/engine';
import { MalformedError, TrickleError } from '@trickle/protocol/errors';
import { hashPreimage, type Lock } from '@trickle/protocol/locks';
import type { Bytes32 } from '@trickle/protocol/types';
import { toAddress } from '@trickle/protocol/hex';
import { nobleVerifier, type Verifier } from '@trickle/protocol/signer';
import type { Address, ChannelId } from '@trickle/protocol/types';
import { openWatchDb, type BlockCursor, type WatchDb } from './db.js';
import { followStep, initCursor } from './follower.js';
import { startApi, type ApiServer } from './http.js';
import { jsonLinesLogger, type WatchLogger } from './log.js';
import { Responder, type DisputeView } from './responder.js';
import { checkStoreDir, storeReader, type StoreRefusal } from './storeReader.js';
import type { StateSubmission } from './submission.js';

type Preimage = { readonly hash: Bytes32; readonly preimage: Bytes32 };

/**
 * The preimages worth keeping for a state with `locks`: those that hash to a lock the hub pays the device (the party
 * the watchtower guards is the payee), from what was held and what was just handed over, one per hash.
 */
function claimablePreimages(
  locks: readonly Lock[],
  held: readonly Preimage[] | undefined,
  offered: readonly Preimage[] | undefined,
): Preimage[] {
  const out = new Map<Bytes32, Preimage>();
  for (const p of [...(held ?? []), ...(offered ?? [])]) {
    if (out.has(p.hash) || !locks.some((l) => l.hash === p.hash && l.payer === 'hub')) continue;
    if (hashPreimage(p.preimage) === p.hash) out.set(p.hash, { hash: p.hash, preimage: p.preimage });
  }
  return [...out.values()];
}

/** Options of {@link createWatchtower}; defaults in {@link WATCHTOWER_DEFAULTS}. */
export interface WatchtowerOptions {
  /** JSON-RPC provider of the chain. */
  readonly provider: Provider;
  /** The adjudicator to watch. */
  readonly adjudicator: Address | string;
  /** Sends challenges and pays their gas (any funded account, connected to `provider`). */
  readonly sender: EthersSigner;
  /** Directory of the watchtower's LMDB database. */
  readonly dbPath: string;
  /** The chain id, a number or a bigint (default: asked from the provider at start). */
  readonly chainId?: ChainIdInput | undefined;
  /**
   * A device store directory to read states from, re-read every `storePollMs`. `start` refuses one it cannot list
   * (`INVALID_ARGUMENT`), unless `allowMissingStore`; one that becomes unreadable later is logged (`store-unreadable`)
   * and shown in `status().storeError` (and `GET /health`, then `degraded`) until it can be read again.
   */
  readonly storeDir?: string | undefined;
  /** Start even when `storeDir` does not exist (yet): it is read once it appears (default false). */
  readonly allowMissingStore?: boolean | undefined;
  /** Serve the HTTP API on this port (0: any free port) and host. */
  readonly listen?: { readonly port: number; readonly host?: string | undefined } | undefined;
  /** Blocks on top of a block before its events are processed (default 1; 0 on a local chain). */
  readonly confirmations?: number | undefined;
  /** How often to poll the chain (ms). */
  readonly pollMs?: number | undefined;
  /** How often to re-read `storeDir` (ms). */
  readonly storePollMs?: number | undefined;
  /** Blocks to rewind when the last processed block's hash changed. */
  readonly reorgDepth?: number | undefined;
  /** Most blocks per `eth_getLogs` request. */
  readonly maxBlockRange?: number | undefined;
  /** Most channels watched (refusals beyond: `LIMIT_EXCEEDED`). */
  readonly maxChannels?: number | undefined;
  /** Largest HTTP body accepted. */
  readonly maxBodyBytes?: number | undefined;
  /** First retry delay after a failed challenge; doubles up to `retryMaxMs`. */
  readonly retryInitialMs?: number | undefined;
  readonly retryMaxMs?: number | undefined;
  /** A challenge not mined within this counts as failed (and is retried); only with `replace: false`. */
  readonly txTimeoutMs?: number | undefined;
  /**
   * Replace-by-fee of challenges, reveals and settles (see `ReplaceOptions` of `@trickle/chain`): one not mined within
   * 2 blocks or 15 s is sent again with the same nonce and fees raised 20%, up to a cap (default 10 times the first
   * copy's `maxFeePerGas`), until the challenge's deadline or the lock's expiry. Each re-send is logged
   * (`tx-repriced`). A send that gives up leaves its copy's nonce and fees in the database (`stuckCopies`, unless
   * given here), so the next send, after a restart too, replaces it. On by default; `false` sends once, bounded by
   * `txTimeoutMs`.
   */
  readonly replace?: ReplaceOptions | false | undefined;
  /** How often channels in a dispute are re-read until their deadline (or, with locks, until settled). */
  readonly recheckMs?: number | undefined;
  /**
   * Every watched channel not closed is read on-chain again at least this often, and at least four times per challenge
   * period (never more often than `recheckMs`), whatever the events say: a force close whose event the node never
   * served is still challenged in time. The reads are spread evenly (channels / interval per second), not made at once.
   */
  readonly sweepMs?: number | undefined;
  /**
   * Reveal a held preimage of a lock still pending in an open channel this many seconds before the lock's expiry (in a
   * channel being force-closed it is revealed at once).
   */
  readonly revealMarginSeconds?: number | undefined;
  /** Most channel checks (RPC reads) at once. */
  readonly maxConcurrentChecks?: number | undefined;
  /**
   * The confirmed head not moving for longer than this (ms) reads as a node that stopped following the chain: it answers
   * without errors from an old head, so the follower is caught up and every channel reads as it was, while a force close
   * on the real chain goes unseen. `status().headIdleMs` and `GET /health` say so (`degraded`, a `head-stale` warning)
   * until it moves again. 0: off (a development chain that mines only on transactions).
   */
  readonly maxHeadAgeMs?: number | undefined;
  /** Verifies state signatures (default: pure JS). */
  readonly verifier?: Verifier | undefined;
  /** Where log records go (default: JSON lines on stdout). */
  readonly log?: WatchLogger | undefined;
}

/** Every default of {@link WatchtowerOptions}, in one place. */
export const WATCHTOWER_DEFAULTS = {
  confirmations: 1,
  pollMs: 2_000,
  storePollMs: 5_000,
  reorgDepth: 12,
  maxBlockRange: 2_000,
  maxChannels: 100_000,
  maxBodyBytes: 64 * 1024,
  retryInitialMs: 500,
  retryMaxMs: 30_000,
  txTimeoutMs: 120_000,
  recheckMs: 15_000,
  sweepMs: 900_000,
  revealMarginSeconds: 60,
  maxConcurrentChecks: 8,
  maxHeadAgeMs: 600_000,
  host: '127.0.0.1',
  stopGraceMs: 5_000,
} as const;

/** Result of {@link Watchtower.addState}. */
export interface AddStateResult {
  /** `accepted`: newer than what was held, now durable; `duplicate`: the very state already held. */
  readonly status: 'accepted' | 'duplicate';
  readonly channelId: ChannelId;
  readonly version: bigint;
}

/** A watched channel as `status()` / `GET /channels` report it. */
export interface WatchedChannelView {
  readonly channelId: ChannelId;
  readonly device: Address;
  readonly hub: Address;
  readonly token: Address;
  readonly version: bigint;
  readonly paidByDevice: bigint;
  readonly paidByHub: bigint;
  readonly source: 'api' | 'store';
  readonly dispute: DisputeView | null;
}

/** The watchtower's state. */
export interface WatchtowerStatus {
  readonly running: boolean;
  readonly chainId: bigint | undefined;
  readonly adjudicator: Address;
  readonly sender: Address | undefined;
  /** Last processed block. */
  readonly cursor: BlockCursor | undefined;
  /** Highest block with enough confirmations at the last poll. */
  readonly safeBlock: number | undefined;
  /** Whether the follower had reached `safeBlock` at the last poll. */
  readonly caughtUp: boolean;
  /**
   * Milliseconds since the confirmed head last moved (undefined before the first poll read it); past `maxHeadAgeMs` the
   * node is taken for one that stopped following the chain (`GET /health` is `degraded`).
   */
  readonly headIdleMs: number | undefined;
  readonly channels: number;
  /** Channels with an older state registered and the deadline ahead. */
  readonly pendingDisputes: number;
  readonly api: string | undefined;
  readonly lastError: string | undefined;
  /** Why the last pass over `storeDir` could not list it (`ENOENT`, `EACCES`…); undefined when it could, or none. */
  readonly storeError: string | undefined;
  /**
   * The files of `storeDir` whose record is not watched: unreadable (corrupt, a newer format) or refused (a lock list
   * that does not match, a bad signature, a channel the node does not show yet…) — not those with nothing new or of
   * another chain or adjudicator. Each until a pass takes it or the file goes away; `GET /health` is `degraded` meanwhile.
   */
  readonly storeRefused: StoreRefusal[];
  /** How many files of `storeDir` hold a record of another chain or adjudicator (not watched, not refused). */
  readonly storeForeign: number;
  /**
   * Whether `storeDir` holds records and every one is of another chain or adjudicator: the watchtower watches none of
   * them, most likely started with the wrong adjudicator, chain id or RPC; `GET /health` is `degraded` meanwhile.
   */
  readonly storeOnlyForeign: boolean;
  readonly disputes: DisputeView[];
}

/** A watchtower. */
export interface Watchtower {
  /**
   * Open the database, check every watched channel on-chain, start the API and the follower.
   * @throws TrickleError `NO_CONTRACT` (no code at the adjudicator on the provider's chain), `INVALID_ARGUMENT` (a
   *   `chainId` other than the provider's, a database of another chain or adjudicator, a `storeDir` that cannot be
   *   listed without `allowMissingStore`), `STORE_FAILURE` (the database cannot be opened, or another watchtower has
   *   it open)
   */
  start(): Promise<void>;
  /** Stop the follower, the API and checks (bounded wait), close the database. A stopped watchtower cannot be started again. */
  stop(): Promise<void>;
  /**
   * Watch a state: verified (both signatures, this chain and adjudicator), kept only if strictly newer than the one
   * held, durable before this resolves; the channel is then checked on-chain at once.
   * @throws TrickleError `MALFORMED`/`BAD_SIGNATURE`/`WRONG_CHANNEL` (also: a channel never opened on the
   *   adjudicator)/`INVALID_ARGUMENT` (zero state), `STALE_VERSION`, `EQUIVOCATION` (kept as evidence),
   *   `LIMIT_EXCEEDED`, `STORE_FAILURE`, `INTERNAL` (the chain could not be read: try again)
   */
  addState(submission: StateSubmission, source?: 'api' | 'store'): Promise<AddStateResult>;
  status(): WatchtowerStatus;
  /** Every watched channel. */
  channels(): WatchedChannelView[];
  /** The API's URL once started with `listen`. */
  readonly apiUrl: string | undefined;
}

/**
 * Create a watchtower (nothing runs until `start`).
 * @param options - see {@link WatchtowerOptions}
 * @returns the watchtower
 * @throws TrickleError `INVALID_ARGUMENT` on bad options
 * @example
 * ```ts
 * const tower = createWatchtower({ provider, adjudicator, sender: new Wallet(key, provider), dbPath: './watch-db', listen: { port: 8548 } });
 * await tower.start();
 * await fetch(`${tower.apiUrl}/states`, { method: 'POST', body: encodeChannelRecord(record) });
 * ```
 */
export function createWatchtower(options: WatchtowerOptions): Watchtower {
  const o = {
    ...WATCHTOWER_DEFAULTS,
    ...Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)),
  } as typeof WATCHTOWER_DEFAULTS & WatchtowerOptions;
  for (const k of [
    'confirmations',
    'pollMs',
    'storePollMs',
    'reorgDepth',
    'maxBlockRange',
    'maxChannels',
    'maxBodyBytes',
    'retryInitialMs',
    'retryMaxMs',
    'txTimeoutMs',
    'recheckMs',
    'sweepMs',
    'revealMarginSeconds',
    'maxConcurrentChecks',
    'maxHeadAgeMs',
  ] as const) {
    const v = o[k];
    const zeroOk = k === 'confirmations' || k === 'reorgDepth' || k === 'revealMarginSeconds' || k === 'maxHeadAgeMs';
    // A duration past Node's timer limit (2^31 - 1 ms) fires after 1 ms: a poll loop with no pause.
    if (!Number.isSafeInteger(v) || v < 0 || (v === 0 && !zeroOk) || (k.endsWith('Ms') && v > 2_147_483_647)) {
      throw new TrickleError('INVALID_ARGUMENT', `${k} must be a ${zeroOk ? 'non-negative' : 'positive'} integer`, {
        details: { [k]: v },
      });
    }
  }
  if (!options.dbPath) throw new TrickleError('INVALID_ARGUMENT', 'dbPath is required');
  const port = options.listen?.port;
  if (port !== undefined && (!Number.isSafeInteger(port) || port < 0 || port > 65_535))
    throw new TrickleError('INVALID_ARGUMENT', 'listen.port must be an integer from 0 to 65535', {
      details: { port },
    });
  const adjudicatorAddress = toAddress(String(options.adjudicator));
  const log = o.log ?? jsonLinesLogger((s) => process.stdout.write(s));
  const verifier = o.verifier ?? nobleVerifier;
  const reader = new Adjudicator(adjudicatorAddress, options.provider);
  const writer = reader.connect(options.sender);

  let db: WatchDb | undefined;
  let chainId: bigint | undefined = options.chainId === undefined ? undefined : toChainId(options.chainId);
  let senderAddress: Address | undefined;
  let api: ApiServer | undefined;
  let running = false;
  let stopping = false;
  let used = false;
  let loop: Promise<void> | undefined;
  let wake: (() => void) | undefined;
  let safeBlock: number | undefined;
  let caughtUp = false;
  let lastError: string | undefined;
  let lastStoreScan = 0;
  /** The highest confirmed head read, and when (wall-clock ms) it was first read. */
  let head: { block: number; at: number } | undefined;
  let headStale = false;
  const headIdleMs = (): number | undefined => (head === undefined ? undefined : Date.now() - head.at);

  /** The database, while the watchtower runs. */
  const openDb = (): WatchDb => {
    if (!db) throw new TrickleError('INTERNAL', 'the watchtower is not running');
    return db;
  };
  const responder = new Responder({
    reader,
    writer,
    provider: options.provider,
    held: (id) => db?.get(id),
    log,
    retryInitialMs: o.retryInitialMs,
    retryMaxMs: o.retryMaxMs,
    txTimeoutMs: o.txTimeoutMs,
    replace:
      o.replace === false
        ? undefined
        : {
            ...o.replace,
            // A restarted watchtower replaces the copy an earlier run abandoned instead of queuing behind it.
            stuckCopies: o.replace?.stuckCopies ?? {
              load: (account) => openDb().stuckCopies.load(account),
              save: (account, copies) => openDb().stuckCopies.save(account, copies),
            },
            onSend: (c) => {
              if (c.attempt > 0) log('warn', 'tx-repriced', { ...c });
              if (o.replace) o.replace.onSend?.(c);
            },
          },
    recheckMs: o.recheckMs,
    sweepMs: o.sweepMs,
    revealMarginSeconds: o.revealMarginSeconds,
    stopGraceMs: o.stopGraceMs,
    maxConcurrentChecks: o.maxConcurrentChecks,
  });
  const store = options.storeDir
    ? storeReader(options.storeDir, (s, source) => addState(s, source), log, o.maxChannels)
    : undefined;

  // One write at a time per channel would be enough; one at all is simpler and the volume is small.
  let addLock: Promise<unknown> = Promise.resolve();

  async function addState(submission: StateSubmission, source: 'api' | 'store' = 'api'): Promise<AddStateResult> {
    const run = addLock.then(() => addStateNow(submission, source));
    addLock = run.catch(() => {});
    return run;
  }

  async function addStateNow(
    { params, latest, locks, preimages }: StateSubmission,
    source: 'api' | 'store',
  ): Promise<AddStateResult> {
    if (!db || chainId === undefined) throw new TrickleError('INTERNAL', 'the watchtower is not running');
    if (params.chainId !== chainId || params.adjudicator !== adjudicatorAddress) {
      throw new TrickleError(
        'WRONG_CHANNEL',
        `this watchtower guards chain ${chainId}, adjudicator ${adjudicatorAddress}`,
        {
          details: {
            submitted: { chainId: typed(params.chainId), adjudicator: params.adjudicator },
            watched: { chainId: typed(chainId), adjudicator: adjudicatorAddress },
          },
        },
      );
    }
    const ctx = channelContext(params, { device: 0n, hub: 0n });
    checkFullySigned(ctx, latest, verifier);
    const { state } = latest;
    if (state.version === 0n)
      throw new TrickleError(
        'INVALID_ARGUMENT',
        'the zero state can never be newer than a registered one: nothing to watch',
      );
    if (!commitsTo(state, locks ?? []))
      throw new MalformedError('the lock list does not match the state’s lock commitment', {
        details: { version: state.version, locks: locks?.length ?? 0 },
      });
    const held = db.get(ctx.channelId);
    if (held) {
      const have = held.latest.state;
      if (state.version === have.version) {
        if (sameState(state, have)) {
          // The same state with a preimage the device claimed since (its record is written before the claim is shown).
          const merged = claimablePreimages(held.locks ?? [], held.preimages, preimages);
          if (merged.length > (held.preimages?.length ?? 0)) {
            await db.put({ ...held, preimages: merged });
            log('info', 'preimages-accepted', {
              channelId: ctx.channelId,
              version: state.version,
              count: merged.length,
            });
            responder.trigger(ctx.channelId);
          }
          return { status: 'duplicate', channelId: ctx.channelId, version: state.version };
        }
        await db.putEvidence({ channelId: ctx.channelId, held: held.latest, offered: latest, at: Date.now() });
        log('error', 'equivocation', { channelId: ctx.channelId, version: state.version });
        throw new TrickleError(
          'EQUIVOCATION',
          'a different state both signed at the version already held; both kept as evidence',
          { details: { version: state.version } },
        );
      }
      if (state.version < have.version) {
        throw new TrickleError(
          'STALE_VERSION',
          `version ${state.version} is not newer than the one held (${have.version})`,
          { details: { version: state.version, current: have.version } },
        );
      }
    } else {
      if (db.size >= o.maxChannels)
        throw new TrickleError('LIMIT_EXCEEDED', `this watchtower already guards ${o.maxChannels} channels`);
      // Anyone can sign both sides of a channel it never opens: only channels the adjudicator knows are watched, or
      // made-up ones would fill the database up to maxChannels and crowd out real ones.
      let onChain;
      try {
        onChain = await reader.getChannel(ctx.channelId);
      } catch (cause) {
        throw new TrickleError('INTERNAL', 'cannot read the channel from the chain: try again', {
          details: { channelId: ctx.channelId },
          cause,
        });
      }
      // `onChain`: the store reader tries such a record again (a node that lags reads a channel just opened so).
      if (onChain.status === 'none')
        throw new TrickleError('WRONG_CHANNEL', `channel ${ctx.channelId} was never opened on this adjudicator`, {
          details: { channelId: ctx.channelId, onChain: 'none' },
        });
    }
    const kept = claimablePreimages(locks ?? [], held?.preimages, preimages);
    await db.put({
      channelId: ctx.channelId,
      params,
      latest,
      receivedAt: Date.now(),
      source,
      ...(locks && locks.length > 0 ? { locks } : {}),
      ...(kept.length > 0 ? { preimages: kept } : {}),
    });
    log('info', 'state-accepted', {
      channelId: ctx.channelId,
      version: state.version,
      previous: held?.latest.state.version,
      source,
    });
    responder.trigger(ctx.channelId);
    return { status: 'accepted', channelId: ctx.channelId, version: state.version };
  }

  /** The `eth_getLogs` range in use: halved when the node refuses one, doubled back after each read. */
  const logRange = { size: o.maxBlockRange };
  const follower = () => ({
    provider: options.provider,
    adjudicator: adjudicatorAddress,
    confirmations: o.confirmations,
    reorgDepth: o.reorgDepth,
    maxBlockRange: o.maxBlockRange,
    range: logRange,
    cursor: () => db!.cursor(),
    setCursor: (c: BlockCursor) => db!.setCursor(c),
    onEvent: (e: Parameters<Responder['onEvent']>[0]) => {
      if (db!.get(e.channelId)) responder.onEvent(e);
    },
    log,
  });

  async function scanStore(): Promise<void> {
    if (store && Date.now() - lastStoreScan >= o.storePollMs) {
      lastStoreScan = Date.now();
      await store.scan();
    }
  }

  async function pollOnce(): Promise<void> {
    await scanStore();
    try {
      let step;
      let blocks = 0;
      do {
        const from = db!.cursor()?.block;
        step = await followStep(follower());
        safeBlock = step.safe;
        if (head === undefined || step.safe > head.block) head = { block: step.safe, at: Date.now() };
        blocks += from === undefined ? 0 : Math.max(0, step.cursor.block - from);
        if (step.behind && !stopping) {
          // A catch-up over many ranges (after an outage) does not hold back what falls due meanwhile: a device's new
          // state, a reveal, a dispute's re-read, the sweep.
          responder.tick();
          await scanStore();
        }
      } while (step.behind && !stopping);
      if (!caughtUp && !step.behind) log('info', 'caught-up', { block: step.cursor.block, blocks });
      caughtUp = !step.behind;
      lastError = undefined;
      const stale = o.maxHeadAgeMs > 0 && (headIdleMs() ?? 0) > o.maxHeadAgeMs;
      if (stale !== headStale)
        log(stale ? 'warn' : 'info', stale ? 'head-stale' : 'head-moving', {
          block: head?.block,
          idleMs: headIdleMs(),
        });
      headStale = stale;
    } catch (err) {
      caughtUp = false;
      const message = err instanceof Error ? err.message : String(err);
      if (message !== lastError) log('warn', 'poll-failed', { err });
      lastError = message;
    }
    responder.tick();
  }

  const channels = (): WatchedChannelView[] =>
    (db?.list() ?? []).map((c) => ({
      channelId: c.channelId,
      device: c.params.device,
      hub: c.params.hub,
      token: c.params.token,
      version: c.latest.state.version,
      paidByDevice: c.latest.state.paidByDevice,
      paidByHub: c.latest.state.paidByHub,
      source: c.source,
      dispute: responder.view(c.channelId) ?? null,
    }));

  const status = (): WatchtowerStatus => ({
    running,
    chainId,
    adjudicator: adjudicatorAddress,
    sender: senderAddress,
    cursor: db?.cursor(),
    safeBlock,
    caughtUp,
    headIdleMs: headIdleMs(),
    channels: db?.size ?? 0,
    pendingDisputes: responder.pending,
    api: api?.url,
    lastError,
    storeError: store?.unreadable,
    storeRefused: store?.refused ?? [],
    storeForeign: store?.foreign ?? 0,
    storeOnlyForeign: store?.onlyForeign ?? false,
    disputes: responder.views(),
  });

  return {
    get apiUrl() {
      return api?.url;
    },
    addState,
    status,
    channels,
    async start() {
      if (used)
        throw new TrickleError(
          'INVALID_ARGUMENT',
          'a watchtower starts once: create a new one (on the same dbPath) to restart',
        );
      used = true;
      // A mistyped store path would leave the watchtower running and guarding nothing it reads from there.
      if (options.storeDir && !options.allowMissingStore) await checkStoreDir(options.storeDir);
      const network = (await options.provider.getNetwork()).chainId;
      if (chainId !== undefined && chainId !== network)
        throw new TrickleError(
          'INVALID_ARGUMENT',
          `chainId ${chainId} was given, but the provider is on chain ${network}`,
          {
            details: { chainId, provider: network },
          },
        );
      chainId = network;
      // At an address without code every read fails to decode, so every state would be refused as INTERNAL ("try
      // again") for ever: the adjudicator is on another network, or the address is wrong.
      if ((await options.provider.getCode(adjudicatorAddress)) === '0x')
        throw new TrickleError('NO_CONTRACT', `no contract at adjudicator ${adjudicatorAddress} on chain ${network}`, {
          details: { adjudicator: adjudicatorAddress, chainId: network },
        });
      senderAddress = toAddress(await options.sender.getAddress());
      const opened = openWatchDb(options.dbPath);
      try {
        const binding = opened.binding();
        if (binding && (binding.chainId !== chainId || binding.adjudicator !== adjudicatorAddress)) {
          throw new TrickleError(
            'INVALID_ARGUMENT',
            `the database at ${options.dbPath} belongs to chain ${binding.chainId}, adjudicator ${binding.adjudicator}`,
            {
              details: { ...binding },
            },
          );
        }
        if (!binding) await opened.setBinding({ chainId, adjudicator: adjudicatorAddress });
      } catch (e) {
        await opened.close();
        throw e;
      }
      db = opened;
      running = true;
      stopping = false;
      try {
        // Events from here on are covered even if the first poll is slow; a reachable node is required to start.
        await initCursor(follower());
      } catch (e) {
        await opened.close();
        db = undefined;
        running = false;
        throw e;
      }
      log('info', 'starting', {
        chainId,
        adjudicator: adjudicatorAddress,
        sender: senderAddress,
        channels: db.size,
        cursor: db.cursor(),
        confirmations: o.confirmations,
      });
      // A force close may be older than any event window we will read: check every watched channel once now.
      for (const c of db.list()) responder.trigger(c.channelId);
      if (store) {
        lastStoreScan = Date.now();
        await store.scan();
      }
      if (o.listen) {
        try {
          api = await startApi({
            port: o.listen.port,
            host: o.listen.host ?? o.host,
            maxBodyBytes: o.maxBodyBytes,
            log,
            handlers: {
              addState: async (s, source) => ({ ...(await addState(s, source)) }),
              health: () => {
                const s = status();
                return {
                  status:
                    s.lastError || s.storeError || s.storeRefused.length > 0 || s.storeOnlyForeign || headStale
                      ? 'degraded'
                      : 'ok',
                  chainId: s.chainId,
                  adjudicator: s.adjudicator,
                  sender: s.sender,
                  cursor: s.cursor,
                  safeBlock: s.safeBlock,
                  caughtUp: s.caughtUp,
                  headIdleMs: s.headIdleMs,
                  channels: s.channels,
                  pendingDisputes: s.pendingDisputes,
                  lastError: s.lastError,
                  storeError: s.storeError,
                  // A count, and the first few: a store of many broken files does not make the answer large.
                  storeRefused: s.storeRefused.length,
                  storeRefusedFiles: s.storeRefused.slice(0, 20).map(({ file, code }) => ({ file, code })),
                  // Records of another chain or adjudicator: not refused (a store may hold several deployments'),
                  // but a store of nothing else is a watchtower configured for the wrong chain or adjudicator.
                  foreignRecords: s.storeForeign,
                  watching: s.storeOnlyForeign ? "none of the store's records" : undefined,
                };
              },
              channels: () => channels() as unknown as Record<string, unknown>[],
            },
          });
        } catch (e) {
          // The API could not listen (the port taken, say): nothing is left half started.
          await responder.stop();
          await addLock;
          await opened.close();
          db = undefined;
          running = false;
          throw e;
        }
      }
      loop = (async () => {
        while (!stopping) {
          await pollOnce();
          if (stopping) break;
          await new Promise<void>((resolve) => {
            const timer = setTimeout(resolve, o.pollMs);
            wake = () => {
              clearTimeout(timer);
              resolve();
            };
          });
          wake = undefined;
        }
      })();
      log('info', 'started', { api: api?.url, channels: db.size });
    },
    async stop() {
      if (!running) return;
      stopping = true;
      wake?.();
      await loop;
      await api?.close();
      api = undefined;
      await responder.stop();
      await addLock;
      await db?.close();
      db = undefined;
      running = false;
      log('info', 'stopped', {});
    },
  };
}
