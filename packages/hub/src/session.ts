import { randomBytes } from 'node:crypto';
import type { Socket } from 'node:net';
import type { WebSocket } from 'ws';
import { decodeFrame, encodeFrame, peekRequestId, wireVersion, type Message } from '@trickle/protocol/codec';
import { authDigest } from '@trickle/protocol/eip712';
import { TrickleError, isTrickleError, type ErrorCode } from '@trickle/protocol/errors';
import type { Verifier } from '@trickle/protocol/signer';
import type { Address, Bytes32, ChannelId } from '@trickle/protocol/types';
import type { HubLimits } from './options.js';

/**
 * Frames one connection may have processed in one event-loop turn; the rest of what a socket read brought waits for
 * the next turn, after other connections' (a 64 KiB read can hold hundreds of frames).
 */
const FRAMES_PER_TURN = 64;

/**
 * Device frames newer than wire version 1, by the version that added them: refused `MALFORMED` on a connection of an
 * older version, as a hub of that version does (a device written for it never sends one; a device that does is
 * counted toward `maxMalformedFrames` as there). `ping` is answered on any connection (spec §3, Liveness).
 */
const FRAME_SINCE: Partial<Record<Message['t'], number>> = { outcome: 3 };

/**
 * Event-loop turns, counted for every session at once: one `setImmediate` per turn in which frames arrived, not one
 * per connection (with a thousand devices that was a timer and a closure per frame).
 */
let turn = 0;
let turnScheduled = false;
const nextTurn = () => {
  turn++;
  turnScheduled = false;
};
function currentTurn(): number {
  if (!turnScheduled) {
    turnScheduled = true;
    setImmediate(nextTurn);
  }
  return turn;
}

/** What a session hands authenticated messages to. */
export interface SessionHandler {
  /** The device authenticated on this session (replacing any older session of it). */
  onAuthenticated(session: Session): void;
  /** A frame from an authenticated device. Throw a TrickleError to answer it with an `error`/`reject`. */
  onMessage(session: Session, msg: Message): void | Promise<void>;
  onClosed(session: Session): void;
  onFrame(direction: 'in' | 'out'): void;
  onDisconnect(reason: string): void;
}

/** Identity and limits of the hub a session belongs to. */
export interface SessionContext {
  readonly hub: Address;
  readonly chainId: bigint;
  readonly adjudicator: Address;
  readonly separator: Uint8Array;
  readonly verifier: Verifier;
  readonly limits: HubLimits;
}

/**
 * One WebSocket connection: handshake (the device signs a fresh challenge), frame decoding, rate and in-flight
 * limits, backpressure toward slow readers, and closing peers that keep sending garbage.
 *
 * Fairness under a flood: each connection has a token bucket (`messagesPerSecond`, `messageBurst`). A frame takes
 * a token, a refused one `refusedFrameCost` in all, and so does a `ping` (it asks for a reply and does nothing else)
 * and an `ack` that answers no proposal sent on this connection (`#chargeAck`), a `close` and a `reject` — once per
 * frame: one of these the hub then refuses (a refused `close`) costs no more.
 * When the bucket is empty the hub stops reading that socket (frames already read wait in a backlog bounded by one
 * socket read) until tokens are back, so a flooder costs the hub at most its rate and its own replies; and a
 * connection has at most 64 frames processed per event-loop turn, so one socket read full of frames does not hold
 * the others up. A connection held back for `floodCloseMs` without its bucket refilling once is closed: `error`
 * RATE_LIMITED, WebSocket 1008. A peer that does not read is paused past `maxBufferedBytes` queued and closed past 4×
 * that.
 */
