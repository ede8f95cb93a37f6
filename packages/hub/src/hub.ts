import { pino, type Logger } from 'pino';
import { channelIdOf, domainSeparator, trickleDomain } from '@trickle/protocol/eip712';
import { isTrickleError, TrickleError } from '@trickle/protocol/errors';
import { sameState, validateParams } from '@trickle/protocol/channel';
import { notRunMs } from '@trickle/protocol/clock';
import type { Message, MessageOf } from '@trickle/protocol/codec';
import type { Signer, Verifier } from '@trickle/protocol/signer';
import { bestKeccak256, bestVerifier } from '@trickle/protocol/native';
import type { Address, ChannelId, SignedState, Bytes32 } from '@trickle/protocol/types';
import { ChannelTable, claimedKey, claimedPrefix, preimageKey, revealedKey } from './channels.js';
import { decodeLocks, encodeLocks, hashPreimage } from '@trickle/protocol/locks';
import { createCommitter, type Committer } from './committer.js';
import { checkStoreIdentity } from './store-identity.js';
import {
  createHubMetrics,
  registerChainMetrics,
  registerClusterMetrics,
  registerUnsettledMetrics,
  type HubMetrics,
} from './metrics.js';
import { resolveHubLimits, timerMs, type HubLimits } from './options.js';
import { Router, refusedRouteKey } from './router.js';
import { RouteExtras } from './route-extras.js';
import { inlineCrypto, type HubCrypto } from './crypto.js';
import { MarketClock, type MarketOptions } from './market-clock.js';
import { Session, type SessionContext } from './session.js';
import { startChainFollower, type HubChain } from './chain-watcher.js';
import { startTransport, type TlsOptions } from './transport.js';
import { AckTracker } from './ack-tracker.js';
import { LiquidityPolicy, resolveLiquidity, type LiquidityOptions } from './liquidity.js';
import { DashboardStats } from './dashboard/stats.js';
import { isFinalRecord } from './dashboard/channels-view.js';
import { createDashboard, resolveDashboard, type Dashboard, type DashboardOptions } from './dashboard/http.js';
import { ROUTE_META, type HubStore } from './store/types.js';
import type { ChannelLeases } from './leases.js';
import type { MarketRounds } from './market-rounds.js';
import { createClusterGate, heldChannelsView } from './cluster.js';
import { ChannelLinks } from './links.js';
import { ClusterRoutes } from './cluster-routes.js';
import type { RouteOutbox } from './store/postgres-outbox.js';
import { resolveRouteRetention, startRoutePruner, type RouteRetentionOptions } from './route-retention.js';
import { TokenBuckets } from './token-buckets.js';

/** The key the store probe removes: never set, so its removal changes nothing (see `probeStore` in createHub). */
const STORE_PROBE_KEY = 'health/store-probe';
/** How often a store whose last commit failed is probed. */
const STORE_PROBE_MS = 1000;

/** Options of {@link createHub}. */
export interface HubOptions {
  /** The hub's key: signs states and is the `hub` of every channel. */
  readonly signer: Signer;
  readonly store: HubStore;
  readonly chain: HubChain;
  /** TCP port (0: any free port). Default 0. */
  readonly port?: number;
  /** Interface to listen on. Default 127.0.0.1. */
  readonly host?: string;
  readonly limits?: Partial<HubLimits>;
  /** Verifier; default: libsecp256k1 when installed, else pure JS. */
  readonly verifier?: Verifier;
  /**
   * Where signature work runs. Default: inline on the main thread with `signer`/`verifier`. For throughput, pass
   * `workerCrypto({ privateKey, address })` to spread it over worker threads (the `trickle-hub` bin does).
   */
  readonly crypto?: HubCrypto;
  readonly logger?: Logger;
  /** How often to poll the chain for deposits and closes. Default 1000 ms. */
  readonly chainPollMs?: number;
  /** Run a market with periodic rounds (off when absent). */
  readonly market?: MarketOptions;
  /**
   * Several hub processes on one PostgreSQL database: this process's channel leases (`openPostgresStore({ url,
   * cluster })`'s `leases`). The committer fences every channel write with them, and a device's channels are taken
   * over by the process it connects to (see `cluster.ts`). Absent: this process is the store's only writer.
   */
  readonly leases?: ChannelLeases | undefined;
  /**
   * With `leases`: the cluster's outbox of routed payments (`openPostgresStore({ url, cluster })`'s `outbox`), so a
   * device can pay one served by another process (see `cluster-routes.ts`). Absent: routes stay within a process.
   */
  readonly routeOutbox?: RouteOutbox | undefined;
  /**
   * With `leases` and `market`: the cluster's market (`openPostgresStore({ url, cluster })`'s `market`). Every
   * process takes orders; the one holding the round lease clears each round; each process pays the credits of the
   * channels it holds.
   */
  readonly marketRounds?: MarketRounds | undefined;
  /** Serve `https://` and `wss://` with this certificate and key (PEM). Plain `http`/`ws` when absent. */
  readonly tls?: TlsOptions | undefined;
  /** Serve the operator dashboard at `/dashboard` and its JSON API at `/api/*`, behind a token (off when absent). */
  readonly dashboard?: DashboardOptions | undefined;
  /** Keep the hub's own money in device channels: auto-deposit within a budget (off when absent). */
  readonly liquidity?: LiquidityOptions | undefined;
  /**
   * On `close()`: how long to wait for the updates already received to be committed and acked before closing the
   * sockets with 1001. Default 5000 ms.
   */
  readonly drainTimeoutMs?: number | undefined;
  /**
   * How long finished routed payments (their route records, `credited` markers and, in a cluster, outbox rows) are
   * kept: default 7 days (`hours: 168`), `hours: 0` for ever. See {@link RouteRetentionOptions}.
   */
  readonly routeRetention?: RouteRetentionOptions | undefined;
}

