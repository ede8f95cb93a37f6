import { randomUUID } from 'node:crypto';
import { TrickleError, isTrickleError } from '@trickle/protocol/errors';
import type { ChannelId } from '@trickle/protocol/types';
import type { Logger } from 'pino';
import type { ChannelTable } from './channels.js';
import type { HubChain } from './chain-watcher.js';
import type { Committer } from './committer.js';
import type { ChannelRecord, HubStore } from './store/types.js';

/**
 * The hub's liquidity policy: how much of its own money it keeps in each device's channel so that it can pay the
 * device (routed payments, market proceeds). Off when absent.
 */
export interface LiquidityOptions {
  /** Top the hub's spendable amount in a channel up to this when the channel opens or runs low. */
  readonly autoDeposit: bigint;
  /** The most the hub deposits under this policy in total, over its lifetime (kept in the store). */
  readonly budget: bigint;
  /** A channel whose hub-side spendable amount falls below this is topped up. Default: half of `autoDeposit`. */
  readonly lowWater?: bigint | undefined;
}

/** {@link LiquidityOptions} with defaults applied. */
export type ResolvedLiquidity = Required<{ [K in keyof LiquidityOptions]: NonNullable<LiquidityOptions[K]> }>;

/**
 * Apply defaults and validate once.
 * @throws TrickleError('INVALID_ARGUMENT') naming the bad option
 */
export function resolveLiquidity(o: LiquidityOptions): ResolvedLiquidity {
  for (const [k, v] of Object.entries({ autoDeposit: o.autoDeposit, budget: o.budget, lowWater: o.lowWater ?? 0n })) {
    if (typeof v !== 'bigint' || v < 0n)
      throw new TrickleError('INVALID_ARGUMENT', `liquidity ${k} must be a non-negative bigint`, {
        details: { [k]: String(v) },
      });
  }
  const lowWater = o.lowWater ?? o.autoDeposit / 2n;
  if (o.autoDeposit === 0n) throw new TrickleError('INVALID_ARGUMENT', 'liquidity autoDeposit must be positive');
  if (lowWater > o.autoDeposit)
    throw new TrickleError('INVALID_ARGUMENT', 'liquidity lowWater must not exceed autoDeposit', {
      details: { lowWater, autoDeposit: o.autoDeposit },
    });
  return { autoDeposit: o.autoDeposit, budget: o.budget, lowWater };
}

/**
 * What the hub can still pay the device in this channel: its deposit plus what the device paid it, less what it
 * has paid or offered (an outstanding proposal counts as paid).
 */
export function hubSpendable(record: ChannelRecord): bigint {
  const latest = record.latest.state;
  const offered =
    record.outgoing && record.outgoing.state.paidByHub > latest.paidByHub
      ? record.outgoing.state.paidByHub
      : latest.paidByHub;
  // Money the hub has locked toward the device is not spendable until the lock is claimed or expires.
  const locked =
    record.outgoing && record.outgoing.state.lockedByHub > latest.lockedByHub
      ? record.outgoing.state.lockedByHub
      : latest.lockedByHub;
  return record.funding.hub + latest.paidByDevice - offered - locked;
}

/**
 * Store key of what the policy had deposited before each deposit got its own reservation key: read as part of what is
 * spent, never written (a store from an earlier version keeps it).
 */
export const LIQUIDITY_SPENT_KEY = 'liquidity/spent';

/**
 * Store key prefix of the policy's reservations of its budget, one per deposit (`liquidity/reserved/<channel
 * id>/<random>`, the amount as its value): what is spent is their sum (with {@link LIQUIDITY_SPENT_KEY}).
 */
export const LIQUIDITY_RESERVED_PREFIX = 'liquidity/reserved/';

/** How long a top-up waits for its mined deposit to be recorded in the channel before it goes on without. */
const RECORD_WAIT_MS = 5_000;

/** What the policy needs. */
export interface LiquidityDeps {
  /**
   * The channels. In a cluster, the view of those this process holds (`heldChannelsView`: `get` answers nothing for
   * the others): a record left here of a channel that moved on is stale, and the channel's holder tops it up.
   */
  readonly channels: ChannelTable;
  readonly chain: HubChain;
  readonly store: HubStore;
  readonly committer: Committer;
  readonly logger: Logger;
  /** A deposit was mined (for the dashboard). */
  readonly onDeposit?: ((channelId: ChannelId, amount: bigint) => void) | undefined;
  /** How long a top-up waits for its deposit to be recorded in the channel (default 5 s; tests shorten it). */
  readonly recordWaitMs?: number | undefined;
}