export class Session {
  device: Address | undefined;
  /**
   * The wire version negotiated at the upgrade (`trickle.vN`; 1 when the device offered none): what this device
   * understands, and which frames it may send (see {@link FRAME_SINCE}).
   */
  readonly wireVersion: number;
  readonly #ws: WebSocket;
  readonly #ctx: SessionContext;
  readonly #handler: SessionHandler;
  readonly #nonce: Bytes32;
  #tokens: number;
  #lastRefill = performance.now();
  #malformed = 0;
  /** Reading stopped because the peer does not read what it is sent. */
  #paused = false;
  /**
   * Reading stopped because the peer used up its share of this event-loop turn or its message rate; frames already
   * read wait in #backlog and are processed from a scheduled drain.
   */
  #held = false;
  /** Frames read while held (at most what one socket read held: reading stops at the first). */
  readonly #backlog: { data: Buffer; isBinary: boolean }[] = [];
  #drainTimer: NodeJS.Timeout | undefined;
  /** Frames processed in event-loop turn {@link #turn}. */
  #turnFrames = 0;
  #turn = -1;
  /** Whether the hold is for the rate; when that stretch began and when it last let go ({@link HubLimits.floodCloseMs}). */
  #rateLimited = false;
  #rateLimitedSince = 0;
  #releasedAt = Number.NEGATIVE_INFINITY;
  #closed = false;
  /** Whether this turn's frames are being held in the socket (see {@link #cork}). */
  #corked = false;
  #handshakeTimer: NodeJS.Timeout | undefined;
  #idleTimer: NodeJS.Timeout | undefined;
  /**
   * Per channel, the versions of the hub's proposals (`update` frames) sent on this connection that no `ack` has
   * answered yet, ascending (a few at most; see {@link #chargeAck}).
   */
  readonly #proposed = new Map<ChannelId, bigint[]>();
  /**
   * Updates and closes received and not yet answered, per channel, in arrival order: their request id, version, and
   * whether the frame already paid what a refused frame costs (a `close` does on arrival; its refusal costs no more).
   */
  readonly #pending = new Map<ChannelId, { id: number; version: bigint; paid: boolean }[]>();
  /**
   * Device frames that paid what a refused frame costs on arrival (an `ack` answering no proposal, a `reject`): an
   * `error` refusing one costs no more (spec §3: such a frame costs `refusedFrameCost` in all).
   */
  readonly #paid = new WeakSet<Message>();
  #pendingCount = 0;

  readonly #known: () => void;