/** A running hub. */
export interface Hub {
  readonly address: Address;
  /** ws://host:port/ (wss:// with TLS) */
  readonly url: string;
  /** http://host:port/ (https:// with TLS): `/health`, `/metrics`, `/dashboard`, `/api/*`. */
  readonly httpUrl: string;
  readonly port: number;
  readonly metrics: HubMetrics;
  readonly channels: ChannelTable;
  readonly logger: Logger;
  /** Pay a device from the hub (hub signs first); resolves once the device countersigned and it is durable. */
  credit(
    channelId: ChannelId,
    amount: bigint,
    meta?: { paymentId?: Bytes32 | undefined; round?: bigint | undefined },
  ): Promise<SignedState>;
  /** Send a frame to a connected device. */
  send(device: Address, msg: Message): boolean;
  /** The market clock, when the hub runs a market. */
  readonly market: MarketClock | undefined;
  /** Connected devices. */
  connectedDevices(): Address[];
  /** The liquidity policy, when enabled. */
  readonly liquidity: LiquidityPolicy | undefined;
  /** The dashboard's rolling statistics (kept whether or not the dashboard is served). */
  readonly stats: DashboardStats;
  /**
   * Drain and stop: stop accepting connections and new updates, let the updates already received be committed and
   * acked, close every socket with 1001 (going away; devices reconnect), then close the store. Idempotent.
   */
  close(): Promise<void>;
}

/**
 * Start a hub: HTTP server (HTTPS with `tls`) with the WebSocket endpoint at `/`, `/metrics` (Prometheus), `/health`
 * and, with `dashboard`, `/dashboard` and `/api/*`; sessions; channel state machines; group-committing store; router
 * (with the `liquidity` policy); chain watcher.
 * @throws TrickleError('INVALID_ARGUMENT') on bad options; ('NO_CONTRACT') when the adjudicator has no code on the chain
 * @example
 * ```ts
 * const hub = await createHub({ signer: nativeSigner(key), store: openLmdbStore({ path }), chain, port: 8547 });
 * ```
 */
