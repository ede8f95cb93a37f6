import type { Message, StreamTick } from '@trickle/protocol/codec';
import { notRunMs } from '@trickle/protocol/clock';
import { randomBytes32 } from '@trickle/protocol/random';
import { toAddressInput } from '@trickle/protocol/input';
import { TrickleError, isTrickleError } from '@trickle/protocol/errors';
import type { Address, Bytes32 } from '@trickle/protocol/types';
import type { ClientChannel, PaymentReceipt } from './channel.js';
import type { TrickleClient } from './client.js';
import { notify } from './notify.js';
import { MAX_TIMER_MS } from './timers.js';

/** Options of `channel.stream()`; defaults in {@link DEFAULT_STREAM_OPTIONS}. */
export interface StreamOptions {
  /** Pay this device through the hub (it sees the stream with `onStream`); the hub itself when omitted. */
  readonly to?: Address | undefined;
  /** Base units per second, > 0. */
  readonly ratePerSecond: bigint;
  /** Stop (depleted) once this much was paid; at most the channel's available balance. */
  readonly maxTotal?: bigint | undefined;
  /** Accrual period in ms: every tick pays for the time since the last one. */
  readonly tickMs?: number | undefined;
  /**
   * A tick unanswered this long stalls the stream (no accrual until `resume()`). Only time the device ran counts: a
   * tick timer more than a tick late (a blocked event loop, a device asleep) does not stall it on an answer unread.
   */
  readonly stallMs?: number | undefined;
}

/**
 * The stream's clock: it only measures intervals, so a monotonic one — a device's wall clock steps when NTP first
 * syncs after a boot (often by years), and a step during a tick in flight stalled the stream.
 */
const monotonicNow = (): number => Math.floor(performance.now());

/** Routed ticks of every stream whose `pay()` timed out, by payment id: told the hub's outcome by {@link tickOutcome}. */
const lateTicks = new Map<Bytes32, (refunded: boolean) => void>();

/**
 * The hub's word on a routed payment (its `receipt` frame): a stream tick that timed out waiting for it learns here
 * whether it was delivered or refunded. Called by the client for every `receipt` frame.
 * @internal
 */
export const tickOutcome = (paymentId: Bytes32, delivered: boolean): void => lateTicks.get(paymentId)?.(!delivered);

/** Defaults of {@link StreamOptions}. `stallMs` defaults to five ticks, at least 500 ms. */
export const DEFAULT_STREAM_OPTIONS = { tickMs: 100, minStallMs: 500, stallTicks: 5 } as const;

/**
 * Where a stream is: `running` accrues; `paused` by the payer; `stalled` when a tick went unanswered for `stallMs`
 * or failed (payee or payer offline, hub not acking) — the payer resumes or stops it; `stopped` and `depleted` are
 * final (depleted: `maxTotal` or the balance was reached).
 */
export type StreamStatus = 'running' | 'paused' | 'stalled' | 'stopped' | 'depleted';

/** A change a payer's stream reports. */
export interface StreamChange {
  readonly status: StreamStatus;
  readonly paid: bigint;
  /** Why it stalled. */
  readonly error?: TrickleError | undefined;
}

/**
 * A payment stream: pays `ratePerSecond` in ticks on top of the channel's `pay()` (so ticks coalesce into channel
 * updates like any payments). Accrual is exact to the base unit: each tick pays `floor((carry + rate × ms) / 1000)`
 * and carries the remainder. One tick is in flight at a time: the time that passes while it is unanswered is billed
 * with the next tick once it is answered (a round trip longer than a tick, on a loaded hub, still pays the rate), and
 * never if the stream stalls first (after `stallMs`, or a failed tick: the payee may not have been served). An
 * interval is never billed for more than two ticks of time (a device that did not run: an event loop that slept).
 */
