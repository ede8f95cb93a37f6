/**
 * The watchtower's dispute logic. For each watched channel it reads the adjudicator's record (the truth, whatever
 * triggered the check) and, when a force close registered a version lower than the state it holds and the deadline
 * has not passed, sends `challenge`. Checks are idempotent, so replaying events after a reorg or a restart is safe.
 *
 * - One check at a time per channel; a trigger during a check queues exactly one more.
 * - Transactions go out one at a time (one sender account: no nonce races), each bounded by a timeout.
 * - A failed challenge is retried with exponential backoff until it lands or the chain's clock reaches the
 *   deadline. Reverts that cannot succeed on retry (`ChallengePeriodOver`, `WrongSigner`, …) are not retried.
 * - Channels in a dispute are re-read every `recheckMs` until their deadline, so a challenge of ours that a reorg
 *   removed is sent again.
 * - Every channel not closed is re-read within its sweep interval whatever the events say (see `#sweep`): a force close
 *   whose event the node never served is still answered in time.
 * - Locks: a held preimage of a lock the hub pays the device (the device claimed it; the watchtower learned it from the
 *   device's record) is revealed on-chain while the lock can still pay: at once in a channel being force-closed,
 *   `revealMarginSeconds` before the expiry in an open one (the hub has not countersigned the claim). A challenge
 *   carries the held state's lock list, and a force-closed channel whose registration has locks is settled with them
 *   (`settleWithLocks`) once its deadline has passed and every lock is decided.
 */
import { challengeWith } from '@trickle/protocol/engine';
import { lockOutcome, revealDue, type Lock } from '@trickle/protocol/locks';
import type { OnChainChannel, ReplaceOptions } from '@trickle/chain/types';
import type { Bytes32 } from '@trickle/protocol/types';
import type { Provider } from 'ethers';
import type { Adjudicator } from '@trickle/chain/adjudicator';
import { decodeChainError } from '@trickle/chain/errors';
import { getRegisteredLocks } from '@trickle/chain/actions/getRegisteredLocks';
import type { ChallengedEvent, ClosedEvent, ForceClosedEvent } from '@trickle/chain/events';
import type { ChannelStatus } from '@trickle/chain/types';
import { isTrickleError, TrickleError } from '@trickle/protocol/errors';
import { ZERO_ROOT, type ChannelId } from '@trickle/protocol/types';
import type { WatchedChannel } from './db.js';
import { describeError, type WatchLogger } from './log.js';

/** What the watchtower knows about a watched channel's dispute (reported by `status()` and `GET /channels`). */
export interface DisputeView {
  readonly channelId: ChannelId;
  status: ChannelStatus | 'unknown';
  /** Version registered on-chain (force close / challenge). */
  registeredVersion: bigint;
  /** Unix seconds; 0 while the channel is open. */
  deadline: bigint;
  /** Version of the state the watchtower holds. */
  heldVersion: bigint;
  /** The chain's clock at the last check. */
  chainTime: bigint;
  /** Wall-clock ms of the last successful read of the channel. */
  lastChecked: number;
  /** Challenges this watchtower got mined for the channel. */
  challenges: number;
  /** Preimages this watchtower revealed on-chain for the channel's locks. */
  reveals: number;
  /** Consecutive failed attempts (reset on success). */
  failures: number;
  lastTx?: string | undefined;
  lastError?: string | undefined;
  /**
   * The last conclusion: `challenged` (ours is registered), `current` (nothing newer to send), `missed`, `closed`,
   * `invalid`, `settled` (this watchtower settled it with its locks).
   */
  outcome?: 'challenged' | 'current' | 'missed' | 'closed' | 'invalid' | 'settled' | undefined;
}