/**
 * Tops up the hub's side of the channels held here, one on-chain deposit at a time (one hub key sends them: in a
 * process its nonces never collide), within a budget that survives restarts and bounds every hub process on the store
 * together: each deposit's amount is reserved in the store before its transaction is sent and given back only when
 * the transaction failed, so a crash can under-use the budget but never exceed it.
 */
export class LiquidityPolicy {
  readonly #deps: LiquidityDeps;
  readonly #o: ResolvedLiquidity;
  readonly #wanted = new Set<ChannelId>();
  /** What is spent (by every process on the store), as last read, with this process's changes since. */
  #spent = 0n;
  /**
   * The hub's deposit in a channel after a deposit made here, while the channel's record may not show it yet (its
   * write waits: the lease moved, the store fails): the channel still looks low, and is not topped up again for it.
   */
  readonly #mined = new Map<ChannelId, bigint>();
  #running: Promise<void> | undefined;
  #stopped = false;

  constructor(deps: LiquidityDeps, options: ResolvedLiquidity) {
    if (!deps.chain.deposit)
      throw new TrickleError(
        'INVALID_ARGUMENT',
        'the hub chain cannot deposit: auto-deposit needs a chain with deposit()',
      );
    this.#deps = deps;
    this.#o = options;
  }

  /** Load what was spent before a restart. */
  async restore(): Promise<void> {
    this.#spent = await this.#total();
  }

  /** Deposited under the policy so far, as last read from the store (including deposits in flight). */
  get spent(): bigint {
    return this.#spent;
  }

  /** What the budget still allows, as last read. */
  get remaining(): bigint {
    return this.#o.budget > this.#spent ? this.#o.budget - this.#spent : 0n;
  }

  /** Whether a channel is below the low-water mark and open. */
  low(record: ChannelRecord): boolean {
    return record.status === 'open' && !record.latest.state.isFinal && hubSpendable(record) < this.#o.lowWater;
  }

  /** Ask for a channel to be topped up (deduplicated; a channel not below the mark when its turn comes is skipped). */
  want(channelId: ChannelId): void {
    if (this.#stopped || this.remaining === 0n) return;
    this.#wanted.add(channelId);
    this.#running ??= this.#run().finally(() => (this.#running = undefined));
  }

  /** Check every channel held here (a timer calls this). */
  scan(): void {
    const { channels } = this.#deps;
    for (const r of channels.records()) if (this.low(r) && channels.get(r.channelId)) this.want(r.channelId);
  }

  /** Stop taking requests and wait for a deposit in flight. */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#wanted.clear();
    await this.#running;
  }