export class PaymentStream {
  /** Payer-chosen id, sent to the payee with every tick. */
  readonly id: Bytes32;
  readonly #channel: ClientChannel;
  readonly #to: Address | undefined;
  readonly #maxTotal: bigint | undefined;
  readonly #tickMs: number;
  readonly #stallMs: number;
  readonly #now: () => number;
  #rate: bigint;
  #status: StreamStatus = 'running';
  #timer: ReturnType<typeof setInterval> | undefined;
  #lastAt: number;
  /** Accrued base-unit milliseconds not yet paid (< 1000 after every tick). */
  #carry = 0n;
  /** Base-unit milliseconds accrued while a tick was unanswered: billed once it is answered, dropped by a stall. */
  #waiting = 0n;
  #sent = 0n;
  #paid = 0n;
  /** A tick flagged final was sent (the payee saw, or will see, the end). */
  #ended = false;
  #outstanding = 0;
  /** When the oldest unanswered tick was sent, moved on by time the process did not run (see `#onTick`). */
  #outstandingSince = 0;
  /** When the tick timer last fired. */
  #tickAt = 0;
  #late = 0;
  #inflight = new Set<Promise<unknown>>();
  /** Routed ticks acked by the hub whose delivery was not confirmed in time: counted as paid unless refunded. */
  readonly #unconfirmed = new Map<Bytes32, bigint>();
  #unsubscribe: (() => void) | undefined;
  #error: TrickleError | undefined;
  readonly #listeners = new Set<(c: StreamChange) => void>();

  /** Use `channel.stream(options)`. @throws TrickleError INVALID_RATE / STREAM_DEPLETES / INSUFFICIENT_FUNDS / INVALID_ARGUMENT */
  constructor(channel: ClientChannel, options: StreamOptions, now: () => number = monotonicNow) {
    const tickMs = options.tickMs ?? DEFAULT_STREAM_OPTIONS.tickMs;
    if (!Number.isInteger(tickMs) || tickMs < 1 || tickMs > 3_600_000)
      throw new TrickleError('INVALID_ARGUMENT', 'tickMs must be an integer from 1 to 3,600,000');
    const stallMs =
      options.stallMs ?? Math.max(DEFAULT_STREAM_OPTIONS.minStallMs, DEFAULT_STREAM_OPTIONS.stallTicks * tickMs);
    if (!Number.isFinite(stallMs) || stallMs < tickMs)
      throw new TrickleError('INVALID_ARGUMENT', 'stallMs must be at least one tick');
    const available = channel.balance().available;
    if (options.maxTotal !== undefined) {
      if (typeof options.maxTotal !== 'bigint' || options.maxTotal <= 0n)
        throw new TrickleError('INVALID_ARGUMENT', 'maxTotal must be a positive bigint');
      if (options.maxTotal > available)
        throw new TrickleError('INSUFFICIENT_FUNDS', 'maxTotal is above the channel balance', {
          details: { maxTotal: options.maxTotal, available },
        });
    }
    this.#channel = channel;
    // Refused here, not at each tick (a stream whose every tick is refused would stall, waiting for a resume).
    this.#to = options.to === undefined ? undefined : toAddressInput(options.to, 'to');
    this.#maxTotal = options.maxTotal;
    this.#tickMs = tickMs;
    this.#stallMs = stallMs;
    this.#now = now;
    this.#rate = this.#checkRate(options.ratePerSecond);
    this.id = randomBytes32();
    this.#lastAt = now();
    // A routed tick whose receipt never came (e.g. it was sent while the payer was offline) left the channel all the
    // same: it is counted as paid, and taken back if the hub refunds it (a credit naming its payment id, then the
    // hub's `receipt` frame saying so), also after `stop()`.
    if (this.#to)
      this.#unsubscribe = channel.onPayment((p) => {
        if (p.paymentId !== undefined && this.#unconfirmed.get(p.paymentId) === p.amount)
          this.#outcome(p.paymentId, true);
      });
    this.#start();
  }

  /** The rate in force, base units per second. */
  get ratePerSecond(): bigint {
    return this.#rate;
  }

  get status(): StreamStatus {
    return this.#status;
  }

  /** Why the stream stalled, if it did. */
  get error(): TrickleError | undefined {
    return this.#error;
  }