export async function createHub(options: HubOptions): Promise<Hub> {
  const limits = resolveHubLimits(options.limits);
  if (options.leases && options.market && !options.marketRounds)
    throw new TrickleError(
      'INVALID_ARGUMENT',
      'a clustered hub runs its market with the cluster’s round lease: pass marketRounds (the PostgreSQL store’s market)',
    );
  const liquidityOptions = options.liquidity ? resolveLiquidity(options.liquidity) : undefined;
  const dashboardOptions = options.dashboard ? resolveDashboard(options.dashboard) : undefined;
  const drainTimeoutMs = options.drainTimeoutMs ?? 5000;
  const retention = resolveRouteRetention(options.routeRetention);
  if (!(drainTimeoutMs >= 0)) throw new TrickleError('INVALID_ARGUMENT', 'drainTimeoutMs must be >= 0');
  // Timers: 0, NaN or more than Node's longest timer fire after 1 ms — the chain endpoint polled without pause.
  const chainPollMs = timerMs('chainPollMs', options.chainPollMs ?? 1000);
  const marketRoundMs = timerMs('market.roundMs', options.market?.roundMs ?? 1000);
  await options.chain.checkDeployed?.();
  const logger = options.logger ?? pino({ level: 'info' });
  const verifier = options.verifier ?? bestVerifier();
  const metrics = createHubMetrics();
  const { signer, store, chain } = options;
  const stats = new DashboardStats();
  /** The error of the store's last commit, when it failed (a full disk, EIO, the database gone); a commit it takes clears it. */
  let draining = false; // set by close(): no new updates taken in
  let storeError: unknown;
  // While the store fails, a write that changes nothing (the removal of a key never set) is committed every second, so
  // that a process taking no traffic meanwhile sees the store work again. A balancer routes none to a 503, and a cluster
  // process whose leases moved away has nothing of its own to write: /health stayed 503 for good after one failed
  // commit (a SIGSTOPped process's late write, a database blip), and the process was out of rotation while it worked.
  let storeProbe: ReturnType<typeof setInterval> | undefined;
  const probeStore = () => {
    // The outcome is the committer's storeFailed: a commit taken clears storeError (and stops this), a failure keeps it.
    committer.write([{ kind: 'deleteMeta', key: STORE_PROBE_KEY }]).catch((e: unknown) => {
      logger.debug({ err: e }, 'store probe: the store still fails');
    });
  };
  const committer: Committer = createCommitter(
    store,
    (writes, seconds) => {
      metrics.commitSeconds.observe(seconds);
      metrics.commitWrites.observe(writes);
      stats.commit(seconds, writes);
    },
    options.leases,
    (e) => {
      storeError = e;
      if (e === undefined) {
        clearInterval(storeProbe);
        storeProbe = undefined;
      } else if (storeProbe === undefined && !draining) {
        storeProbe = setInterval(probeStore, STORE_PROBE_MS);
        storeProbe.unref();
      }
    },
  );
  // Before anything reads the store: its channels and chain cursor must be this hub's, chain's and adjudicator's.
  await checkStoreIdentity(store, committer, {
    hub: signer.address,
    chainId: chain.chainId,
    adjudicator: chain.adjudicator,
  });
  const sessions = new Map<Address, Session>();
  const chainReads = new ChainReadBudget(limits);
  const acks = new AckTracker();
  // Every frame to a device passes here: acks and refusals answer tracked updates (ack latency, drain).
  const send = (device: Address, msg: Message) => {
    if (msg.t === 'ack') {
      const ms = acks.acked(msg.channelId, msg.id, Date.now());
      if (ms !== undefined) {
        stats.ack(ms);
        metrics.tally.ackSeconds.observe(ms / 1000);
      }
    } else if (msg.t === 'reject') acks.refused(msg.channelId, msg.id);
    return sessions.get(device)?.send(msg) ?? false;
  };
  const isConnected = (device: Address) => sessions.has(device);

  const extras = new RouteExtras({
    signer,
    separator: domainSeparator(trickleDomain(chain.chainId, chain.adjudicator)),
    send,
  });
  const crypto = options.crypto ?? inlineCrypto(signer, verifier);
  if (crypto.address !== signer.address)
    throw new TrickleError('INVALID_ARGUMENT', 'crypto and signer hold different keys');
  // Built in dependency order: the channel table first, with the links through which it reaches the router and the
  // market; those are built on the table and attached to the links as they are made.
  const links = new ChannelLinks();
  const channels: ChannelTable = new ChannelTable({
    signer,
    keccak: bestKeccak256(), // state digests on the event loop: the compiled keccak when installed (byte-identical)
    crypto,
    verifier,
    committer,
    loadChannel: store.loadChannel?.bind(store),
    send,
    isConnected,
    ...links.hooks,
    checkRoute: (from, token, route, extra, lock) => {
      const checking = links.hooks.checkRoute(from, token, route, extra, lock);
      if (checking) return checking.then(() => extras.note(from, token, route));
      extras.note(from, token, route);
    },
    maxLocks: limits.maxLocks,
    onOutcome: (outcome, n = 1) => {
      if (outcome === 'accepted') {
        metrics.tally.accepted += n;
        stats.accepted(n);
      } else metrics.updates.inc({ outcome }, n);
    },
    maxCreditRetries: limits.maxCreditRetries,
    onUnsettled: (channelId, count, deferred) => {
      if (count > 0)
        logger.warn(
          { channelId, unsettled: count, waiting: deferred },
          'a device refused a credit it may still hold: what waits on it (a payer’s refund) waits until the device countersigns a later state or the channel closes',
        );
      else logger.info({ channelId }, 'the credits a device refused are settled');
    },
    // A device's top-up the chain follower has not recorded yet: read when its update needs more than the deposits
    // known, within the device's share of chain reads. Not read (share spent, node down): judged on what is known.
    refreshFunding: async (device, channelId) => {
      try {
        chainReads.take(device);
        return (await chain.readChannel(channelId))?.funding;
      } catch (err) {
        logger.debug({ err, channelId }, 'deposits not read again for an update they do not cover');
        return undefined;
      }
    },
    revealedAt: chain.revealedAt
      ? async (device, hash) => {
          chainReads.take(device);
          try {
            return await chain.revealedAt!(hash);
          } catch (cause) {
            throw new TrickleError('TIMEOUT', 'cannot read the preimage registry now', { cause });
          }
        }
      : undefined,
    now: () => Date.now(),
  });
  const liquidity = liquidityOptions
    ? new LiquidityPolicy(
        {
          // In a cluster only the channels held here: a stale record of a channel that moved must not be topped up.
          channels: options.leases ? heldChannelsView(channels, options.leases) : channels,
          chain,
          store,
          committer,
          logger,
          onDeposit: (channelId, amount) =>
            stats.chainEvent({ at: Date.now(), kind: 'deposit' as const, channelId, amount: String(amount) }),
        },
        liquidityOptions,
      )
    : undefined;
  const clusterRoutes =
    options.leases && options.routeOutbox
      ? new ClusterRoutes({
          outbox: options.routeOutbox,
          leases: options.leases,
          channels,
          pollMs: Math.max(100, Math.floor(options.leases.leaseMs / 4)),
          log: (msg, fields) => logger.info(fields, msg),
          debug: (msg, fields) => logger.debug(fields, msg),
        })
      : undefined;
  const router = new Router({
    cluster: clusterRoutes,
    channels,
    committer,
    isConnected,
    send: (device, msg) => extras.deliver(device, msg),
    restoreExtras: (route) => extras.restore(route),
    maxRoutedInFlight: limits.maxRoutedInFlight,
    now: retention.now,
    onResult: (result) => metrics.routes.inc({ result }),
    log: (msg, fields) => logger.info(fields, msg),
    debug: (msg, fields) => logger.debug(fields, msg),
    onShortfall: liquidity ? (channelId) => liquidity.want(channelId) : undefined,
    lockMarginSeconds: limits.lockMarginSeconds,
    reveal: chain.reveal ? (preimage) => chain.reveal!(preimage) : undefined,
    chainTime: chain.chainTime ? () => chain.chainTime!() : undefined,
    revealedAt: chain.revealedAt ? (hash) => chain.revealedAt!(hash) : undefined,
    getPreimage: async (hash) => (await store.getMeta(preimageKey(hash))) as Bytes32 | undefined,
    routeRecorded: store.loadRoute ? async (paymentId) => (await store.loadRoute!(paymentId)) !== undefined : undefined,
    getClaim: async (hash, payee) => {
      const claim = (await store.getMeta(claimedKey(hash, payee))) ?? (await store.getMeta(revealedKey(hash)));
      if (claim !== undefined) return claim as Bytes32;
      // A preimage stored by a hub from before per-payee claims (one conditional route per hash then) with no claim
      // stored since: that route's. Since, every preimage is stored with its claim (or its reveal), so none is bare.
      const bare = await store.getMeta(preimageKey(hash));
      if (bare === undefined || (await store.loadMetaPrefix(claimedPrefix(hash))).length > 0) return undefined;
      return bare as Bytes32;
    },
  });
  links.attachRouter(router);
  clusterRoutes?.start(
    (route, status, toChannel) => router.settle(route, status, toChannel),
    (route) => router.abandon(route),
    (route, preimage, refused) => router.conditional(route, preimage, refused),
    (route, preimage) => router.guard(route, preimage),
  );

  channels.restore(await store.loadChannels());
  const cluster = options.leases
    ? createClusterGate({
        leases: options.leases,
        channels,
        waitMs: 2 * options.leases.leaseMs,
        closeDevice: (device, reason) => sessions.get(device)?.close(4001, reason, 'lease'),
        refresh: async (channelId) => {
          const onChain = await chain.readChannel(channelId);
          // 'open' on-chain tells nothing new: a channel whose final state the hub signed first is closing here.
          const status = onChain?.status === 'open' ? undefined : onChain?.status;
          if (onChain) await channels.onChain(channelId, { funding: onChain.funding, status });
          // A force close made while no process held the channel: no follower answered its event (each records the
          // facts of the channels it holds only), so the holder answers it now if it is older than the hub's latest.
          if (onChain?.status === 'closing' && onChain.version !== undefined)
            follower.answer(channelId, onChain.version);
        },
        log: (msg, fields) => logger.info(fields, msg),
      })
    : undefined;
  metrics.channels.set(channels.size);
  await liquidity?.restore();
  for (const route of await store.loadPendingRoutes()) {
    const credited = (await store.loadMetaPrefix(`${ROUTE_META.credited}${route.paymentId}/`)).map((e) =>
      e.key.slice(e.key.lastIndexOf('/') + 1),
    );
    const refused = route.lock !== undefined && (await store.getMeta(refusedRouteKey(route.paymentId))) !== undefined;
    await router.resume(route, credited, refused);
  }

  const ctx: SessionContext = {
    hub: signer.address,
    chainId: chain.chainId,
    adjudicator: chain.adjudicator,
    separator: domainSeparator(trickleDomain(chain.chainId, chain.adjudicator)),
    verifier,
    limits,
  };

  const market: MarketClock | undefined = options.market
    ? new MarketClock(
        {
          channels,
          committer,
          store,
          signer,
          verifier,
          domain: trickleDomain(chain.chainId, chain.adjudicator),
          send,
          wireVersion: (device) => sessions.get(device)?.wireVersion,
          broadcast: (msg) => {
            for (const s of sessions.values()) s.send(msg);
          },
          credit: (channelId, amount, meta) => channels.credit(channelId, amount, meta),
          onRound: (record) => {
            metrics.rounds.inc();
            const point = {
              round: String(record.round),
              at: Date.now(),
              markets: record.markets.map((m) => ({
                market: m.market,
                price: m.price === null ? null : String(m.price),
                quantity: String(m.volume),
              })),
              fee: String(record.fee),
            };
            stats.round(point);
          },
          log: (msg, fields) => logger.info(fields, msg),
          cluster:
            options.leases && options.marketRounds && cluster
              ? {
                  rounds: options.marketRounds,
                  holds: (id) => options.leases!.epochOf(id) !== undefined,
                  hold: (id) => cluster.hold(id),
                }
              : undefined,
        },
        options.market,
      )
    : undefined;
  if (market) links.attachMarket(market);
  await market?.restore();

  const takeUpdate = (device: Address, msg: Extract<Message, { t: 'update' }>, now: number) => {
    channels.enqueue(device, msg.state.channelId, {
      t: 'update',
      id: msg.id,
      state: msg.state,
      sig: msg.sig,
      route: msg.route,
      escrowFor: msg.paymentId,
      lock: msg.lock,
      unlock: msg.unlock,
    });
    acks.received(msg.state.channelId, msg.id, now);
    stats.touch(msg.state.channelId, now);
  };
  const handler = {
    onAuthenticated(session: Session) {
      const device = session.device!;
      const old = sessions.get(device);
      // The new connection is registered before the old one closes: the old one's close is then not the device going
      // away (in a cluster that released its channels' leases, to be taken again at once, racing the release).
      sessions.set(device, session);
      if (old && old !== session) {
        old.close(4000, 'replaced by a newer connection', 'replaced');
        acks.forget(channels.channelsOf(device)); // what the old connection was sent is resent, answered on this one
      }
      // A device with a channel here paid for it on-chain; a fresh key costs nothing (see Session.known).
      const known = () => {
        if (channels.channelsOf(device).length > 0) session.known();
      };
      known();
      metrics.connections.set(sessions.size);
      logger.debug({ device }, 'device authenticated');
      market?.deviceConnected(device); // clearing records first: the device checks round credits against them
      // In a cluster, pending credits are proposed once this process holds the device's channels.
      if (cluster)
        cluster.deviceConnected(device, () => {
          known(); // its channels taken over from the database
          channels.deviceConnected(device);
          market?.channelsTaken(device); // round credits cleared while another process held its channels
        });
      else channels.deviceConnected(device);
      extras.deviceConnected(device); // routed payments' outcomes it missed while offline
      // Round 0 says "no market here", so a device's market.submitOrder fails at once with MARKET_DISABLED.
      session.send(market ? market.roundFrame() : { t: 'round', id: 0, round: 0n, feeBps: 0n });
    },
    onMessage(session: Session, msg: Message): void | Promise<void> {
      // A payment's update is taken in without a promise of its own (one per frame); what may wait (a cluster's
      // ownership check, the chain, the market) goes through `message`.
      if (msg.t === 'update' && !cluster && !draining) return takeUpdate(session.device!, msg, Date.now());
      return handler.message(session, msg);
    },
    async message(session: Session, msg: Message) {
      const device = session.device!;
      if (cluster) {
        try {
          await cluster.ready(device, msg);
        } catch (e) {
          // The channel could not be taken here (STORE_FAILURE: another process holds it, or the database failed):
          // a claim is answered with a `reject` naming it, as on a single hub, so the device's claim() settles.
          if (msg.t !== 'claim') throw e;
          session.send(claimRefusal(msg, e));
          return;
        }
      }
      // Draining: take in nothing new (the device resends it to the restarted hub); answers to the hub's own
      // proposals (ack, reject) and syncs still count.
      if (draining && msg.t !== 'ack' && msg.t !== 'reject' && msg.t !== 'sync') return;
      const now = Date.now();
      switch (msg.t) {
        case 'open': {
          const id = channelIdOf(msg.params);
          const known = channels.get(id) !== undefined;
          if (!known && msg.params.challengeDuration < BigInt(limits.minChallengeSeconds))
            throw new TrickleError(
              'WRONG_CHANNEL',
              `the hub takes on channels with a challenge period of at least ${limits.minChallengeSeconds} s`,
              {
                details: {
                  challengeDuration: String(msg.params.challengeDuration),
                  minChallengeSeconds: limits.minChallengeSeconds,
                },
              },
            );
          // What admit refuses without the chain is refused before reading it: any fresh key authenticates, and opens
          // naming another device, hub, chain or adjudicator each spent a chain read. A channel held here is answered
          // from the table (admit reads nothing of the chain for it).
          const p = msg.params;
          validateParams(p);
          const mismatch = (what: string, ours: unknown, theirs: unknown) =>
            new TrickleError('WRONG_CHANNEL', what, { details: { hub: String(ours), device: String(theirs) } });
          if (p.device !== device) throw mismatch('channel belongs to another device', device, p.device);
          if (p.hub !== signer.address) throw mismatch('channel is with another hub', signer.address, p.hub);
          if (p.chainId !== chain.chainId) throw mismatch('channel is on another chain', chain.chainId, p.chainId);
          if (p.adjudicator !== chain.adjudicator)
            throw mismatch('channel is on another adjudicator', chain.adjudicator, p.adjudicator);
          if (!known) chainReads.take(device);
          const onChain = known ? undefined : await chain.readChannel(id);
          const latest = await channels.admit(msg.params, device, onChain, {
            chainId: chain.chainId,
            adjudicator: chain.adjudicator,
          });
          // Its read found the device's channel open on-chain: given back to all devices' share (the deposit paid for
          // it), so devices announcing new channels together are not held to the rate of made-up channels.
          if (!known) chainReads.refund();
          metrics.channels.set(channels.size);
          stats.touch(id, now);
          session.known();
          if (!known) {
            const r = channels.get(id)!;
            logger.info(
              {
                channelId: id,
                device,
                token: msg.params.token,
                depositDevice: String(r.funding.device),
                depositHub: String(r.funding.hub),
              },
              'channel opened',
            );
            if (liquidity && liquidity.low(r)) liquidity.want(id);
          }
          // The hub's latest with its pending locks (spec §4: `sync` carries that state's locks, absent when none),
          // read together, so a device that lost its record can adopt the state (its locks checked against locksRoot).
          const held = channels.get(id);
          const locks = held?.locks ?? [];
          session.send({
            t: 'sync',
            id: msg.id,
            channelId: id,
            latest: held?.latest ?? latest,
            ...(locks.length > 0 ? { locks: encodeLocks(locks) } : {}),
          });
          return;
        }
        case 'update':
          takeUpdate(device, msg, now);
          return;
        case 'close':
          channels.enqueue(device, msg.state.channelId, { t: 'close', id: msg.id, state: msg.state, sig: msg.sig });
          stats.touch(msg.state.channelId, now);
          logger.info(
            { channelId: msg.state.channelId, device, version: String(msg.state.version) },
            'device asked to close a channel cooperatively',
          );
          return;
        case 'ack':
          channels.enqueue(device, msg.channelId, { t: 'ack', id: msg.id, version: msg.version, sig: msg.sig });
          return;
        case 'reject':
          channels.enqueue(device, msg.channelId, { t: 'reject', id: msg.id, code: msg.code, message: msg.message });
          return;
        case 'sync': {
          // A state offered above the hub's latest (or another at its version) costs the hub the recovery of its
          // signatures, and the sync is answered all the same: charged as a refused frame, so forged offers are no
          // cheaper than refused updates. A device offers one only after the hub lost what it had acked.
          const held = msg.latest ? channels.get(msg.channelId)?.latest.state : undefined;
          if (held && msg.latest && msg.latest.state.version >= held.version && !sameState(msg.latest.state, held))
            session.chargeRefused();
          channels.enqueue(device, msg.channelId, {
            t: 'sync',
            id: msg.id,
            latest: msg.latest,
            locks: msg.locks ? decodeLocks(msg.locks) : undefined,
          });
          return;
        }
        case 'claim': {
          const job = { t: 'claim', id: msg.id, hash: msg.unlock.hash, preimage: msg.unlock.preimage } as const;
          try {
            // A claim of the hub's lock past its expiry stands if the preimage was on-chain by then: read the registry.
            // Not for a preimage of another hash (never revealed): the engine refuses it BAD_PREIMAGE, spending no read.
            const own = channels.get(msg.channelId)?.params.device === device;
            const lock = own
              ? channels.locksOf(msg.channelId).find((l) => l.hash === job.hash && l.payer === 'hub')
              : undefined;
            if (
              lock &&
              chain.revealedAt &&
              BigInt(Math.floor(Date.now() / 1000)) > lock.expiry &&
              hashPreimage(job.preimage) === job.hash
            ) {
              chainReads.take(device);
              const revealedAt = await chain.revealedAt(job.hash).catch(() => undefined); // unread: refused as expired
              channels.enqueue(device, msg.channelId, { ...job, revealedAt });
              return;
            }
            channels.enqueue(device, msg.channelId, job);
          } catch (e) {
            // Refused before the channel's engine read it (WRONG_CHANNEL: not a channel of this device's here;
            // RATE_LIMITED: past its chain reads).
            session.send(claimRefusal(msg, e));
          }
          return;
        }
        case 'order': {
          if (!market) throw new TrickleError('MARKET_DISABLED', 'this hub runs no market');
          session.send(await market.place(device, msg));
          return;
        }
        case 'outcome': {
          // The payer's own routes only: another device's payment id is answered as an unknown one (charged as a
          // refused frame by the `error` reply), so a query tells nothing about other devices' payments.
          const route = await store.loadRoute?.(msg.paymentId);
          if (!route || route.from !== device)
            throw new TrickleError('UNKNOWN_PAYMENT', `no routed payment of this device has id ${msg.paymentId}`, {
              details: { paymentId: msg.paymentId },
            });
          session.send(extras.answer(msg.id, route));
          return;
        }
        case 'error':
          // A device's word that something of ours failed on its side (spec §4: either side sends `error`). Not
          // answered: two peers that each answered an error with one would bounce frames for ever.
          logger.debug(
            { device, id: msg.id, code: msg.code, wireCode: msg.wireCode, message: msg.message },
            'device reported an error',
          );
          return;
        default:
          throw new TrickleError('MALFORMED', `devices do not send ${msg.t}`);
      }
    },
    onClosed(session: Session) {
      if (session.device && sessions.get(session.device) === session) {
        sessions.delete(session.device);
        metrics.connections.set(sessions.size);
        cluster?.deviceDisconnected(session.device);
        acks.forget(channels.channelsOf(session.device)); // resent after the reconnect, answered there
        channels.deviceDisconnected(session.device); // its idle channels are kept packed until it is back
      }
    },
    onFrame(direction: 'in' | 'out') {
      if (direction === 'in') metrics.tally.framesIn++;
      else metrics.tally.framesOut++;
    },
    onDisconnect(reason: string) {
      metrics.disconnects.inc({ reason });
    },
  };

  /**
   * The answer to a claim refused before the channel's engine read it: a `reject` with the claim's id and channel, as
   * the engine refuses one (spec §4), which the device pairs with its claim and answers its caller with. An `error`
   * frame names no channel: the device left it unanswered and its claim() waited (for ever while the refusal stood: a
   * claim is shown again only at a reconnect).
   */
  const claimRefusal = (msg: MessageOf<'claim'>, e: unknown): Message => {
    const err = isTrickleError(e) ? e : new TrickleError('INTERNAL', 'internal error');
    return {
      t: 'reject',
      id: msg.id,
      channelId: msg.channelId,
      code: err.code,
      message: err.shortMessage,
      latest: null,
    };
  };

  const startedAt = Date.now();
  /** No chain poll completed for `chainStaleMs`: the hub cannot see (or answer) a force close. */
  const chainBehind = () => Date.now() - follower.lastPollAt > limits.chainStaleMs;
  const follower = await startChainFollower({
    chain,
    channels: cluster && options.leases ? heldChannelsView(channels, options.leases) : channels,
    committer,
    store,
    hub: signer.address,
    pollMs: chainPollMs,
    logger,
    onRevealed: (r) => router.onRevealed(r.hash, r.preimage, r.at),
    onEvent: (e) => {
      if (e.kind === 'deposit') return;
      const point = {
        at: Date.now(),
        kind: e.kind,
        channelId: e.channelId,
        version: 'version' in e ? String(e.version) : undefined,
        by: 'by' in e ? e.by : undefined,
      };
      stats.chainEvent(point);
    },
  });
  const summary = () => {
    let open = 0;
    let final = 0;
    let closing = 0;
    let closed = 0;
    for (const r of channels.records()) {
      // A channel whose final state both signed is not open for payments, though on-chain it is until the close
      // transaction is mined (the channel rows say 'final' too).
      if (isFinalRecord(r)) final++;
      else if (r.status === 'open') open++;
      else if (r.status === 'closing') closing++;
      else closed++;
    }
    const recent = stats.series().slice(-5);
    // The newest second that had any: a quiet last second shows the latency seen just before it.
    const latest = <K extends 'ackP50' | 'ackP99' | 'commitP50' | 'commitP99'>(k: K) =>
      recent.findLast((p) => p[k] !== null)?.[k] ?? null;
    return {
      hub: signer.address,
      chainId: chain.chainId,
      adjudicator: chain.adjudicator,
      uptimeSeconds: Math.round((Date.now() - startedAt) / 1000),
      lastBlock: follower.lastBlock,
      channels: { total: channels.size, open, final, closing, closed },
      connections: sessions.size,
      updatesPerSecond: recent.length ? recent.reduce((n, p) => n + p.updates, 0) / recent.length : 0,
      totalUpdates: stats.totalUpdates,
      ackMs: { p50: latest('ackP50'), p99: latest('ackP99') },
      commitMs: { p50: latest('commitP50'), p99: latest('commitP99') },
      totalCommits: stats.totalCommits,
      market: market
        ? { enabled: true, round: market.round, lastRound: stats.rounds[stats.rounds.length - 1] ?? null }
        : { enabled: false },
      liquidity:
        liquidity && liquidityOptions
          ? { budget: liquidityOptions.budget, spent: liquidity.spent, autoDeposit: liquidityOptions.autoDeposit }
          : null,
    };
  };
  const dashboard: Dashboard | undefined = dashboardOptions
    ? createDashboard(
        {
          options: dashboardOptions,
          stats,
          secure: options.tls !== undefined,
          records: () => channels.records(),
          isConnected: (r) => sessions.has(r.params.device),
          summary,
        },
        new URL('./dashboard/assets/', import.meta.url),
      )
    : undefined;
  if (dashboard) stats.listen((event, point) => dashboard.push(event, point));
  const transport = await startTransport({
    tls: options.tls,
    onRequest: dashboard ? (req, res) => dashboard.handle(req, res) : undefined,
    port: options.port ?? 0,
    host: options.host ?? '127.0.0.1',
    limits,
    metrics,
    logger,
    onConnection: (ws, known) => new Session(ws, ctx, handler, known),
    // 503 while this process cannot take payments: its store fails commits (a full disk, the database unreachable) or
    // it is draining. A chain endpoint behind is 'degraded' but still 200: payments go on without it, and a flapping
    // RPC node would otherwise take every hub out of a balancer's rotation at once.
    health: () => {
      const clusterHealth = cluster?.health();
      const storeFailing = storeError !== undefined;
      const serving = !draining && !storeFailing && clusterHealth?.database !== 'unreachable';
      return {
        serving,
        body: {
          status: serving && !chainBehind() ? 'ok' : 'degraded',
          store: storeFailing ? 'failing' : 'ok',
          ...(draining ? { draining: true } : {}),
          chain: chainBehind() ? 'behind' : 'ok',
          chainPollAgeSeconds: Math.round((Date.now() - follower.lastPollAt) / 1000),
          ...clusterHealth,
          ...(cluster && market ? { roundLease: options.marketRounds?.leading() ?? false } : {}),
          hub: signer.address,
          channels: channels.size,
          connections: sessions.size,
          lastBlock: follower.lastBlock,
          uptimeSeconds: Math.round((Date.now() - startedAt) / 1000),
        },
      };
    },
  });
  registerChainMetrics(metrics, () => follower.lastPollAt);
  registerUnsettledMetrics(metrics, () => channels.unsettledCount());
  const port = transport.port;
  const host = options.host ?? '127.0.0.1';
  const secure = transport.scheme === 'wss';
  // An IPv6 address goes in brackets (RFC 3986): `ws://::1:8547/` parses as no URL, and was the listening line's.
  const authority = `${host.includes(':') && !host.startsWith('[') ? `[${host}]` : host}:${port}`;
  const url = `${secure ? 'wss' : 'ws'}://${authority}/`;
  // The owner URL stored with this process's leases: the bound port (a process started on port 0 learns it only now).
  options.leases?.advertise(url);
  options.marketRounds?.advertise(url);
  if (options.leases) registerClusterMetrics(metrics, options.leases, market ? options.marketRounds : undefined);

  // Heartbeats: ping every connection, close idle ones.
  const beatMs = Math.max(1000, Math.floor(limits.idleTimeoutMs / 3));
  let beatAt = performance.now();
  let skipped = false;
  const heartbeat = setInterval(() => {
    const now = performance.now(); // monotonic: a step of the host's wall clock must not close every connection
    // A beat after time this process did not run (a blocked event loop, a paused container or VM) only pings: what
    // the peers sent meanwhile is still unread. Silence is judged at the next beat (never two skipped in a row, so a
    // hub always late still closes idle connections).
    const judge = notRunMs(now, beatAt, beatMs) === 0 || skipped;
    skipped = !judge;
    beatAt = now;
    for (const s of sessions.values()) s.heartbeat(now, judge);
  }, beatMs);
  market?.start(marketRoundMs);
  // One point per second for the dashboard's charts and live stream.
  const ticker = setInterval(() => {
    const point = stats.tick(Date.now());
    if (dashboard?.live) dashboard.push('tick', { point, summary: summary() });
  }, 1000);
  const topUps = liquidity ? setInterval(() => liquidity.scan(), chainPollMs) : undefined;
  liquidity?.scan();
  // After start-up (pending routes resumed above): a backlog is pruned in the background, in batches.
  const pruner = startRoutePruner({
    store,
    retention,
    onPruned: (n) => metrics.routesPruned.inc(n),
    log: (level, msg, fields) => logger[level](fields, msg),
  });

  logger.info(
    {
      hub: signer.address,
      url,
      port,
      tls: secure,
      dashboard: dashboard !== undefined,
      market: market !== undefined,
      liquidity: liquidityOptions !== undefined,
      channels: channels.size,
    },
    'hub listening',
  );
  // Plain ws/http on an interface other than loopback: the dashboard token (and every frame) crosses the network in
  // clear. Not refused — a TLS proxy in front is a sound set-up — but said, with what to do.
  if (!secure && !isLoopback(host))
    logger.warn(
      { url, host },
      'serving without TLS on a non-loopback interface: use --tls-cert/--tls-key, or a TLS proxy in front and --host 127.0.0.1',
    );

  let closing: Promise<void> | undefined;
  const drain = async () => {
    draining = true;
    clearInterval(storeProbe);
    const began = Date.now();
    logger.info({ connections: sessions.size, unanswered: acks.unanswered }, 'hub shutting down: draining');
    transport.stopAccepting();
    clearInterval(heartbeat);
    clearInterval(ticker);
    clearInterval(topUps);
    await market?.stop();
    clusterRoutes?.stop(); // what is in flight is finished here or by the channels' next holders
    await liquidity?.stop();
    await pruner.stop();
    // Updates already taken in get committed and acked; each ack is sent after the commit that holds it.
    while (acks.unanswered > 0 && Date.now() - began < drainTimeoutMs) await new Promise((r) => setTimeout(r, 5));
    await committer.drain();
    const unanswered = acks.unanswered;
    for (const s of sessions.values()) s.close(1001, 'hub shutting down', 'shutdown');
    dashboard?.close();
    await transport.close(2000); // the 1001 close frames follow the acks queued before them
    chain.close?.(); // a challenge or reveal being re-priced gives up (its copy saved): the follower stops at once
    await follower.stop();
    await committer.drain();
    await crypto.close();
    await cluster?.close(); // after the last commit, before the pool closes
    await store.close();
    logger.info({ ms: Date.now() - began, unanswered }, 'hub stopped');
  };

  return {
    address: signer.address,
    url,
    httpUrl: `${secure ? 'https' : 'http'}://${authority}/`,
    liquidity,
    stats,
    port,
    metrics,
    channels,
    logger,
    credit: (channelId, amount, meta) => channels.credit(channelId, amount, meta),
    send,
    market,
    connectedDevices: () => [...sessions.keys()],
    close() {
      closing ??= drain();
      return closing;
    },
  };
}

