import { TrickleError } from '@trickle/protocol/errors';

/** Limits and timings of a hub; every one has a default here and is validated once in {@link resolveHubLimits}. */
export interface HubLimits {
  /**
   * Largest frame accepted, in bytes (WebSocket maxPayload too). The fragments a message may come in, and the socket
   * reads an unfinished frame may be held in, are bounded in proportion (past them: close 1008).
   */
  readonly maxFrameBytes: number;
  /** Updates a connection may have queued at the hub before further ones get RATE_LIMITED. */
  readonly maxInFlightPerConnection: number;
  /**
   * Sustained messages per second per connection (token bucket), and the burst above it. A connection over its
   * rate is not refused frame by frame: the hub stops reading its socket (the frames wait in the kernel and TCP
   * slows the sender) and reads on as tokens come back.
   */
  readonly messagesPerSecond: number;
  readonly messageBurst: number;
  /**
   * Tokens of the message budget a frame costs in all (1 for the frame plus the rest) when the hub refuses it (an
   * `error` or `reject` reply), so a peer whose frames are refused is slowed this many times more and error replies
   * stay few. Frames that cost the hub work without being refused are charged the same (spec §3): an `ack` that
   * answers no proposal sent on that connection and not yet answered (a forged or repeated ack, dropped unanswered
   * after its signature check), a `sync` offering a state the hub does not hold at or above its latest, a `ping`, every
   * `close` (each has the hub sign a final state and make it durable) and every `reject` (the hub keeps the refused
   * state and signs another on top).
   */
  readonly refusedFrameCost: number;
  /**
   * A connection held back by its rate limit this long without a pause (it never let its bucket refill) is
   * closed: an `error` frame `RATE_LIMITED`, then WebSocket close 1008.
   */
  readonly floodCloseMs: number;
  /**
   * Time a new connection has to authenticate, and, before that, to finish its TLS handshake (under TLS; Node's
   * default is 120 s) and to send its HTTP upgrade request (a request whose headers dribble in slower than this is
   * dropped instead of after Node's default 60–90 s). The authentication is judged after the frames already received
   * are read, so an `auth` that came while the hub did not run (a blocked loop, a paused container) is taken.
   */
  readonly handshakeTimeoutMs: number;
  /**
   * A connection silent for this long (no frame, no pong) is closed. Judged at heartbeats (every third of it, at
   * least 1 s); a heartbeat that comes more than a period late (the hub did not run) only pings.
   */
  readonly idleTimeoutMs: number;
  /**
   * Sockets open at once, counted from their TCP connection (before the TLS handshake and the upgrade request) until
   * they close: more are refused (closed with 1013, or 503 to an HTTP request; dropped at their TCP connection past
   * 1,024 such refusals pending).
   */
  readonly maxConnections: number;
  /**
   * Connections from one IPv4 address (or IPv6 /64) whose device is not yet known here — still in its TLS handshake or
   * upgrade request (counted from the TCP connection), still authenticating, or authenticated with a key that holds no
   * channel at this hub (any fresh key authenticates, for free), and plain HTTP connections (dashboard, `/metrics`)
   * while open: more are refused at once (closed with 1013, or 503 to an HTTP request; dropped at their TCP connection
   * past 16 such refusals pending from that address). Without this bound one address could hold every one of `maxConnections` with throwaway
   * keys, and no device could connect. A device stops counting once it holds a channel here (at authentication, or
   * when its `open` is admitted). Behind a proxy every device has the proxy's address: raise it there (and limit per
   * client at the proxy).
   */
  readonly maxHandshakesPerAddress: number;
  /**
   * After the hub's close frame, how long it waits for the peer's before dropping the socket (ms). Frames that come
   * meanwhile are dropped unread by the session; after a close for what the peer did (1007, 1008) nothing more is read.
   */
  readonly closeGraceMs: number;
  /** Bytes queued for one slow reader before the hub stops reading from it (backpressure). */
  readonly maxBufferedBytes: number;
  /** Malformed frames tolerated per connection before it is closed with 1007. */
  readonly maxMalformedFrames: number;
  /** Sum of routed amounts one device may have undelivered at once. */
  readonly maxRoutedInFlight: bigint;
  /** How many times the hub re-proposes a credit that crossed with a device update. */
  readonly maxCreditRetries: number;
  /**
   * Conditional routes: the hub locks toward the payee with expiry T − Δ for a payer's lock expiring at T, where
   * Δ = the longer challenge duration of the two channels + this margin (seconds) for getting a transaction mined.
   * A route whose T − Δ is not at least this margin in the future is refused with `EXPIRY_TOO_SHORT`.
   */
  readonly lockMarginSeconds: number;
  /** Most pending locks per channel (`TOO_MANY_LOCKS` above); at most 64, what the adjudicator enforces. */
  readonly maxLocks: number;
  /**
   * Shortest challenge period (seconds) of a channel the hub takes on; a device announcing a shorter one is refused
   * with `WRONG_CHANNEL`. Within that period the hub must see a stale force close and get its challenge mined, or
   * the device settles on an old state (a version-0 state needs no signature) and takes back what it paid.
   */
  readonly minChallengeSeconds: number;
  /**
   * `/health` answers `status: "degraded"` (and `chain: "behind"`) when the chain follower has completed no poll for
   * this long (ms): the chain endpoint is down or too slow, and a stale force close would go unanswered.
   */
  readonly chainStaleMs: number;
  /**
   * Chain reads one device may cause per second (`open` of a channel not held here yet, a lock claimed past its expiry,
   * an update needing deposits not seen yet), and the burst above it: each costs the hub a call to its chain endpoint,
   * whose quota it needs to see stale force closes. Over it the frame is refused with `RATE_LIMITED` (the device's
   * `openChannel` retries until its open timeout).
   */
  readonly chainReadsPerSecond: number;
  readonly chainReadBurst: number;
  /**
   * Chain reads all devices together may cause per second, and the burst above it: any key authenticates, so fresh keys,
   * each within its own share, would spend the endpoint's quota without this. An `open` whose read found the device's
   * channel open on-chain is not counted (its deposit paid for it; a wave of new devices is not held to this rate). Leave
   * the endpoint room for the hub's own calls, which are not counted here (the chain follower's polls every
   * `chainPollMs`, dispute transactions): devices past it are refused `RATE_LIMITED` as above, the hub's own calls never.
   */
  readonly totalChainReadsPerSecond: number;
  readonly totalChainReadBurst: number;
  /**
   * `/metrics` renders its text at most once per this many ms and serves that text to every scrape in between (and
   * scrapes that arrive while it renders wait for that one rendering): a scraper in a loop costs the hub a write of
   * the text, not a rendering of every metric, and cannot take CPU from devices. Prometheus scrapes every 15 s or so
   * by default; a value is at most this old.
   */
  readonly metricsCacheMs: number;
  /**
   * Plain HTTP requests (`/health`, `/metrics`, the dashboard and its `/api`, its sign-in, any 404) one IPv4 address
   * (or IPv6 /64) may make per second (token bucket), and the burst above it. Every request costs the event loop that
   * serves the devices' frames, and one keep-alive connection can pipeline them without end; a request past the budget
   * is answered 429 (`Retry-After`, `Connection: close`) and counted in `trickle_http_rate_limited_total`. WebSocket
   * upgrades are not charged (the connection limits bound them, the message rate their frames). The defaults are far
   * above anything honest: Prometheus scrapes every 15 s (1 s at the most eager), a load balancer or Kubernetes probe
   * every few seconds, and an open dashboard tab makes seven requests as it loads (page, assets, API, event stream) and
   * then one a second (the channel page at each live tick) and one per search keystroke, so many scrapers, probes and
   * tabs behind one address stay far below the rate; the burst covers a dashboard opened in many tabs at once. The hub has no notion of a trusted proxy (it reads no `X-Forwarded-For`): the
   * budget is per connecting address, so behind a reverse proxy or TLS terminator every request shares the proxy's
   * budget — raise both there (and limit per client at the proxy).
   */
  readonly httpRequestsPerSecond: number;
  readonly httpRequestBurst: number;
}

