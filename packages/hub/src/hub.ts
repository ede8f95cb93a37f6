import { pino, type Logger } from 'pino';
import { channelIdOf, domainSeparator, trickleDomain } from '@trickle/protocol/eip712';
import { TrickleError } from '@trickle/protocol/errors';
import type { Message } from '@trickle/protocol/codec';
import type { Signer, Verifier } from '@trickle/protocol/signer';
import { bestVerifier, useNativeKeccak } from '@trickle/protocol/native';
import type { Address, ChannelId, SignedState, Bytes32 } from '@trickle/protocol/types';
import { ChannelTable } from './channels.js';
import { createCommitter, type Committer } from './committer.js';
import { createHubMetrics, type HubMetrics } from './metrics.js';
import { resolveHubLimits, type HubLimits } from './options.js';
import { Router } from './router.js';
import { RouteExtras } from './route-extras.js';
import { inlineCrypto, type HubCrypto } from './crypto.js';
import { MarketClock, type MarketOptions } from './market-clock.js';
import { Session, type SessionContext } from './session.js';
import { startChainFollower, type HubChain } from './chain-watcher.js';
import { startTransport } from './transport.js';
import type { HubStore } from './store/types.js';
import type { ChannelLeases } from './leases.js';
import { createClusterGate } from './cluster.js';

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
}

/** A running hub. */
export interface Hub {
  readonly address: Address;
  /** ws://host:port/ */
  readonly url: string;
  readonly port: number;
  readonly metrics: HubMetrics;
  readonly channels: ChannelTable;
  readonly logger: Logger;
  /** Pay a device from the hub (hub signs first); resolves once the device countersigned and it is durable. */
  credit(channelId: ChannelId, amount: bigint, meta?: { paymentId?: Bytes32 | undefined; round?: bigint | undefined }): Promise<SignedState>;
  /** Send a frame to a connected device. */
  send(device: Address, msg: Message): boolean;
  /** The market clock, when the hub runs a market. */
  readonly market: MarketClock | undefined;
  /** Connected devices. */
  connectedDevices(): Address[];
  /** Stop accepting, close connections, flush the store. */
  close(): Promise<void>;
}

/**
 * Start a hub: HTTP server with the WebSocket endpoint at `/`, `/metrics` (Prometheus) and `/health`; sessions;
 * channel state machines; group-committing store; router; chain watcher.
 * @throws TrickleError('INVALID_ARGUMENT') on bad options
 * @example
 * ```ts
 * const hub = await createHub({ signer: nativeSigner(key), store: openLmdbStore({ path }), chain, port: 8547 });
 * ```
 */