/** Options of {@link Responder}; defaults in `createWatchtower`. */
export interface ResponderOptions {
  /** The adjudicator bound to a provider, for reads. */
  readonly reader: Adjudicator;
  /** The adjudicator bound to the sender's signer, for challenges. */
  readonly writer: Adjudicator;
  readonly provider: Provider;
  /** The state held for a channel. */
  readonly held: (channelId: ChannelId) => WatchedChannel | undefined;
  readonly log: WatchLogger;
  readonly retryInitialMs: number;
  readonly retryMaxMs: number;
  /** Bounds each transaction without replace-by-fee (a replace-by-fee send ends by its deadline or fee cap). */
  readonly txTimeoutMs: number;
  /** Replace-by-fee of challenges, reveals (until the lock's expiry) and settles; off when absent. */
  readonly replace?: ReplaceOptions | undefined;
  readonly recheckMs: number;
  /**
   * Every watched channel not closed is read again at least this often, and at least four times per challenge period
   * (never more often than every `recheckMs`).
   */
  readonly sweepMs: number;
  /** Reveal a held preimage this many seconds before its lock expires while the channel is open. */
  readonly revealMarginSeconds: number;
  /** How long `stop` waits for a check in progress. */
  readonly stopGraceMs: number;
  /** Most channel checks (RPC reads) at once; a startup over many channels queues the rest. */
  readonly maxConcurrentChecks: number;
}

/** Reverts that will not go away by retrying the same challenge. */
const FINAL_REVERTS = new Set(['ChallengePeriodOver', 'WrongSigner', 'StateExceedsDeposits', 'NotFinal']);

/** Runs checks and challenges; see the module comment. */
export class Responder {
  readonly #o: ResponderOptions;
  readonly #views = new Map<ChannelId, DisputeView>();
  readonly #running = new Map<ChannelId, Promise<void>>();
  readonly #again = new Set<ChannelId>();
  readonly #timers = new Map<ChannelId, NodeJS.Timeout>();
  #sendLock: Promise<unknown> = Promise.resolve();
  #stopped = false;
  #active = 0;
  readonly #waiting: (() => void)[] = [];
  /** Lock hashes known revealed on-chain, with when. */
  readonly #revealed = new Map<Bytes32, bigint>();
  /**
   * The deadline of the force close (or challenge) an event showed, per channel, until a read of the channel shows it:
   * a node that still reads the channel open (a backend behind the one that served the logs) is read again.
   */
  readonly #closeSeen = new Map<ChannelId, bigint>();
  /** Closing channels whose registered state has locks (a lock root), as of their last read: settled once decided. */
  readonly #lockedRegistration = new Set<ChannelId>();
  /** Wall-clock ms at which the sweep last queued a channel's read (a read that fails waits for its next turn). */
  readonly #swept = new Map<ChannelId, number>();
  /** Reads the sweep owes (fractional: carried from tick to tick), and when it last ran. */
  #sweepBudget = 0;
  #sweptAt = Date.now();
  /** Aborted by `stop`: a replace-by-fee send in flight gives up, its copy saved, instead of going on re-pricing. */
  readonly #abort = new AbortController();

  constructor(options: ResponderOptions) {
    this.#o = options;
  }

  /**
   * Replace-by-fee options of a send (undefined: off), tied to `stop`: a stopped watchtower sends nothing more, and the
   * copy it leaves in the mempool is saved (`stuckCopies`), so that it is replaced after a restart rather than queued
   * behind.
   */
  #replace(extra?: { readonly deadline: bigint }): ReplaceOptions | undefined {
    const r = this.#o.replace;
    return r && { ...extra, ...r, signal: this.#abort.signal };
  }

