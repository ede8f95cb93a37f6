import { decodeFrame, encodeFrame, WIRE_PROTOCOLS, wireVersion, type Message } from '@trickle/protocol/codec';
import { authDigest, domainSeparator, trickleDomain } from '@trickle/protocol/eip712';
import { notRunMs } from '@trickle/protocol/clock';
import { TrickleError, isTrickleError, peerError } from '@trickle/protocol/errors';
import type { Signer } from '@trickle/protocol/signer';
import type { Address } from '@trickle/protocol/types';
import { openNodeSocket } from './socket-node.js';
import { deadline } from './timers.js';

/** What the hub announced in its challenge. */
export interface HubIdentity {
  readonly hub: Address;
  readonly chainId: bigint;
  readonly adjudicator: Address;
  /** The shortest challenge period (seconds) of a channel the hub takes on, when it says (older hubs do not). */
  readonly minChallengeSeconds?: bigint | undefined;
}

/** Reconnect policy: exponential backoff with jitter between `initialDelayMs` and `maxDelayMs`. */
export interface ReconnectOptions {
  readonly initialDelayMs: number;
  readonly maxDelayMs: number;
  /** Give up after this many failed attempts in a row (Infinity: never). */
  readonly maxAttempts: number;
}

export interface ConnectionOptions {
  readonly url: string;
  readonly signer: Signer;
  readonly reconnect: ReconnectOptions;
  readonly requestTimeoutMs: number;
  readonly maxFrameBytes: number;
  /** Refuse hubs other than this one (recommended in production). */
  readonly expectHub?: Address | undefined;
  /** Give up the first connection after this long (Infinity: never); later drops follow {@link ReconnectOptions}. */
  readonly connectTimeoutMs: number;
  /** Abort the first connection. */
  readonly signal?: AbortSignal | undefined;
  /** `wss://` only, in Node: trust these CA certificates (PEM) instead of the system roots. */
  readonly ca?: TrustedCa | undefined;
  /** Told of every failed dial before the next attempt (the client logs nothing itself). */
  readonly onRetry?: ((info: RetryInfo) => void) | undefined;
  /**
   * A socket that hears nothing from the hub for this long (no frame, ping or pong; while dialling, no challenge) is
   * dropped and dialled again (Infinity: never). Half of it into a silence the client asks the hub for a sign of life:
   * a WebSocket ping (Node), or a `ping` frame where the socket cannot send pings (a browser) and the hub speaks
   * `trickle.v2`; a browser at a `trickle.v1` hub has no way to ask, and only its dials and handshakes are timed.
   */
  readonly livenessTimeoutMs: number;
}

/** A failed attempt to reach the hub, and when the next one starts. */
export interface RetryInfo {
  readonly url: string;
  /** Failed attempts in a row so far. */
  readonly attempt: number;
  /** The socket's failure: ECONNREFUSED, ENOTFOUND, a TLS code, or a message. */
  readonly reason: string;
  /** Delay before the next attempt. */
  readonly delayMs: number;
}

/** CA certificates (PEM) a `wss://` connection trusts instead of the system roots. */
export type TrustedCa = string | readonly string[];

/** The socket the connection drives: `ws` in Node, the platform's WebSocket in a browser. */
export interface Socket {
  readonly readyState: number;
  send(bytes: Uint8Array): void;
  close(code?: number, reason?: string): void;
  /** Drop without a closing handshake (a browser socket can only close). */
  terminate(): void;
  /** Ask the peer for a pong (Node); a browser socket cannot. */
  ping?(): void;
  /** The wire version the hub answered the upgrade with (`''` for none: version 1). */
  readonly protocol?: string;
}

/** The part of the WHATWG WebSocket a browser socket is driven through. */
interface PlatformSocket {
  readonly readyState: number;
  readonly protocol: string;
  binaryType: string;
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
  onmessage: ((e: { readonly data: unknown }) => void) | null;
  onclose: (() => void) | null;
  onerror: (() => void) | null;
}

/** WebSocket readyState OPEN, the same in `ws` and the WHATWG API. */
const OPEN = 1;