export const DEFAULT_HUB_LIMITS: HubLimits = {
  maxFrameBytes: 64 * 1024,
  maxInFlightPerConnection: 4096,
  messagesPerSecond: 10_000,
  messageBurst: 1_000,
  refusedFrameCost: 10,
  floodCloseMs: 10_000,
  handshakeTimeoutMs: 10_000,
  idleTimeoutMs: 60_000,
  maxConnections: 20_000,
  maxHandshakesPerAddress: 256,
  closeGraceMs: 1000,
  maxBufferedBytes: 4 * 1024 * 1024,
  maxMalformedFrames: 10,
  maxRoutedInFlight: 1_000_000_000n,
  maxCreditRetries: 20,
  lockMarginSeconds: 60,
  maxLocks: 32,
  minChallengeSeconds: 600,
  chainStaleMs: 30_000,
  chainReadsPerSecond: 5,
  chainReadBurst: 30,
  totalChainReadsPerSecond: 10,
  totalChainReadBurst: 60,
  metricsCacheMs: 1000,
  httpRequestsPerSecond: 50,
  httpRequestBurst: 200,
};

/**
 * The longest delay a Node timer takes, in ms (2^31 − 1, about 24.8 days). A longer one is not refused by Node: it
 * warns and fires after 1 ms, so a "very long" timeout or poll interval became a loop run as fast as it could go.
 */
export const MAX_TIMER_MS = 2_147_483_647;

/**
 * Merge user limits over the defaults and validate them.
 * @throws TrickleError('INVALID_ARGUMENT') naming the bad option: one not positive, a time in ms (a name ending in
 *   `Ms`) above {@link MAX_TIMER_MS}, or an `httpRequestBurst` below 1
 */
export function resolveHubLimits(partial: Partial<HubLimits> = {}): HubLimits {
  const limits = { ...DEFAULT_HUB_LIMITS, ...partial };
  for (const [k, v] of Object.entries(limits)) {
    const ok = typeof v === 'bigint' ? v >= 0n : Number.isFinite(v) && (v as number) > 0;
    if (!ok) throw new TrickleError('INVALID_ARGUMENT', `limit ${k} must be positive`, { details: { [k]: String(v) } });
    if (k.endsWith('Ms') && (v as number) > MAX_TIMER_MS)
      throw new TrickleError('INVALID_ARGUMENT', `limit ${k} must be at most ${MAX_TIMER_MS} ms`, {
        details: { [k]: String(v) },
      });
  }
  // A bucket that never holds a whole token refuses every request: the hub's HTTP surface, /health included, gone.
  if (limits.httpRequestBurst < 1)
    throw new TrickleError('INVALID_ARGUMENT', 'limit httpRequestBurst must be at least 1', {
      details: { httpRequestBurst: String(limits.httpRequestBurst) },
    });
  return limits;
}

/**
 * A time in ms a timer waits (a poll interval, a round): a whole number from 1 to {@link MAX_TIMER_MS}.
 * @throws TrickleError('INVALID_ARGUMENT') naming `name`
 */
export function timerMs(name: string, v: number): number {
  if (!(Number.isSafeInteger(v) && v >= 1 && v <= MAX_TIMER_MS))
    throw new TrickleError('INVALID_ARGUMENT', `${name} must be a whole number of ms from 1 to ${MAX_TIMER_MS}`, {
      details: { [name]: String(v) },
    });
  return v;
}