  /** What is known about every channel checked so far. */
  views(): DisputeView[] {
    return [...this.#views.values()].map((v) => ({ ...v }));
  }

  /** One channel's view. */
  view(channelId: ChannelId): DisputeView | undefined {
    const v = this.#views.get(channelId);
    return v && { ...v };
  }

  /** Channels whose registered state is older than the one held and whose deadline is ahead. */
  get pending(): number {
    let n = 0;
    for (const v of this.#views.values())
      if (v.status === 'closing' && v.heldVersion > v.registeredVersion && v.chainTime < v.deadline) n++;
    return n;
  }

  /** An adjudicator event of a watched channel: note what it says, then check the channel. */
  onEvent(e: ForceClosedEvent | ChallengedEvent | ClosedEvent): void {
    const v = this.#viewOf(e.channelId);
    if (e.name === 'Closed') v.status = 'closed';
    else {
      this.#closeSeen.set(e.channelId, e.deadline);
      v.status = 'closing';
      // Never lower what we know: a replayed (older) event after a reorg rewind must not hide a later challenge.
      if (e.version > v.registeredVersion || v.deadline === 0n) v.registeredVersion = e.version;
      v.deadline = e.deadline;
    }
    this.#o.log(
      e.name === 'ForceClosed' ? 'warn' : 'info',
      e.name === 'ForceClosed' ? 'force-close-seen' : e.name === 'Challenged' ? 'challenge-seen' : 'close-seen',
      {
        channelId: e.channelId,
        version: e.version,
        held: this.#o.held(e.channelId)?.latest.state.version,
        block: e.log.blockNumber,
        tx: e.log.transactionHash,
      },
    );
    this.trigger(e.channelId);
  }

  /** Check a channel now (or right after the check in progress). */
  trigger(channelId: ChannelId): void {
    if (this.#stopped) return;
    const timer = this.#timers.get(channelId);
    if (timer) {
      clearTimeout(timer);
      this.#timers.delete(channelId);
    }
    if (this.#running.has(channelId)) {
      this.#again.add(channelId);
      return;
    }
    const job = (async () => {
      await this.#acquire();
      try {
        do {
          this.#again.delete(channelId);
          if (!this.#stopped) await this.#checkOnce(channelId);
        } while (this.#again.has(channelId) && !this.#stopped);
      } finally {
        this.#release();
      }
    })()
      .catch((err: unknown) => this.#o.log('error', 'check-crashed', { channelId, err }))
      .finally(() => this.#running.delete(channelId));
    this.#running.set(channelId, job);
  }

  /**
   * Periodic: re-read channels in a dispute (until their deadline) that were not read for `recheckMs`, and the next
   * channels of the sweep.
   */
  tick(): void {
    const now = Date.now();
    for (const v of this.#views.values()) {
      if (!this.#locksDue(v)) {
        if (v.status !== 'closing' || v.chainTime >= v.deadline) continue;
        if (v.heldVersion <= v.registeredVersion && v.outcome !== 'challenged') continue;
      }
      if (now - v.lastChecked < this.#o.recheckMs || this.#running.has(v.channelId) || this.#timers.has(v.channelId))
        continue;
      this.trigger(v.channelId);
    }
    this.#sweep(now);
  }

  /**
   * The safety net under the events. A force close whose `ForceClosed` log the node never served (a load-balanced
   * endpoint answering `eth_getLogs` from a backend that has not indexed the block yet returns no logs, and the
   * follower moves past them) leaves the channel unread while the device is offline: nothing else triggers a check,
   * and the deadline passes. So every channel not closed is read again within its interval: `sweepMs`, or a quarter of
   * its challenge period if shorter, never below `recheckMs`. The reads are spread over time, not made in bursts: the
   * sweep queues them at the rate the intervals add up to (thousands of channels cost a steady trickle of reads),
   * earliest due first (a read for an event or a dispute counts), and none while checks are waiting for a slot.
   */
  #sweep(now: number): void {
    const elapsed = Math.max(0, now - this.#sweptAt);
    this.#sweptAt = now;
    let rate = 0; // reads per ms, with a tenth to spare for the ticks coming only every poll
    const candidates: { id: ChannelId; due: number }[] = [];
    for (const v of this.#views.values()) {
      if (v.status === 'closed') continue; // for good: nothing can be registered on it any more
      const held = this.#o.held(v.channelId);
      if (!held) continue;
      const quarter = Number(held.params.challengeDuration) * 250;
      const every = Math.min(this.#o.sweepMs, Math.max(this.#o.recheckMs, quarter));
      rate += 1.1 / every;
      if (this.#running.has(v.channelId) || this.#timers.has(v.channelId)) continue;
      candidates.push({ id: v.channelId, due: Math.max(v.lastChecked, this.#swept.get(v.channelId) ?? 0) + every });
    }
    // At most one `recheckMs` of reads at once: after a pause (a long catch-up) the reads owed are not queued all at
    // once, ahead of the checks that events ask for.
    const most = Math.min(candidates.length, Math.max(1, rate * this.#o.recheckMs));
    this.#sweepBudget = Math.min(this.#sweepBudget + rate * elapsed, most);
    if (this.#waiting.length > 0 || this.#sweepBudget < 1) return;
    for (const { id } of earliest(candidates, Math.floor(this.#sweepBudget))) {
      this.#sweepBudget--;
      this.#swept.set(id, now);
      this.trigger(id);
    }
  }

  /** Stop: no new checks; wait (bounded) for the ones in progress. */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#abort.abort();
    for (const wake of this.#waiting.splice(0)) wake(); // queued checks see #stopped and end
    for (const t of this.#timers.values()) clearTimeout(t);
    this.#timers.clear();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.allSettled([...this.#running.values()]),
      new Promise<void>((r) => (timer = setTimeout(r, this.#o.stopGraceMs))),
    ]);
    clearTimeout(timer);
  }

  /**
   * Whether a channel's locks want it read again: a held preimage of a lock not yet expired by the chain's clock at
   * the last read, or a force close registered with locks that is not settled yet.
   */
  #locksDue(v: DisputeView): boolean {
    if (v.status === 'closed' || v.outcome === 'settled') return false;
    if (v.status === 'closing' && this.#lockedRegistration.has(v.channelId)) return true;
    const held = this.#o.held(v.channelId);
    if (!held?.locks?.length) return false;
    if (v.status === 'closing') return true;
    // Also once revealed, until the expiry: a reorg may remove the reveal, and it is sent again while it can still pay.
    return (held.preimages ?? []).some((p) => {
      const lock = held.locks!.find((l) => l.hash === p.hash);
      return lock !== undefined && v.chainTime <= lock.expiry;
    });
  }

  /** Reveal the held preimages that are due (see the module comment); a failure is retried later. */
  async #revealDue(held: WatchedChannel, v: DisputeView, now: bigint, closing: boolean): Promise<void> {
    for (const p of held.preimages ?? []) {
      const lock = held.locks?.find((l) => l.hash === p.hash && l.payer === 'hub');
      if (!lock) continue;
      if (!revealDue(lock, now, closing, BigInt(this.#o.revealMarginSeconds))) continue;
      // A reveal known before (ours, or read) is read again while the lock can still pay: a reorg may have removed it.
      const known = this.#revealed.get(p.hash);
      try {
        const at = await this.#o.reader.revealedAt(p.hash);
        if (at !== 0n) {
          // Revealed by someone else (the device, the hub): a second reveal would change nothing but cost gas.
          this.#revealed.set(p.hash, at);
          if (known === undefined)
            this.#o.log('info', 'preimage-revealed-already', { channelId: v.channelId, hash: p.hash, revealedAt: at });
          continue;
        }
        if (known !== undefined) {
          this.#revealed.delete(p.hash);
          this.#o.log('warn', 'reveal-reorged', { channelId: v.channelId, hash: p.hash, revealedAt: known });
        }
        this.#o.log('warn', 'revealing', { channelId: v.channelId, hash: p.hash, expiry: lock.expiry, chainTime: now });
        const replace = this.#replace({ deadline: lock.expiry + 1n });
        const r = await this.#send(() => this.#o.writer.reveal(p.preimage, { replace }));
        this.#revealed.set(p.hash, r.revealedAt);
        v.reveals++;
        v.lastTx = r.hash;
        this.#o.log('info', 'preimage-revealed', {
          channelId: v.channelId,
          hash: p.hash,
          revealedAt: r.revealedAt,
          expiry: lock.expiry,
          inTime: r.revealedAt <= lock.expiry,
          tx: r.hash,
        });
      } catch (e) {
        // A send given up (fee cap, the lock's expiry) while another party's reveal landed: done, not a failure.
        const at = await this.#o.reader.revealedAt(p.hash).catch(() => 0n);
        if (at !== 0n) {
          this.#revealed.set(p.hash, at);
          this.#o.log('info', 'preimage-revealed-already', { channelId: v.channelId, hash: p.hash, revealedAt: at });
        } else this.#retryLater(v, decodeChainError(e), 'reveal-failed');
      }
    }
  }

  /**
   * Settle a force-closed channel whose registration has locks, once its deadline has passed and every lock is
   * decided: with the held lock list when the registration is the held state, with none when its root is zero, else
   * with the list in the transaction that registered it (a state newer than the one held: the hub withheld its
   * signature from the device).
   */
  async #settle(held: WatchedChannel, c: OnChainChannel, v: DisputeView, now: bigint): Promise<void> {
    const zeroRoot = c.locksRoot === ZERO_ROOT;
    let locks: readonly Lock[];
    if (c.version === held.latest.state.version && c.locksRoot === held.latest.state.locksRoot)
      locks = held.locks ?? [];
    else if (zeroRoot) locks = [];
    else {
      try {
        locks = await getRegisteredLocks(this.#o.reader, c.channelId);
      } catch (e) {
        // UNKNOWN_LOCK: registered through a contract, not by a direct call; its parties settle it.
        if (!isTrickleError(e, 'UNKNOWN_LOCK')) this.#retryLater(v, e, 'check-failed');
        return;
      }
    }
    if (locks.length === 0 && !held.locks?.length) return; // no locks involved: settling is left to the parties
    for (const l of locks) {
      let at = this.#revealed.get(l.hash);
      if (at === undefined) {
        try {
          at = await this.#o.reader.revealedAt(l.hash);
        } catch (e) {
          this.#retryLater(v, e, 'check-failed');
          return;
        }
        if (at !== 0n) this.#revealed.set(l.hash, at);
      }
      if (lockOutcome(l, at, now) === 'pending') return; // settle reverts while a lock is undecided
    }
    try {
      const r = await this.#send(() => this.#o.writer.settle(c.channelId, { locks, replace: this.#replace() }));
      v.outcome = 'settled';
      v.status = 'closed';
      v.failures = 0;
      v.lastTx = r.hash;
      this.#o.log('info', 'settled', {
        channelId: c.channelId,
        version: c.version,
        locks: locks.length,
        payoutDevice: r.closed.devicePayout,
        payoutHub: r.closed.hubPayout,
        tx: r.hash,
      });
    } catch (e) {
      const err = decodeChainError(e);
      const revert = err.code === 'CHAIN_REVERTED' ? String(err.details['error']) : undefined;
      if (revert === 'ChannelNotClosing')
        v.status = 'closed'; // someone settled it meanwhile
      else this.#retryLater(v, err, 'settle-failed');
    }
  }

  async #acquire(): Promise<void> {
    if (this.#active < this.#o.maxConcurrentChecks) {
      this.#active++;
      return;
    }
    await new Promise<void>((resolve) => this.#waiting.push(resolve));
  }

  #release(): void {
    const next = this.#waiting.shift();
    if (next)
      next(); // the slot passes on
    else this.#active--;
  }

  #viewOf(channelId: ChannelId): DisputeView {
    let v = this.#views.get(channelId);
    if (!v) {
      v = {
        channelId,
        status: 'unknown',
        registeredVersion: 0n,
        deadline: 0n,
        heldVersion: this.#o.held(channelId)?.latest.state.version ?? 0n,
        chainTime: 0n,
        lastChecked: 0,
        challenges: 0,
        reveals: 0,
        failures: 0,
      };
      this.#views.set(channelId, v);
    }
    return v;
  }

  #retryLater(v: DisputeView, err: unknown, event: string): void {
    v.failures++;
    v.lastError = describeError(err)['message'] as string | undefined;
    const delay = Math.min(this.#o.retryMaxMs, this.#o.retryInitialMs * 2 ** Math.min(v.failures - 1, 20));
    this.#o.log('warn', event, {
      channelId: v.channelId,
      attempt: v.failures,
      retryInMs: delay,
      deadline: v.deadline || undefined,
      err,
    });
    if (this.#stopped) return;
    const timer = setTimeout(() => {
      this.#timers.delete(v.channelId);
      this.trigger(v.channelId);
    }, delay);
    timer.unref();
    this.#timers.set(v.channelId, timer);
  }

  async #checkOnce(channelId: ChannelId): Promise<void> {
    const held = this.#o.held(channelId);
    if (!held) return;
    const v = this.#viewOf(channelId);
    v.heldVersion = held.latest.state.version;
    let c;
    let now: bigint;
    try {
      const [channel, block] = await Promise.all([
        this.#o.reader.getChannel(channelId),
        this.#o.provider.getBlock('latest'),
      ]);
      if (block === null) throw new TrickleError('INTERNAL', 'the node returned no latest block');
      c = channel;
      now = BigInt(block.timestamp);
    } catch (err) {
      // Keep trying while a dispute may be running; an open channel is checked again on its next event anyway.
      if (v.status === 'closing' || v.status === 'unknown') this.#retryLater(v, err, 'check-failed');
      return;
    }
    v.status = c.status;
    v.chainTime = now;
    v.lastChecked = Date.now();
    const seen = this.#closeSeen.get(channelId);
    if (seen !== undefined && c.status === 'open' && now < seen) {
      // An event showed a force close whose deadline is ahead, yet the node reads the channel open: it is behind (a
      // load-balanced endpoint), or a reorg removed the close. Read again until that deadline rather than stand down.
      this.#retryLater(
        v,
        new TrickleError('INTERNAL', 'the node reads the channel open after a force close event'),
        'check-failed',
      );
      return;
    }
    this.#closeSeen.delete(channelId);
    if (c.status !== 'closing') {
      if (c.status === 'closed' && v.outcome !== 'closed' && v.outcome !== 'settled')
        this.#o.log('info', 'channel-closed', { channelId });
      if (c.status === 'closed' && v.outcome !== 'settled') v.outcome = 'closed';
      v.failures = 0;
      if (c.status === 'open') await this.#revealDue(held, v, now, false);
      return;
    }
    v.registeredVersion = c.version;
    v.deadline = c.deadline;
    if (c.locksRoot === ZERO_ROOT) this.#lockedRegistration.delete(channelId);
    else this.#lockedRegistration.add(channelId);
    // A lock pays its payee only if its preimage is known on-chain by its expiry, whatever state ends up registered.
    // The reveals go out beside the answer to the close, not before it: they are sent one at a time, and a hub that
    // routed many tiny locks to the device (never countersigning their claims) would hold the challenge past the
    // deadline behind them.
    const reveals = this.#revealDue(held, v, now, true);
    try {
      await this.#answerClose(held, c, v, now, reveals);
    } finally {
      await reveals;
    }
  }

  /**
   * A channel closing on-chain: challenge a registered state older than the one held, or settle after the deadline —
   * that once the `reveals` under way are done (the adjudicator settles a lock by its preimage on-chain).
   */
  async #answerClose(
    held: WatchedChannel,
    c: OnChainChannel,
    v: DisputeView,
    now: bigint,
    reveals: Promise<void>,
  ): Promise<void> {
    const channelId = v.channelId;
    const version = held.latest.state.version;
    if (!challengeWith(held.latest, c.version)) {
      if (v.outcome !== 'challenged' || version < c.version) v.outcome = 'current';
      if (now >= c.deadline) {
        await reveals;
        await this.#settle(held, c, v, now);
      } else v.failures = 0;
      return;
    }
    if (now >= c.deadline) {
      if (v.outcome !== 'missed')
        this.#o.log('error', 'deadline-missed', {
          channelId,
          registered: c.version,
          held: version,
          deadline: c.deadline,
        });
      v.outcome = 'missed';
      return;
    }
    this.#o.log('warn', 'challenging', {
      channelId,
      registered: c.version,
      held: version,
      deadline: c.deadline,
      secondsLeft: c.deadline - now,
    });
    try {
      // Not behind the other transactions: see #send.
      const r = await this.#send(
        () => this.#o.writer.challenge(held.latest, { locks: held.locks, replace: this.#replace() }),
        false,
      );
      v.challenges++;
      v.failures = 0;
      v.lastError = undefined;
      v.lastTx = r.hash;
      v.outcome = 'challenged';
      v.registeredVersion = r.challenged.version;
      this.#o.log('info', 'challenge-mined', {
        channelId,
        version: r.challenged.version,
        replaced: c.version,
        tx: r.hash,
        block: r.blockNumber,
        gasUsed: r.gasUsed,
      });
    } catch (e) {
      const err = decodeChainError(e);
      const revert = err.code === 'CHAIN_REVERTED' ? String(err.details['error']) : undefined;
      if (revert === 'StaleVersion' || revert === 'ChannelNotClosing') {
        // Someone registered as new a state, or the channel settled, meanwhile: read it again shortly.
        this.#retryLater(v, err, 'challenge-superseded');
      } else if (revert !== undefined && FINAL_REVERTS.has(revert)) {
        v.outcome = revert === 'ChallengePeriodOver' ? 'missed' : 'invalid';
        v.lastError = err.shortMessage;
        this.#o.log('error', v.outcome === 'missed' ? 'deadline-missed' : 'challenge-invalid', {
          channelId,
          held: version,
          err,
        });
      } else {
        this.#retryLater(v, err, 'challenge-failed');
      }
    }
  }

  /**
   * A transaction from the sender, bounded by `txTimeoutMs` unless sent with replace-by-fee (that send ends by itself:
   * mined, deadline, fee cap). Reveals and settles go one at a time (`queued`): the next one takes the nonce of a copy
   * the previous one gave up on rather than queue behind it. Challenges do not wait in that line, nor for each other:
   * one at a time, each awaited until mined, only one gets into each block, and a flood of stale force closes in one
   * block (a hub closing many guarded channels at once) would outnumber the blocks of the challenge period. They take
   * consecutive nonces (`sendTx` hands them out one at a time) and are mined together.
   */
  #send<T>(fn: () => Promise<T>, queued = true): Promise<T> {
    if (!queued) return this.#bounded(fn);
    const run = this.#sendLock.then(() => this.#bounded(fn));
    this.#sendLock = run.catch(() => {});
    return run;
  }

  /**
   * `fn`'s transaction, bounded by `txTimeoutMs` unless sent with replace-by-fee. The caller is told `TIMEOUT` and
   * tries again; how the transaction ends after that is logged (`tx-mined-late`, `tx-failed-late`), not dropped.
   */
  #bounded<T>(fn: () => Promise<T>): Promise<T> {
    const tx = fn();
    if (this.#o.replace !== undefined) return tx;
    let timer: NodeJS.Timeout | undefined;
    let late = false;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        late = true;
        reject(new TrickleError('TIMEOUT', `transaction not mined within ${this.#o.txTimeoutMs} ms`));
      }, this.#o.txTimeoutMs);
    });
    tx.then(
      () => late && this.#o.log('info', 'tx-mined-late', {}),
      (err: unknown) => late && this.#o.log('warn', 'tx-failed-late', { err }),
    );
    return Promise.race([tx, timeout]).finally(() => clearTimeout(timer));
  }
}

/** The `k` entries of `items` with the smallest `due`, earliest first. */
function earliest<T extends { readonly due: number }>(items: readonly T[], k: number): T[] {
  if (k * 16 >= items.length) return [...items].sort((a, b) => a.due - b.due).slice(0, k);
  // One pass keeping the k earliest: k is small beside items (a poll's share of thousands of channels).
  const out: T[] = [];
  for (const item of items) {
    if (out.length === k && item.due >= out[k - 1]!.due) continue;
    let i = out.length;
    while (i > 0 && out[i - 1]!.due > item.due) i--;
    out.splice(i, 0, item);
    if (out.length > k) out.pop();
  }
  return out;
}