/** What a socket tells the connection. */
export interface SocketEvents {
  message(bytes: Uint8Array): void;
  down(error?: unknown): void;
  /** The peer was heard from without a message: the upgrade's answer, a ping or a pong. */
  alive?(): void;
}

/**
 * Open a WebSocket. Node: the `ws` package (`socket-node.ts`). A browser bundle resolves `socket-node.js` to
 * `socket-browser.js` (package.json `browser` map), which opens nothing, so the platform's `WebSocket` is used, with
 * ArrayBuffers.
 */
function openSocket(url: string, maxFrameBytes: number, on: SocketEvents, ca?: TrustedCa): Socket {
  const node = openNodeSocket(url, maxFrameBytes, on, ca);
  if (node) return node;
  const Platform = (globalThis as { WebSocket?: new (url: string, protocols: string[]) => PlatformSocket }).WebSocket;
  if (!Platform) throw new TrickleError('INVALID_ARGUMENT', 'no WebSocket on this platform');
  const ws = new Platform(url, [...WIRE_PROTOCOLS]);
  ws.binaryType = 'arraybuffer';
  let gone = false;
  const down = (): void => {
    if (gone) return;
    gone = true;
    on.down();
  };
  ws.onmessage = (e) => {
    if (!gone && e.data instanceof ArrayBuffer && e.data.byteLength <= maxFrameBytes)
      on.message(new Uint8Array(e.data));
  };
  ws.onclose = down;
  ws.onerror = down;
  return {
    get readyState() {
      return ws.readyState;
    },
    get protocol() {
      return ws.protocol;
    },
    send: (b) => ws.send(b),
    close: (code, reason) => ws.close(code, reason),
    // A platform socket only closes with a closing handshake, which a dead link never finishes (its close event comes
    // when the browser gives up: Chromium waits a minute): it is reported down at once (after this call, as `ws`'s
    // terminate is) and heard no more, so the connection dials again now.
    terminate: () => {
      ws.close();
      queueMicrotask(down);
    },
  };
}

type Pending = {
  resolve: (m: Message) => void;
  reject: (e: TrickleError) => void;
  timer: NodeJS.Timeout;
  answers: ReadonlySet<Message['t']>;
};

/** Reply types that answer a request by default; `ack`/`reject` are channel traffic unless a request claims them. */
const DEFAULT_ANSWERS: ReadonlySet<Message['t']> = new Set(['ok', 'sync', 'accepted', 'receipt', 'error']);

/**
 * A device's authenticated WebSocket to its hub: answers the hub's challenge, reconnects with backoff, matches
 * replies to requests by id. Channel frames go to `onMessage`.
 */
export class Connection {
  identity: HubIdentity | undefined;
  readonly #opts: ConnectionOptions;
  #ws: Socket | undefined;
  #ready = false;
  #closed = false;
  #attempts = 0;
  #nextId = 1;
  readonly #pending = new Map<number, Pending>();
  #onReady: () => void = () => {};
  #onMessage: (m: Message) => void = () => {};
  #onDown: () => void = () => {};
  #onClosed: () => void = () => {};
  #firstReady: { resolve: () => void; reject: (e: unknown) => void } | undefined;
  /** The latest reason a socket failed (for the error when the first connection gives up). */
  #lastError: unknown;
  #retryTimer: ReturnType<typeof setTimeout> | undefined;
  #startedAt = 0;
  /** Liveness: something was heard on the current socket since the last check, and when (monotonic ms) it last was. */
  #heard = false;
  #heardAt = 0;
  #lastCheck = 0;
  #liveness: ReturnType<typeof setInterval> | undefined;
  /** The socket dropped for its silence (its close reports this, not the socket's own wording). */
  #silenced: { ws: Socket; error: TrickleError } | undefined;

  constructor(opts: ConnectionOptions) {
    this.#opts = opts;
  }