/** 127.0.0.0/8, ::1 and localhost: interfaces no other machine reaches. */
function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || host === '[::1]' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

/**
 * Chain reads devices may cause: a token bucket per device address, and one for all devices together. Each read costs
 * the hub a call to its chain endpoint, whose quota it needs to see stale force closes and send its challenges; any key
 * authenticates, so the device's share alone bounded nothing (fresh keys, each within its share, spent the quota). The
 * hub's own calls are not counted: devices are refused RATE_LIMITED before the chain follower wants for a read.
 * An open whose read found the device's channel open is given back to all devices' share ({@link refund}).
 * Devices with a full bucket are forgotten as the table grows ({@link TokenBuckets}).
 */
class ChainReadBudget {
  readonly #devices: TokenBuckets<Address>;
  /** All devices' share, as the one key of its own buckets. */
  readonly #all: TokenBuckets<'all'>;

  constructor(limits: HubLimits) {
    this.#devices = new TokenBuckets(limits.chainReadsPerSecond, limits.chainReadBurst);
    this.#all = new TokenBuckets(limits.totalChainReadsPerSecond, limits.totalChainReadBurst);
  }

  /** Spend one read of `device`. @throws TrickleError RATE_LIMITED when its bucket, or all devices', is empty */
  take(device: Address, now = Date.now()): void {
    const wait = this.#devices.waitMs(device, now);
    if (wait > 0)
      throw new TrickleError('RATE_LIMITED', 'too many chain reads asked for (channel announcements): retry later', {
        details: { retryAfterMs: Math.ceil(wait) },
      });
    const allWait = this.#all.waitMs('all', now);
    if (allWait > 0)
      throw new TrickleError('RATE_LIMITED', 'too many chain reads asked for by all devices: retry later', {
        details: { retryAfterMs: Math.ceil(allWait) },
      });
    this.#devices.spend(device, now);
    this.#all.spend('all', now);
  }

  /** Give a read back to all devices' share (an open that found the device's channel open). */
  refund(now = Date.now()): void {
    this.#all.refund('all', now);
  }
}