export async function createHub(options: HubOptions): Promise<Hub> {
  const limits = resolveHubLimits(options.limits);
  if (options.leases && options.market) throw new TrickleError('INVALID_ARGUMENT', 'clustered hubs run no market yet (one round lease per cluster is not built): run the market on a single process');
  useNativeKeccak(); // state digests on the event loop: the compiled keccak when installed (byte-identical)
  const logger = options.logger ?? pino({ level: 'info' });
  const verifier = options.verifier ?? bestVerifier();
  const metrics = createHubMetrics();
  const { signer, store, chain } = options;
  const committer: Committer = createCommitter(store, (writes, seconds) => {
    metrics.commitSeconds.observe(seconds);
    metrics.commitWrites.observe(writes);
  }, options.leases);
  const sessions = new Map<Address, Session>();
  const send = (device: Address, msg: Message) => sessions.get(device)?.send(msg) ?? false;
  const isConnected = (device: Address) => sessions.has(device);

  let router!: Router;
  const extras = new RouteExtras({ signer, separator: domainSeparator(trickleDomain(chain.chainId, chain.adjudicator)), send });
  const crypto = options.crypto ?? inlineCrypto(signer, verifier);
  if (crypto.address !== signer.address) throw new TrickleError('INVALID_ARGUMENT', 'crypto and signer hold different keys');
  const channels: ChannelTable = new ChannelTable({
    crypto,
    verifier,
    committer,
    send,
    isConnected,
    onRouted: (route) => router.forward(route),
    onEscrow: (escrow) => market?.onEscrow(escrow),
    checkRoute: (from, token, route, extra) => {
      router.check(from, token, route, extra);
      extras.note(from, token, route);
    },
    onOutcome: (outcome, n = 1) => metrics.updates.inc({ outcome }, n),
    maxCreditRetries: limits.maxCreditRetries,
    now: () => Date.now(),
    owesCredit: (channelId): boolean => market?.owes(channelId) ?? false,
  });
  router = new Router({ channels, committer, isConnected, send: (device, msg) => send(device, extras.outgoing(msg)), maxRoutedInFlight: limits.maxRoutedInFlight, onResult: (result) => metrics.routes.inc({ result }), log: (msg, fields) => logger.info(fields, msg), debug: (msg, fields) => logger.debug(fields, msg) });

  channels.restore(await store.loadChannels());
  const cluster = options.leases
    ? createClusterGate({
        leases: options.leases,
        channels,
        waitMs: 2 * options.leases.leaseMs,
        closeDevice: (device, reason) => sessions.get(device)?.close(4001, reason, 'lease'),
        log: (msg, fields) => logger.info(fields, msg),
      })
    : undefined;
  metrics.channels.set(channels.size);
  for (const route of await store.loadPendingRoutes()) {
    const credited = (await store.loadMetaPrefix(`credited/${route.paymentId}/`)).map((e) => e.key.slice(e.key.lastIndexOf('/') + 1));
    await router.resume(route, credited);
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
          broadcast: (msg) => {
            for (const s of sessions.values()) s.send(msg);
          },
          credit: (channelId, amount, meta) => channels.credit(channelId, amount, meta),
          onRound: () => metrics.rounds.inc(),
          log: (msg, fields) => logger.info(fields, msg),
        },
        options.market,
      )
    : undefined;
  await market?.restore();

  const handler = {
    onAuthenticated(session: Session) {
      const device = session.device!;
      const old = sessions.get(device);
      if (old && old !== session) old.close(4000, 'replaced by a newer connection', 'replaced');
      sessions.set(device, session);
      metrics.connections.set(sessions.size);
      logger.debug({ device }, 'device authenticated');
      market?.deviceConnected(device); // clearing records first: the device checks round credits against them
      // In a cluster, pending credits are proposed once this process holds the device's channels.
      if (cluster) cluster.deviceConnected(device, () => channels.deviceConnected(device));
      else channels.deviceConnected(device);
      if (market) session.send(market.roundFrame());
    },
    async onMessage(session: Session, msg: Message) {
      const device = session.device!;
      if (cluster) await cluster.ready(device, msg);
      switch (msg.t) {
        case 'open': {
          const id = channelIdOf(msg.params);
          const onChain = await chain.readChannel(id);
          const latest = await channels.admit(msg.params, device, onChain, { chainId: chain.chainId, adjudicator: chain.adjudicator });
          metrics.channels.set(channels.size);
          session.send({ t: 'sync', id: msg.id, channelId: id, latest });
          return;
        }
        case 'update':
          channels.enqueue(device, msg.state.channelId, { t: 'update', id: msg.id, state: msg.state, sig: msg.sig, route: msg.route, escrowFor: msg.paymentId });
          return;
        case 'close':
          channels.enqueue(device, msg.state.channelId, { t: 'close', id: msg.id, state: msg.state, sig: msg.sig });
          return;
        case 'ack':
          channels.enqueue(device, msg.channelId, { t: 'ack', id: msg.id, version: msg.version, sig: msg.sig });
          return;
        case 'reject':
          channels.enqueue(device, msg.channelId, { t: 'reject', id: msg.id, code: msg.code, message: msg.message });
          return;
        case 'sync':
          channels.enqueue(device, msg.channelId, { t: 'sync', id: msg.id, latest: msg.latest });
          return;
        case 'order': {
          if (!market) throw new TrickleError('BAD_ORDER', 'this hub runs no market');
          session.send(await market.place(device, msg));
          return;
        }
        default:
          throw new TrickleError('MALFORMED', `devices do not send ${msg.t}`);
      }
    },
    onClosed(session: Session) {
      if (session.device && sessions.get(session.device) === session) {
        sessions.delete(session.device);
        metrics.connections.set(sessions.size);
      }
    },
    onFrame(direction: 'in' | 'out') {
      metrics.frames.inc({ direction });
    },
    onDisconnect(reason: string) {
      metrics.disconnects.inc({ reason });
    },
  };

  const startedAt = Date.now();
  const follower = await startChainFollower({ chain, channels, committer, store, hub: signer.address, pollMs: options.chainPollMs ?? 1000, logger });
  const transport = await startTransport({
    port: options.port ?? 0,
    host: options.host ?? '127.0.0.1',
    limits,
    metrics,
    logger,
    onConnection: (ws) => new Session(ws, ctx, handler),
    health: () => ({ status: cluster?.health().database === 'unreachable' ? 'degraded' : 'ok', ...cluster?.health(), hub: signer.address, channels: channels.size, connections: sessions.size, lastBlock: follower.lastBlock, uptimeSeconds: Math.round((Date.now() - startedAt) / 1000) }),
  });
  const port = transport.port;

  // Heartbeats: ping every connection, close idle ones.
  const heartbeat = setInterval(() => {
    const now = Date.now();
    for (const s of sessions.values()) s.heartbeat(now);
  }, Math.max(1000, Math.floor(limits.idleTimeoutMs / 3)));
  market?.start(options.market?.roundMs ?? 1000);

  logger.info({ hub: signer.address, port, channels: channels.size }, 'hub listening');

  return {
    address: signer.address,
    url: `ws://${options.host ?? '127.0.0.1'}:${port}/`,
    port,
    metrics,
    channels,
    logger,
    credit: (channelId, amount, meta) => channels.credit(channelId, amount, meta),
    send,
    market,
    connectedDevices: () => [...sessions.keys()],
    async close() {
      clearInterval(heartbeat);
      await market?.stop();
      for (const s of sessions.values()) s.close(1001, 'hub shutting down', 'shutdown');
      await transport.close();
      await follower.stop();
      await committer.drain();
      await crypto.close();
      await cluster?.close(); // after the last commit, before the pool closes
      await store.close();
    },
  };
}