  /** Ticks that found the previous tick still unanswered: their interval waits to be billed with the next one sent. */
  get lateTicks(): number {
    return this.#late;
  }

  /**
   * Paid, in base units: acked by the hub, and when routed delivered to the payee or {@link PaymentStream.unconfirmed}.
   * Final once the stream is stopped or depleted, `settled()`, and `unconfirmed` is 0n; until then a refund of an
   * unconfirmed tick still takes it off (each outcome is reported to `onChange` listeners).
   */
  paid(): bigint {
    return this.#paid;
  }

  /**
   * Routed ticks the hub took whose delivery was not confirmed in time (their `pay()` timed out): counted in `paid()`
   * until the hub says it refunded them.
   */
  get unconfirmed(): bigint {
    let sum = 0n;
    for (const a of this.#unconfirmed.values()) sum += a;
    return sum;
  }

  /** When the balance (or `maxTotal`) runs out at this rate, in ms since the epoch; undefined unless running. */
  get depletesAt(): number | undefined {
    if (this.#status !== 'running') return undefined;
    const left = this.#limit() * 1000n - this.#carry - this.#waiting;
    // On the wall clock: the stream's own clock is monotonic, with no epoch.
    if (left <= 0n) return Date.now();
    return Date.now() + (this.#lastAt - this.#now()) + Number((left + this.#rate - 1n) / this.#rate);
  }

  /** Subscribe to status changes (stalled, depleted …). @returns an unsubscribe function */
  onChange(listener: (c: StreamChange) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /**
   * Change the rate from now on (time so far is billed at the old rate).
   * @throws TrickleError STREAM_STOPPED / INVALID_RATE / STREAM_DEPLETES
   */
  adjust(ratePerSecond: bigint): void {
    this.#checkLive();
    const rate = this.#checkRate(ratePerSecond);
    if (this.#status === 'running') this.#accrue(this.#now());
    this.#rate = rate;
  }

  /** Stop accruing; what is due so far is paid. Resolves once every tick sent is answered. @throws TrickleError STREAM_STOPPED */
  async pause(): Promise<void> {
    this.#checkLive();
    if (this.#status === 'running') {
      this.#bill(this.#now(), false, true);
      if ((this.#status as StreamStatus) === 'running') this.#setStatus('paused');
    }
    await this.settled();
  }

  /** Accrue again from now (after `pause()` or a stall). @throws TrickleError STREAM_STOPPED */
  resume(): void {
    this.#checkLive();
    if (this.#status === 'running') return;
    this.#error = undefined;
    this.#lastAt = this.#now();
    this.#setStatus('running');
    this.#start();
  }

  /**
   * End the stream: what is due is paid (the payee sees the last tick as final). A routed stream with nothing due
   * (stopped while paused, or just after a tick) pays one base unit as its final tick, so that the payee still sees
   * the end. A stalled stream sends none (its payee or the hub is not answering; stop does not wait on them).
   * @returns the total paid
   */
  async stop(): Promise<bigint> {
    if (this.#status !== 'stopped' && this.#status !== 'depleted') {
      if (this.#status === 'running') this.#bill(this.#now(), true, true);
      const reachable = this.#status === 'running' || this.#status === 'paused';
      if (reachable && this.#to && this.#sent > 0n && !this.#ended && this.#limit() >= 1n) {
        this.#carry = 0n;
        this.#send(1n, true);
      }
      if ((this.#status as StreamStatus) !== 'depleted') this.#setStatus('stopped');
    }
    await this.settled();
    if (this.#unconfirmed.size === 0) this.#unsubscribe?.();
    return this.#paid;
  }

  /** Wait until every tick sent is answered (paid or failed). */
  async settled(): Promise<void> {
    while (this.#inflight.size > 0) await Promise.allSettled([...this.#inflight]);
  }

  /** The hub's word on an unconfirmed tick: refunded (the money is back), or delivered. */
  #outcome(paymentId: Bytes32, refunded: boolean): void {
    const amount = this.#unconfirmed.get(paymentId);
    if (amount === undefined) return;
    this.#unconfirmed.delete(paymentId);
    lateTicks.delete(paymentId);
    if (refunded) {
      this.#paid -= amount;
      this.#sent -= amount;
    }
    const ended = this.#status === 'stopped' || this.#status === 'depleted';
    if (ended && this.#unconfirmed.size === 0) this.#unsubscribe?.();
    const change: StreamChange = { status: this.#status, paid: this.#paid };
    notify(this.#listeners, change);
  }

  #checkRate(rate: bigint): bigint {
    if (typeof rate !== 'bigint' || rate <= 0n)
      throw new TrickleError('INVALID_RATE', 'ratePerSecond must be a positive bigint');
    const perTick = (rate * BigInt(this.#tickMs)) / 1000n;
    const limit = this.#limit();
    if (perTick >= limit)
      throw new TrickleError('STREAM_DEPLETES', 'this rate uses up the balance within one tick', {
        details: { perTick, limit },
      });
    return rate;
  }

  #checkLive(): void {
    if (this.#status === 'stopped' || this.#status === 'depleted')
      throw new TrickleError('STREAM_STOPPED', `the stream is ${this.#status}`);
  }

  /** What can still be paid: the channel's available balance, and what is left under `maxTotal`. */
  #limit(): bigint {
    const available = this.#channel.balance().available;
    if (this.#maxTotal === undefined) return available;
    const left = this.#maxTotal - this.#sent;
    return left < available ? left : available;
  }

  #start(): void {
    if (this.#timer) return;
    this.#tickAt = this.#now();
    this.#timer = setInterval(() => this.#onTick(), this.#tickMs);
    this.#timer.unref?.();
  }

  #setStatus(status: StreamStatus, error?: TrickleError): void {
    this.#status = status;
    // Time spent waiting on a tick that stalled the stream is not billed: the hub or the payee was not answering.
    if (status === 'stalled') this.#waiting = 0n;
    if (status !== 'running' && this.#timer) {
      clearInterval(this.#timer);
      this.#timer = undefined;
    }
    if (error) this.#error = error;
    const change: StreamChange = { status, paid: this.#paid, error };
    notify(this.#listeners, change);
  }

  #onTick(): void {
    if (this.#status !== 'running') return;
    const now = this.#now();
    // Time the device did not run is not the hub's: an answer that came meanwhile is not read yet.
    this.#outstandingSince += notRunMs(now, this.#tickAt, this.#tickMs);
    this.#tickAt = now;
    if (this.#outstanding > 0) {
      // The previous tick is unanswered (a slow round trip, or the hub not acking, a side offline): this interval is
      // billed once it is answered, unless the stream stalls first.
      this.#accrue(now);
      this.#late++;
      if (now - this.#outstandingSince >= this.#stallMs)
        this.#setStatus(
          'stalled',
          new TrickleError('TIMEOUT', 'a tick went unanswered', { details: { stallMs: this.#stallMs } }),
        );
      return;
    }
    this.#bill(now, false);
  }

  /**
   * Add the time since the last accrual (at most two ticks of it: every tick timer accrues, so more is time the device
   * did not run) at the current rate: to what is billed next, or while a tick is unanswered to what waits for its
   * answer — unless this is the payer's own pause or stop (`force`), which bills what is due so far.
   */
  #accrue(now: number, force = false): void {
    const ms = Math.max(0, Math.min(now - this.#lastAt, 2 * this.#tickMs));
    this.#lastAt = now;
    this.#waiting += this.#rate * BigInt(ms);
    if (this.#outstanding === 0 || force) {
      this.#carry += this.#waiting;
      this.#waiting = 0n;
    }
  }

  /** Pay what accrued. The last tick (`final`) rounds a partial base unit up, so that the payee sees the end. */
  #bill(now: number, final: boolean, force = false): void {
    this.#accrue(now, force);
    if (final && this.#carry % 1000n !== 0n) this.#carry += 1000n - (this.#carry % 1000n);
    let due = this.#carry / 1000n;
    const limit = this.#limit();
    const depleted = due >= limit;
    if (depleted) due = limit;
    this.#carry = depleted ? 0n : this.#carry - due * 1000n;
    if (due > 0n) this.#send(due, final || depleted);
    else if (final) this.#carry = 0n;
    if (depleted) this.#setStatus('depleted');
  }

  #send(amount: bigint, final: boolean): void {
    this.#sent += amount;
    if (final) this.#ended = true;
    if (this.#outstanding++ === 0) this.#outstandingSince = this.#now();
    const tick: StreamTick | undefined = this.#to
      ? { streamId: this.id, ratePerSecond: this.#rate, total: this.#sent, final }
      : undefined;
    const p: Promise<PaymentReceipt> = this.#to
      ? this.#channel.pay(amount, { to: this.#to, stream: tick })
      : this.#channel.pay(amount);
    const tracked = p.then(
      () => {
        this.#paid += amount;
        this.#outstanding--;
      },
      (e: unknown) => {
        this.#outstanding--;
        const err = isTrickleError(e) ? e : new TrickleError('INTERNAL', 'stream tick failed', { cause: e });
        const paymentId = isTrickleError(e, 'TIMEOUT') ? (e.details['paymentId'] as Bytes32 | undefined) : undefined;
        if (paymentId !== undefined) {
          // Acked by the hub, outcome not heard: the hub delivers it or refunds it (see the constructor).
          this.#paid += amount;
          this.#unconfirmed.set(paymentId, amount);
          lateTicks.set(paymentId, (refunded) => this.#outcome(paymentId, refunded));
        } else this.#sent -= amount;
        if (this.#status === 'running') this.#setStatus('stalled', err);
        else this.#error = err;
      },
    );
    this.#inflight.add(tracked);
    void tracked.finally(() => this.#inflight.delete(tracked));
  }
}

/** What a payee's `onStream` listener sees. */
export interface StreamEvent {
  /**
   * Each tick is one `open` (first tick seen), `rate` (the rate changed), `tick` (another payment) or `end` (the
   * payer's last tick). Besides, with amount 0n: `silent`, when no tick came for the stream's silence time (see
   * {@link OnStreamOptions.silenceMs}) and no end either — the payer stopped paying (it went offline, its stream
   * stalled or was paused, or its channel was drained, which leaves nothing to carry a last tick): stop serving it;
   * and `resume`, just before the event of the first tick after a `silent` one.
   */
  readonly type: 'open' | 'rate' | 'tick' | 'end' | 'silent' | 'resume';
  readonly streamId: Bytes32;
  readonly from: Address;
  readonly ratePerSecond: bigint;
  /** This tick's amount (0n for `silent` and `resume`). */
  readonly amount: bigint;
  /** Cumulative paid by the stream, as the payer numbers it (for `silent` and `resume`: as of the last tick before). */
  readonly total: bigint;
  /** Sum of the ticks this payee received since it first saw the stream (for `resume`: before this tick). */
  readonly received: bigint;
  /** This tick's payment id (for `silent`: the last tick's). */
  readonly paymentId: Bytes32;
}

/** Options of {@link onStream}. */
export interface OnStreamOptions {
  /**
   * A stream with no tick for this long (ms) and no end is reported `silent` once (within 100 ms). Default, per
   * stream: its ticks at its current rate paid for time (amount ÷ rate each, run on from when each came, or from
   * where the one before ended if that is later), and it is silent four of its last tick's intervals after that time
   * ends — five intervals after a tick, for a stream ticking at that interval — at least {@link DEFAULT_SILENCE_MS}
   * after its last tick, and never sooner than an earlier tick at its rate made it. So a tick paying for an hour
   * gives five hours once, and smaller ticks after it neither extend them nor count as hours themselves.
   */
  readonly silenceMs?: number | undefined;
}

/** The least default silence time of a payee's stream (ms): a tick interval is 100 ms by default. */
export const DEFAULT_SILENCE_MS = 1_000;
/** How many tick intervals without a tick make a stream silent by default (a payer's stream stalls after five). */
const SILENT_TICKS = 5;
/**
 * Sweeps for silent streams run at most this often (ms), so a report may come this much late: a payer that lets
 * thousands of streams fall silent a millisecond apart costs ten sweeps a second, not a thousand.
 */
const SWEEP_EVERY_MS = 100;

const MAX_TRACKED_STREAMS = 10_000;

/** A stream a payee follows. */
interface Followed {
  rate: bigint;
  received: bigint;
  total: bigint;
  paymentId: Bytes32;
  /** Until when its ticks at this rate paid (monotonic ms): each adds its interval, from when it came if later. */
  paidUntil: number;
  /** When it is silent if no tick comes (monotonic ms). */
  silentAt: number;
  silent: boolean;
}

/**
 * Payee side: follow the payment streams paying this device. The hub announces each delivered tick (after the
 * payee countersigned its credit) with the stream's id, rate and running total. A stream that stops without an end
 * (the payer went offline or was drained) is reported `silent` once no tick came for its silence time, and `resume`
 * if ticks come again (each an extra event of amount 0n: a tick is still one `open`, `rate`, `tick` or `end`). At
 * most 10,000 streams are followed (ended ones are forgotten); past that, the oldest stream of the payer with the
 * most is forgotten (its next tick reads as `open`), so a payer opening many streams crowds out its own, and another
 * payer's only while that one has more streams followed than it. A forgotten stream is reported neither `silent` nor
 * `end`: a payee that serves a stream until one of them comes should also stop when its ticks stop.
 * @returns an unsubscribe function
 * @throws TrickleError INVALID_ARGUMENT (a `silenceMs` that is not a positive number of ms)
 * @example
 * ```ts
 * onStream(charger, (e) => console.log(e.type, e.ratePerSecond, e.total));
 * ```
 */
export function onStream(
  client: TrickleClient,
  listener: (e: StreamEvent) => void,
  options: OnStreamOptions = {},
): () => void {
  const fixedSilence = options.silenceMs;
  if (
    fixedSilence !== undefined &&
    !(Number.isFinite(fixedSilence) && fixedSilence > 0 && fixedSilence <= MAX_TIMER_MS)
  )
    throw new TrickleError(
      'INVALID_ARGUMENT',
      'silenceMs must be a positive number of ms a timer holds (at most 2^31 - 1)',
    );
  // A listener that throws stops neither the sweep nor the other event of a tick (see `notify`).
  const listeners = [listener];
  const emit = (e: StreamEvent) => notify(listeners, e);
  /** Per payer, the streams followed in the order first seen. */
  const byPayer = new Map<Address, Map<Bytes32, Followed>>();
  let tracked = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;
  /** When the armed timer fires (monotonic ms). */
  let timerAt = Infinity;
  /** When the last sweep ran (monotonic ms). */
  let sweptAt = -Infinity;
  /** Report the streams whose silence time passed, then wait for the next one due. */
  const sweep = () => {
    timer = undefined;
    timerAt = Infinity;
    const now = monotonicNow();
    sweptAt = now;
    let next = Infinity;
    for (const [from, streams] of byPayer)
      for (const [streamId, f] of streams) {
        if (f.silent) continue;
        const due = f.silentAt;
        if (due > now) {
          next = Math.min(next, due);
          continue;
        }
        f.silent = true;
        emit({
          type: 'silent',
          streamId,
          from,
          ratePerSecond: f.rate,
          amount: 0n,
          total: f.total,
          received: f.received,
          paymentId: f.paymentId,
        });
      }
    if (next !== Infinity) arm(next, now);
  };
  /** Have the sweep run by `at` (monotonic ms), or {@link SWEEP_EVERY_MS} after the last one if that is later. */
  const arm = (due: number, now: number) => {
    const at = Math.max(due, sweptAt + SWEEP_EVERY_MS);
    if (timer !== undefined) {
      if (timerAt <= at) return;
      clearTimeout(timer);
    }
    timerAt = at;
    timer = setTimeout(sweep, Math.max(1, Math.ceil(at - now)));
    timer.unref?.();
  };
  const unsubscribe = client.onMessage((m: Message) => {
    if (m.t !== 'stream') return;
    const now = monotonicNow();
    let streams = byPayer.get(m.from);
    const prev = streams?.get(m.stream.streamId);
    const received = (prev?.received ?? 0n) + m.amount;
    const type: StreamEvent['type'] = m.stream.final
      ? 'end'
      : !prev
        ? 'open'
        : prev.rate !== m.stream.ratePerSecond
          ? 'rate'
          : 'tick';
    // The interval this tick paid for, at its rate, added to what the stream's ticks paid through: a silence of four
    // more such intervals past that ends nothing yet (five after a tick, for a stream ticking at that interval). The
    // time paid for, not the longest interval seen: one tick paying for an hour, then a unit every four hours, would
    // otherwise keep the stream from going silent for as long as the payer likes. And not what ticks at an earlier
    // rate paid through: the rate is the payer's word, and one tick that claimed a rate of 1 a second would otherwise
    // make a stream billed at the payee's price go unreported for hours once its payer stopped paying.
    const interval = m.stream.ratePerSecond > 0n ? Number((m.amount * 1000n) / m.stream.ratePerSecond) : 0;
    const same = prev !== undefined && prev.rate === m.stream.ratePerSecond;
    const latest = now + MAX_TIMER_MS;
    const paidUntil = Math.min(latest, Math.max(same ? prev.paidUntil : now, now) + interval);
    const silentAt =
      fixedSilence !== undefined
        ? now + fixedSilence
        : Math.min(
            latest,
            Math.max(now + DEFAULT_SILENCE_MS, paidUntil + (SILENT_TICKS - 1) * interval, same ? prev.silentAt : now),
          );
    const followed: Followed = {
      rate: m.stream.ratePerSecond,
      received,
      total: m.stream.total,
      paymentId: m.paymentId,
      paidUntil,
      silentAt,
      silent: false,
    };
    if (m.stream.final) {
      if (prev && streams!.delete(m.stream.streamId)) {
        tracked--;
        if (streams!.size === 0) byPayer.delete(m.from);
      }
    } else if (prev) streams!.set(m.stream.streamId, followed);
    else {
      if (tracked >= MAX_TRACKED_STREAMS) {
        let most: Map<Bytes32, unknown> | undefined;
        let mostOf: Address | undefined;
        for (const [payer, s] of byPayer)
          if (!most || s.size > most.size || (payer === m.from && s.size === most.size)) [most, mostOf] = [s, payer];
        most!.delete(most!.keys().next().value!);
        tracked--;
        if (most!.size === 0) byPayer.delete(mostOf!);
      }
      if (!streams) byPayer.set(m.from, (streams = new Map()));
      streams.set(m.stream.streamId, followed);
      tracked++;
    }
    if (!m.stream.final) arm(silentAt, now);
    if (prev?.silent && !m.stream.final)
      emit({
        type: 'resume',
        streamId: m.stream.streamId,
        from: m.from,
        ratePerSecond: prev.rate,
        amount: 0n,
        total: prev.total,
        received: prev.received,
        paymentId: m.paymentId,
      });
    emit({
      type,
      streamId: m.stream.streamId,
      from: m.from,
      ratePerSecond: m.stream.ratePerSecond,
      amount: m.amount,
      total: m.stream.total,
      received,
      paymentId: m.paymentId,
    });
  });
  return () => {
    unsubscribe();
    if (timer !== undefined) clearTimeout(timer);
    timer = undefined;
    byPayer.clear();
  };
}

/**
 * Open a payment stream on a channel (what `channel.stream(options)` does).
 * @throws TrickleError INVALID_RATE / STREAM_DEPLETES / INSUFFICIENT_FUNDS (maxTotal above the balance) / INVALID_ARGUMENT
 * @example
 * ```ts
 * const s = openStream(channel, { to: charger, ratePerSecond: 50n, maxTotal: 100_000n });
 * ```
 */
export function openStream(channel: ClientChannel, options: StreamOptions): PaymentStream {
  return new PaymentStream(channel, options);
}