  async #run(): Promise<void> {
    while (this.#wanted.size > 0 && !this.#stopped) {
      const channelId = this.#wanted.values().next().value as ChannelId;
      this.#wanted.delete(channelId);
      const record = this.#deps.channels.get(channelId);
      if (!record || !this.low(record)) continue;
      const mined = this.#mined.get(channelId);
      if (mined !== undefined) {
        if (record.funding.hub < mined) continue;
        this.#mined.delete(channelId);
      }
      const need = this.#o.autoDeposit - hubSpendable(record);
      const amount = need < this.remaining ? need : this.remaining;
      if (amount <= 0n) continue;
      try {
        await this.#topUp(record, amount);
      } catch (e) {
        this.#deps.logger.error(
          { err: e, channelId, amount: String(amount), code: isTrickleError(e) ? e.code : undefined },
          'liquidity deposit failed',
        );
      }
    }
  }

  async #topUp(record: ChannelRecord, amount: bigint): Promise<void> {
    const { channelId } = record;
    const key = await this.#reserve(channelId, amount);
    if (key === undefined) return;
    if (!this.#deps.channels.get(channelId)) {
      // The lease moved while the budget was read: the channel's new holder tops it up if it needs it.
      await this.#release(key, amount);
      return;
    }
    let total: bigint;
    try {
      total = await this.#deps.chain.deposit!(channelId, record.params.token, amount);
    } catch (e) {
      await this.#release(key, amount);
      throw e;
    }
    this.#mined.set(channelId, total);
    await this.#record(channelId, total);
    this.#deps.logger.info(
      {
        channelId,
        device: record.params.device,
        amount: String(amount),
        hubDeposit: String(total),
        budgetLeft: String(this.remaining),
      },
      'liquidity: hub deposited into a channel',
    );
    this.#deps.onDeposit?.(channelId, amount);
  }

  /** What is spent: every reservation in the store, whichever process made it. */
  async #total(): Promise<bigint> {
    let total = BigInt((await this.#deps.store.getMeta(LIQUIDITY_SPENT_KEY)) ?? '0');
    for (const { value } of await this.#deps.store.loadMetaPrefix(LIQUIDITY_RESERVED_PREFIX)) total += BigInt(value);
    return total;
  }

  /**
   * Reserve `amount` of the budget against every hub process on the store: the reservation is made durable first,
   * then all of them are read and summed. Of reservations made at the same time by several processes, the one read
   * last sees them all (each was durable before its own process read), so the reservations that go ahead never sum
   * past the budget; one whose read finds the budget overrun is given back (both may be, and are tried again at a
   * later scan). The store's interface suffices (a meta write, a prefix read), on LMDB as on PostgreSQL. A crash
   * between the reservation and the transaction, or a reservation that cannot be given back, leaves it counted: the
   * budget is under-used, never exceeded.
   * @returns the reservation's key, or undefined when the budget has no room for it
   */
  async #reserve(channelId: ChannelId, amount: bigint): Promise<string | undefined> {
    const key = `${LIQUIDITY_RESERVED_PREFIX}${channelId}/${randomUUID()}`;
    // A commit whose outcome is unknown may have landed: it is left counted.
    await this.#deps.committer.write([{ kind: 'meta', key, value: String(amount) }]);
    let total: bigint;
    try {
      total = await this.#total();
    } catch (e) {
      this.#spent += amount;
      await this.#release(key, amount);
      throw e;
    }
    this.#spent = total;
    if (total <= this.#o.budget) return key;
    await this.#release(key, amount);
    this.#deps.logger.info(
      { channelId, amount: String(amount), spent: String(this.#spent), budget: String(this.#o.budget) },
      'liquidity: the budget has no room for this deposit (spent by other hub processes)',
    );
    return undefined;
  }

  /** Give back a reservation whose deposit was not made. One that cannot be given back stays counted as spent. */
  async #release(key: string, amount: bigint): Promise<void> {
    try {
      await this.#deps.committer.write([{ kind: 'deleteMeta', key }]);
      this.#spent -= amount;
    } catch (e) {
      this.#deps.logger.error(
        { err: e, key, amount: String(amount) },
        'liquidity: the budget reserved for a deposit not made could not be given back: it stays counted as spent',
      );
    }
  }

  /**
   * Record a mined deposit in its channel now, so that routing can use it at once (the chain follower records the
   * same total when it sees the event). Waited for a while only: a write this process may no longer make (the lease
   * moved; the commit is fenced and the channel waits for a thaw that does not come here) must not stop the policy
   * for every other channel.
   */
  async #record(channelId: ChannelId, total: bigint): Promise<void> {
    const { channels, logger } = this.#deps;
    const now = channels.get(channelId);
    if (!now) {
      logger.warn(
        { channelId, hubDeposit: String(total) },
        'liquidity: deposited into a channel no longer held here: its holder records the deposit',
      );
      return;
    }
    if (total <= now.funding.hub) return;
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<'late'>(
      (r) => (timer = setTimeout(() => r('late'), this.#deps.recordWaitMs ?? RECORD_WAIT_MS)),
    );
    const outcome = await Promise.race([
      channels.onChain(channelId, { funding: { ...now.funding, hub: total } }).then(
        () => 'recorded' as const,
        (e: unknown) => ({ failed: e }),
      ),
      late,
    ]);
    clearTimeout(timer);
    if (outcome === 'recorded') return;
    logger.error(
      {
        channelId,
        hubDeposit: String(total),
        ...(outcome === 'late' ? {} : { err: outcome.failed }),
      },
      'liquidity: a mined deposit is not recorded in its channel (its write was refused or waits: the channel’s lease moved, or the store fails); the chain follower of the channel’s holder records it',
    );
  }
}