  /**
   * Connect and authenticate once; later drops reconnect by themselves.
   * @throws TrickleError `DISCONNECTED` when the first connection gives up (timeout, attempts, abort), with the URL,
   *   the attempts and the socket's last failure (`details.reason`: ECONNREFUSED, ENOTFOUND, a TLS code…; `cause`);
   *   `UNSUPPORTED_PROTOCOL` at once when the hub speaks none of this client's wire versions (HTTP 426)
   */
  start(handlers: {
    onReady: () => void;
    onMessage: (m: Message) => void;
    onDown: () => void;
    /** The connection gave up reconnecting (`reconnect.maxAttempts`) and is closed for good. */
    onClosed?: () => void;
  }): Promise<void> {
    this.#onReady = handlers.onReady;
    this.#onClosed = handlers.onClosed ?? (() => {});
    this.#onMessage = handlers.onMessage;
    this.#onDown = handlers.onDown;
    const started = (this.#startedAt = Date.now());
    const { signal, connectTimeoutMs } = this.#opts;
    return new Promise<void>((resolve, reject) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const onAbort = (): void => giveUp('aborted', signal?.reason);
      const settle = (): void => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        this.#firstReady = undefined;
      };
      const giveUp = (why: 'timeout' | 'aborted', abortReason?: unknown): void => {
        if (!this.#firstReady) return;
        const first = this.#firstReady;
        settle();
        this.close();
        first.reject(
          this.#unreachable(
            why === 'timeout' ? `within ${connectTimeoutMs} ms` : 'before the connection was aborted',
            started,
            abortReason,
            why,
          ),
        );
      };
      this.#firstReady = {
        resolve: () => {
          settle();
          resolve();
        },
        reject: (e) => {
          settle();
          reject(e);
        },
      };
      if (signal?.aborted) {
        giveUp('aborted', signal.reason);
        return;
      }
      signal?.addEventListener('abort', onAbort, { once: true });
      if (Number.isFinite(connectTimeoutMs)) timer = setTimeout(() => giveUp('timeout'), connectTimeoutMs);
      this.#watchLiveness();
      this.#dial();
    });
  }

  /** The error of a first connection that gave up: the URL, attempts, time and the socket's last failure. */
  #unreachable(
    when: string,
    started: number,
    abortReason?: unknown,
    why?: 'timeout' | 'aborted' | 'attempts',
  ): TrickleError {
    const reason = failureReason(this.#lastError);
    const url = this.#opts.url;
    return new TrickleError('DISCONNECTED', `cannot reach the hub at ${url} ${when}${reason ? ` (${reason})` : ''}`, {
      details: {
        url,
        reason: reason ?? 'no answer',
        attempts: this.#attempts,
        elapsedMs: Date.now() - started,
        gaveUp: why ?? 'attempts',
      },
      cause: why === 'aborted' ? abortReason : this.#lastError,
    });
  }

  get ready(): boolean {
    return this.#ready;
  }

  /**
   * The wire version the hub answered the current socket with (`trickle.vN`; 1 for none); undefined while no socket
   * is up. What the device may send on it and how the hub signs for it (a clearing below version 3: the record only).
   */
  get wireVersion(): number | undefined {
    return this.#ws === undefined ? undefined : wireVersion(this.#ws.protocol);
  }

  /** A fresh request id. */
  id(): number {
    const id = this.#nextId;
    this.#nextId = (this.#nextId % 0x7fffffff) + 1;
    return id;
  }

  /** Send if connected and authenticated. @returns false when not (the caller resends after reconnect). */
  send(msg: Message): boolean {
    if (!this.#ready || !this.#ws || this.#ws.readyState !== OPEN) return false;
    this.#ws.send(encodeFrame(msg));
    return true;
  }

  /**
   * Send a request and wait for the reply with the same id.
   * @throws TrickleError DISCONNECTED / TIMEOUT, or the code of an `error` reply
   */
  request(
    msg: Message,
    timeoutMs = this.#opts.requestTimeoutMs,
    answers: ReadonlySet<Message['t']> = DEFAULT_ANSWERS,
  ): Promise<Message> {
    return new Promise((resolve, reject) => {
      if (!this.send(msg)) {
        reject(new TrickleError('DISCONNECTED', 'not connected to the hub'));
        return;
      }
      const timer = deadline(() => {
        if (this.#pending.get(msg.id) !== pending) return; // answered, or failed on a disconnect, meanwhile
        this.#pending.delete(msg.id);
        reject(new TrickleError('TIMEOUT', `no reply to ${msg.t} within ${timeoutMs} ms`));
      }, timeoutMs);
      const pending: Pending = { resolve, reject, timer, answers };
      this.#pending.set(msg.id, pending);
    });
  }

  /** Whether {@link close} was called: closed for good, it never reconnects. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Close for good. */
  close(): void {
    this.#closed = true;
    clearTimeout(this.#retryTimer);
    this.#retryTimer = undefined;
    clearInterval(this.#liveness);
    this.#liveness = undefined;
    const ws = this.#ws;
    if (ws !== undefined && ws.readyState !== OPEN)
      ws.terminate(); // still dialing: nothing to close politely
    else ws?.close(1000, 'client closing');
    this.#failPending(new TrickleError('DISCONNECTED', 'client closed'));
  }

  /** Drop the socket without closing the client (tests use it to simulate a network cut). */
  dropForTest(): void {
    this.#ws?.terminate();
  }

  /**
   * Drop a socket the hub went silent on (a half-open TCP connection: a NAT or proxy that black-holes packets, a hub
   * stuck mid-handshake), so the device reconnects in bounded time instead of waiting for TCP to give up (minutes, or
   * never on an idle link) with its payments held. Silence is measured on a monotonic clock, and time the process
   * itself did not run (a late check: the event loop was blocked, the device slept) is not counted against the hub.
   */
  #watchLiveness(): void {
    const limit = this.#opts.livenessTimeoutMs;
    if (!Number.isFinite(limit) || this.#liveness !== undefined) return;
    const every = Math.max(10, Math.floor(limit / 4));
    this.#lastCheck = performance.now();
    this.#liveness = setInterval(() => {
      const now = performance.now();
      const late = notRunMs(now, this.#lastCheck, every) > 0;
      this.#lastCheck = now;
      const ws = this.#ws;
      if (ws === undefined) return;
      // Until it has authenticated, a socket is not alive whatever it hears (a server that is not a Trickle hub may
      // answer the upgrade, ping and send frames): dial, upgrade, challenge and auth share one livenessTimeoutMs.
      if ((this.#heard && this.#ready) || late) {
        this.#heard = false;
        this.#heardAt = now;
        return;
      }
      const silent = now - this.#heardAt;
      if (silent >= limit) {
        const error = new TrickleError('TIMEOUT', `nothing heard from the hub within ${limit} ms`);
        this.#silenced = { ws, error };
        ws.terminate(); // its close event reconnects
      } else if (this.#ready && silent >= limit / 2 && ws.readyState === OPEN) {
        if (ws.ping) ws.ping();
        // A browser socket can neither send nor show pings: ask with a frame; any frame back counts as heard.
        else if (wireVersion(ws.protocol) >= 2) ws.send(encodeFrame({ t: 'ping', id: this.id() }));
        else this.#heardAt = now; // a version 1 hub has no `ping` frame: only dials and handshakes are timed
      }
    }, every);
    this.#liveness.unref?.();
  }

  #dial(): void {
    if (this.#closed) return;
    this.#heard = false;
    this.#heardAt = performance.now();
    const ws: Socket = openSocket(
      this.#opts.url,
      this.#opts.maxFrameBytes,
      {
        alive: () => {
          if (this.#ws === ws) this.#heard = true;
        },
        message: (data) => {
          this.#heard = true;
          let msg: Message;
          try {
            msg = decodeFrame(data, { maxFrameBytes: this.#opts.maxFrameBytes });
          } catch {
            return; // a hub that sends garbage gets no answer; the channel state is untouched
          }
          this.#handle(ws, msg);
        },
        down: (error) => {
          if (error !== undefined) this.#lastError = error;
          this.#down(ws);
        },
      },
      this.#opts.ca,
    );
    this.#ws = ws;
  }

  #handle(ws: Socket, msg: Message): void {
    if (msg.t === 'challenge') {
      if (this.#opts.expectHub && msg.hub !== this.#opts.expectHub) {
        this.#firstReady?.reject(
          new TrickleError('UNAUTHORIZED', 'connected to an unexpected hub', { details: { hub: msg.hub } }),
        );
        this.close();
        return;
      }
      this.identity = {
        hub: msg.hub,
        chainId: msg.chainId,
        adjudicator: msg.adjudicator,
        minChallengeSeconds: msg.minChallengeSeconds,
      };
      const sep = domainSeparator(trickleDomain(msg.chainId, msg.adjudicator));
      const me = this.#opts.signer.address;
      const id = this.id();
      ws.send(
        encodeFrame({
          t: 'auth',
          id,
          device: me,
          nonce: msg.nonce,
          sig: this.#opts.signer.signDigest(authDigest(sep, me, msg.hub, msg.nonce)),
        }),
      );
      this.#pending.set(id, {
        resolve: () => {
          this.#ready = true;
          this.#attempts = 0;
          this.#firstReady?.resolve();
          this.#firstReady = undefined;
          this.#onReady();
        },
        reject: (e) => this.#firstReady?.reject(e),
        timer: deadline(() => {
          if (this.#pending.has(id) && this.#ws === ws) ws.terminate(); // still unanswered on this socket
        }, this.#opts.requestTimeoutMs),
        answers: DEFAULT_ANSWERS,
      });
      return;
    }
    if (msg.t === 'pong') return; // the answer to a liveness probe: hearing it was the point
    const p = msg.id !== 0 ? this.#pending.get(msg.id) : undefined;
    if (p && (p.answers.has(msg.t) || msg.t === 'error')) {
      clearTimeout(p.timer);
      this.#pending.delete(msg.id);
      if (msg.t === 'error') p.reject(peerError(msg, 'refused by the hub'));
      else p.resolve(msg);
      return;
    }
    this.#onMessage(msg);
  }

  #failPending(e: TrickleError): void {
    for (const [id, p] of this.#pending) {
      clearTimeout(p.timer);
      p.reject(e);
      this.#pending.delete(id);
    }
  }

  #down(ws: Socket): void {
    if (this.#ws !== ws) return;
    this.#ws = undefined;
    if (this.#silenced?.ws === ws) this.#lastError = this.#silenced.error;
    this.#silenced = undefined;
    const wasReady = this.#ready;
    this.#ready = false;
    this.#failPending(new TrickleError('DISCONNECTED', 'connection to the hub dropped'));
    if (wasReady) this.#onDown();
    if (this.#closed) return;
    const { initialDelayMs, maxDelayMs, maxAttempts } = this.#opts.reconnect;
    if (this.#firstReady && isTrickleError(this.#lastError, 'UNSUPPORTED_PROTOCOL')) {
      // The hub speaks none of this client's wire versions: trying again would not change that.
      const first = this.#firstReady;
      this.close();
      first.reject(this.#lastError);
      return;
    }
    if (++this.#attempts > maxAttempts) {
      const first = this.#firstReady;
      if (first) {
        this.close();
        first.reject(this.#unreachable(`after ${maxAttempts} attempts`, this.#startedAt, undefined, 'attempts'));
      } else {
        // Closed for good, as after disconnect(): what waits for a reconnect is answered, new calls are refused.
        this.close();
        this.#onClosed();
      }
      return;
    }
    const delay =
      Math.min(maxDelayMs, initialDelayMs * 2 ** Math.min(this.#attempts - 1, 16)) * (0.5 + Math.random() / 2);
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined;
      this.#dial();
    }, delay);
    this.#opts.onRetry?.({
      url: this.#opts.url,
      attempt: this.#attempts,
      reason: failureReason(this.#lastError) ?? 'connection closed',
      delayMs: Math.round(delay),
    });
  }
}

/** The most telling code of a socket failure (ECONNREFUSED, ENOTFOUND, a TLS code), else its message. */
function failureReason(e: unknown): string | undefined {
  let cur: unknown = e;
  for (let i = 0; i < 6 && cur !== null && typeof cur === 'object'; i++) {
    const c = cur as { code?: unknown; cause?: unknown; message?: unknown };
    if (typeof c.code === 'string') return c.code;
    if (c.cause === undefined && typeof c.message === 'string') return c.message;
    cur = c.cause;
  }
  return e === undefined ? undefined : String(e);
}

export { isTrickleError };