  /**
   * @param known - the transport's: this connection stops counting toward its address's handshake limit (see
   *   {@link Session.known})
   */
  constructor(ws: WebSocket, ctx: SessionContext, handler: SessionHandler, known: () => void = () => {}) {
    this.#known = known;
    this.#ws = ws;
    this.wireVersion = wireVersion(ws.protocol);
    this.#ctx = ctx;
    this.#handler = handler;
    this.#tokens = ctx.limits.messageBurst;
    this.#nonce = `0x${randomBytes(32).toString('hex')}` as Bytes32;
    ws.binaryType = 'nodebuffer';
    ws.on('message', (data, isBinary) => this.#onData(data as Buffer, isBinary));
    ws.on('close', () => this.#onClose());
    ws.on('error', () => this.#onClose());
    ws.on('pong', () => this.#touch());
    // Judged after the I/O already waiting: timers run before I/O in a turn of the event loop, so after time this
    // process did not run (a blocked loop, a paused container) an `auth` that came in time is still unread here.
    this.#handshakeTimer = setTimeout(
      () =>
        setImmediate(() => {
          if (this.device === undefined) this.close(1008, 'handshake timeout', 'handshake-timeout');
        }),
      ctx.limits.handshakeTimeoutMs,
    );
    this.#touch();
    this.send({
      t: 'challenge',
      id: 0,
      nonce: this.#nonce,
      hub: ctx.hub,
      chainId: ctx.chainId,
      adjudicator: ctx.adjudicator,
      minChallengeSeconds: BigInt(ctx.limits.minChallengeSeconds),
    });
  }

  /**
   * The authenticated device holds a channel at this hub: the connection no longer counts toward its address's
   * `maxHandshakesPerAddress`. Until then it does, authenticated or not — any fresh key authenticates, so counting only
   * unauthenticated connections would let one address hold every connection slot with throwaway keys. Idempotent.
   */
  known(): void {
    this.#known();
  }

  /**
   * Charge the peer what a refused frame costs for a frame the hub takes but that costs it signature checks and
   * changes nothing (a `sync` offering a state the hub does not hold).
   */
  chargeRefused(): void {
    this.#tokens -= this.#ctx.limits.refusedFrameCost - 1;
  }

  /** Updates this connection has waiting at the hub. */
  get inFlight(): number {
    return this.#pendingCount;
  }

  /** Send a frame, applying backpressure: stop reading from a peer that does not read what it is sent. */
  send(msg: Message): boolean {
    return this.#deliver(msg, false);
  }

  /** {@link send}; `paid`: the frame this one refuses already paid what a refused frame costs. */
  #deliver(msg: Message, paid: boolean): boolean {
    if (this.#closed) return false;
    if (msg.t === 'ack' || msg.t === 'reject') paid = this.#answered(msg) || paid;
    else if (msg.t === 'update') this.#propose(msg.state.channelId, msg.state.version);
    // A refusal costs the peer more of its budget than the frame did (refusedFrameCost in all, once per frame), so
    // refused floods get few replies.
    if ((msg.t === 'error' || msg.t === 'reject') && !paid) this.#tokens -= this.#ctx.limits.refusedFrameCost - 1;
    const limit = this.#ctx.limits.maxBufferedBytes;
    if (this.#ws.bufferedAmount > limit * 4) {
      this.close(1008, 'peer does not read', 'slow-reader');
      return false;
    }
    this.#cork();
    this.#ws.send(encodeFrame(msg), { binary: true }, () => {
      if (this.#paused && this.#ws.bufferedAmount < limit / 2) {
        this.#paused = false;
        this.#syncReading();
      }
    });
    this.#handler.onFrame('out');
    if (!this.#paused && this.#ws.bufferedAmount > limit) {
      this.#paused = true;
      this.#syncReading();
    }
    return true;
  }

  /**
   * Hold this turn's frames to the peer in the socket and let them go together once the turn's synchronous work and
   * promise reactions are done (`process.nextTick` runs after both): the acks of one commit that answer one device
   * leave in one `writev` instead of one system call each, and reach the device in one read. Nothing waits for a
   * timer; a frame leaves in the same event-loop turn it was sent in.
   */
  #cork(): void {
    if (this.#corked) return;
    // ws has no public cork; its socket is `_socket` (a net.Socket, or a tls.TLSSocket under wss://).
    const socket = (this.#ws as unknown as { _socket?: Socket })._socket;
    if (!socket || socket.destroyed) return;
    this.#corked = true;
    socket.cork();
    process.nextTick(() => {
      this.#corked = false;
      socket.uncork();
    });
  }

  /** Read from the socket only while the peer reads what it is sent and stays within its message rate. */
  #syncReading(): void {
    if (this.#closed) return;
    const stop = this.#paused || this.#held;
    if (stop && !this.#ws.isPaused) this.#ws.pause();
    else if (!stop && this.#ws.isPaused) this.#ws.resume();
  }

  /** Close with a WebSocket status code. */
  close(code: number, reason: string, metricReason = reason): void {
    if (this.#closed) return;
    this.#handler.onDisconnect(metricReason);
    try {
      this.#ws.close(code, reason.slice(0, 120));
      // Closed for what the peer did: nothing it sends is read any more, its closing frame included (the socket is
      // dropped closeGraceMs after ours). Reading it on, as a peer that never answers keeps sending, cost the hub every
      // frame's parsing for that long; a peer closed for flooding was even read again.
      if (code === 1007 || code === 1008) this.#ws.pause();
      // Otherwise read again so the peer's closing frame arrives (anything before it is ignored: the session is closed).
      else if (this.#held && !this.#paused) this.#ws.resume();
    } catch {
      this.#ws.terminate();
    }
    this.#onClose();
  }

  /**
   * Ping the peer; close it if it stayed silent past the idle timeout.
   * @param now - `performance.now()`
   * @param judge - false: only ping (the beat came late, and what the peer sent meanwhile may be unread)
   */
  heartbeat(now: number, judge = true): void {
    if (this.#closed) return;
    if (judge && now - this.#lastSeen > this.#ctx.limits.idleTimeoutMs) {
      this.close(1001, 'idle timeout', 'idle');
      return;
    }
    try {
      this.#ws.ping();
    } catch {
      /* closing */
    }
  }

  /** When the peer was last heard from, on the monotonic clock `heartbeat` is given (`performance.now()`). */
  #lastSeen = performance.now();
  #touch(): void {
    this.#lastSeen = performance.now();
  }

  #onClose(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#handshakeTimer);
    clearTimeout(this.#idleTimer);
    clearTimeout(this.#drainTimer);
    this.#backlog.length = 0;
    this.#handler.onClosed(this);
  }

  #error(id: number, e: unknown, paid = false): void {
    const err = isTrickleError(e) ? e : new TrickleError('INTERNAL', 'internal error');
    this.#deliver({ t: 'error', id, code: err.code, message: err.shortMessage }, paid);
  }

  #refill(): void {
    const now = performance.now();
    const { messagesPerSecond, messageBurst } = this.#ctx.limits;
    this.#tokens = Math.min(messageBurst, this.#tokens + ((now - this.#lastRefill) / 1000) * messagesPerSecond);
    this.#lastRefill = now;
  }

  #onData(data: Buffer, isBinary: boolean): void {
    if (this.#closed) return;
    this.#touch();
    this.#handler.onFrame('in');
    if (this.#held) {
      // Read in the same socket chunk as the frame that started the hold: it waits its turn.
      this.#backlog.push({ data, isBinary });
      return;
    }
    this.#refill();
    if (this.#tokens < 1 || this.#framesThisTurn() >= FRAMES_PER_TURN) {
      this.#backlog.push({ data, isBinary });
      this.#held = true;
      this.#syncReading();
      this.#schedule();
      return;
    }
    this.#tokens -= 1;
    this.#countTurn();
    this.#process(data, isBinary);
  }

  /** Frames processed so far in this event-loop turn. */
  #framesThisTurn(): number {
    const now = currentTurn();
    if (this.#turn !== now) {
      this.#turn = now;
      this.#turnFrames = 0;
    }
    return this.#turnFrames;
  }

  /** One more frame processed in this event-loop turn. */
  #countTurn(): void {
    this.#framesThisTurn();
    this.#turnFrames++;
  }

  /**
   * Schedule the backlog: at the next turn when only this turn's share is used up (other connections go first), or
   * when the bucket holds enough for it when the rate is. Nothing is refused for the rate alone; a peer held back
   * by its rate for `floodCloseMs` without once letting its bucket refill is closed.
   */
  #schedule(): void {
    if (this.#tokens >= 1) {
      setImmediate(() => this.#drain());
      return;
    }
    const now = performance.now();
    const { messagesPerSecond, messageBurst, floodCloseMs } = this.#ctx.limits;
    if (!this.#rateLimited) {
      this.#rateLimited = true;
      // A new stretch only if the last one ended long enough ago for the bucket to have refilled.
      if (now - this.#releasedAt > (messageBurst / messagesPerSecond) * 1000) this.#rateLimitedSince = now;
    }
    if (now - this.#rateLimitedSince >= floodCloseMs) {
      this.#error(0, new TrickleError('RATE_LIMITED', 'sustained message rate above the limit'));
      this.close(1008, 'message rate limit exceeded', 'flood');
      return;
    }
    const want = Math.min(this.#backlog.length, FRAMES_PER_TURN);
    const waitMs = Math.max(1, Math.ceil(((want - this.#tokens) / messagesPerSecond) * 1000));
    this.#drainTimer = setTimeout(() => this.#drain(), Math.min(waitMs, floodCloseMs));
  }

  /** Process held frames, at most one turn's share and as tokens allow; read again once none is left. */
  #drain(): void {
    this.#drainTimer = undefined;
    if (this.#closed) return;
    this.#refill();
    this.#turn = currentTurn();
    this.#turnFrames = 0;
    while (!this.#closed && this.#backlog.length > 0 && this.#tokens >= 1 && this.#turnFrames < FRAMES_PER_TURN) {
      const { data, isBinary } = this.#backlog.shift()!;
      this.#tokens -= 1;
      this.#countTurn();
      this.#process(data, isBinary);
    }
    if (this.#closed) return;
    if (this.#backlog.length > 0) {
      this.#schedule();
      return;
    }
    this.#held = false;
    if (this.#rateLimited) {
      this.#rateLimited = false;
      this.#releasedAt = performance.now();
    }
    this.#syncReading();
  }

  #process(data: Buffer, isBinary: boolean): void {
    let msg: Message;
    try {
      if (!isBinary) throw new TrickleError('MALFORMED', 'text frames are not part of the protocol');
      msg = decodeFrame(data, { maxFrameBytes: this.#ctx.limits.maxFrameBytes });
      // A frame newer than the connection's version is refused as a hub of that version refuses it: an unknown type.
      if ((FRAME_SINCE[msg.t] ?? 1) > this.wireVersion)
        throw new TrickleError('MALFORMED', 't: unknown message type', { details: { field: 't' } });
    } catch (e) {
      this.#error(isBinary ? peekRequestId(data) : 0, e);
      if (++this.#malformed >= this.#ctx.limits.maxMalformedFrames)
        this.close(1007, 'too many malformed frames', 'malformed');
      return;
    }
    if (!this.device) {
      this.#handshake(msg);
      return;
    }
    if (msg.t === 'ping') {
      // A device's liveness probe (a browser cannot send WebSocket pings): answered here, before the handler (a
      // draining hub, a cluster process waiting for a lease answer it too), and charged as a refused frame, so a
      // flood of probes costs the hub no more than a flood of refusals.
      this.#tokens -= this.#ctx.limits.refusedFrameCost - 1;
      this.send({ t: 'pong', id: msg.id });
      return;
    }
    if (msg.t === 'ack') {
      if (this.#chargeAck(msg.channelId, msg.version)) this.#paid.add(msg);
    }
    // A `close` asks the hub to sign a final state and make its version durable, whatever it answers (asked again on a
    // closing channel, above the version it signed, it signs again: spec §5); a device asks once per channel, again
    // only when an answer was lost. At one token, a device could have the hub sign and commit thousands a second.
    else if (msg.t === 'close') this.#tokens -= this.#ctx.limits.refusedFrameCost - 1;
    // A `reject` of a hub proposal has the hub keep the refused state (unsettled) and sign a new one on top, again after
    // each sync (spec §5): at one token, reject and sync in turn had the hub sign and commit a state every two tokens.
    // A device refuses a proposal rarely (a seller refusing a lock below its price).
    else if (msg.t === 'reject') {
      this.#tokens -= this.#ctx.limits.refusedFrameCost - 1;
      this.#paid.add(msg);
    }
    if (msg.t === 'update' || msg.t === 'close') {
      if (this.#pendingCount >= this.#ctx.limits.maxInFlightPerConnection) {
        this.#deliver(
          {
            t: 'reject',
            id: msg.id,
            channelId: msg.state.channelId,
            code: 'RATE_LIMITED',
            message: 'too many updates in flight',
            latest: null,
          },
          msg.t === 'close', // a close paid on arrival
        );
        return;
      }
      let list = this.#pending.get(msg.state.channelId);
      if (!list) this.#pending.set(msg.state.channelId, (list = []));
      list.push({ id: msg.id, version: msg.state.version, paid: msg.t === 'close' });
      this.#pendingCount++;
    }
    try {
      const r = this.#handler.onMessage(this, msg);
      if (r) r.catch((e: unknown) => this.#replyError(msg, e));
    } catch (e) {
      this.#replyError(msg, e);
    }
  }

  #replyError(msg: Message, e: unknown): void {
    if (msg.t === 'update' || msg.t === 'close') {
      const err = isTrickleError(e) ? e : new TrickleError('INTERNAL', 'internal error');
      this.send({
        t: 'reject',
        id: msg.id,
        channelId: msg.state.channelId,
        code: err.code,
        message: err.shortMessage,
        latest: null,
      });
    } else {
      this.#error(msg.id, e, this.#paid.has(msg));
    }
  }

  /** A proposal of the hub's went to the peer: its ack is expected. */
  #propose(channelId: ChannelId, version: bigint): void {
    const list = this.#proposed.get(channelId);
    if (list === undefined) this.#proposed.set(channelId, [version]);
    else if (!list.includes(version)) {
      list.push(version);
      list.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
      if (list.length > 16) list.shift(); // the hub resends what is open; the oldest is answered by a newer ack
    }
  }

  /**
   * An `ack` from the peer costs what a refused frame costs unless it answers a proposal sent on this connection and
   * not answered yet. The hub drops a wrong ack without a reply (spec §5), after checking its signature on the event
   * loop: at one token each, a flood of acks forged for one open proposal cost the hub ten times the signature checks
   * that a flood of refused updates can, and slowed every other device's payments. A device acks each proposal once.
   */
  #chargeAck(channelId: ChannelId, version: bigint): boolean {
    const list = this.#proposed.get(channelId);
    const answers = list !== undefined && list.includes(version);
    if (!answers) this.#tokens -= this.#ctx.limits.refusedFrameCost - 1;
    if (list === undefined) return !answers;
    // Cumulative: it answers every proposal at or below its version.
    while (list.length > 0 && list[0]! <= version) list.shift();
    if (list.length === 0) this.#proposed.delete(channelId);
    return !answers;
  }

  /** An ack or reject to the peer answers its updates and closes. @returns whether a refused one had already paid */
  #answered(msg: Extract<Message, { t: 'ack' | 'reject' }>): boolean {
    const list = this.#pending.get(msg.channelId);
    if (!list) return false;
    const before = list.length;
    let paid = false;
    if (msg.t === 'ack') {
      while (list.length > 0 && list[0]!.version <= msg.version) list.shift();
    } else {
      const i = list.findIndex((p) => p.id === msg.id);
      if (i >= 0) paid = list.splice(i, 1)[0]!.paid;
    }
    this.#pendingCount -= before - list.length;
    if (list.length === 0) this.#pending.delete(msg.channelId);
    return paid;
  }

  #handshake(msg: Message): void {
    const fail = (code: ErrorCode, why: string) => {
      this.#error(msg.id, new TrickleError(code, why));
      this.close(1008, why, 'auth-failed');
    };
    if (msg.t !== 'auth') return fail('UNAUTHORIZED', 'authenticate first');
    if (msg.nonce !== this.#nonce) return fail('UNAUTHORIZED', 'wrong challenge nonce');
    let who: Address;
    try {
      who = this.#ctx.verifier.recoverAddress(
        authDigest(this.#ctx.separator, msg.device, this.#ctx.hub, this.#nonce),
        msg.sig,
      );
    } catch {
      return fail('UNAUTHORIZED', 'bad authentication signature');
    }
    if (who !== msg.device) return fail('UNAUTHORIZED', 'authentication signed by another key');
    clearTimeout(this.#handshakeTimer);
    this.device = who;
    this.send({ t: 'ok', id: msg.id });
    this.#handler.onAuthenticated(this);
  }
}
