/**
 * The device's on-chain guard for conditional payments, run by `TrickleClient` while it is connected to a chain:
 * - a lock the hub pays this device, whose preimage the device showed (stored in the channel's record) but which is
 *   still pending `revealMarginSeconds` before its expiry by the chain's clock (the hub withholds the countersignature
 *   of the claim, or has vanished), or pending in a channel being force-closed, is revealed on-chain
 *   (`reveal(preimage)`), so that settlement pays it to the device;
 * - a channel with pending locks is read on-chain: a force close (by either side) that registered an older state is
 *   challenged with the latest one and its locks; once the deadline has passed and every lock is decided (revealed
 *   in time, or expired), a registration with locks is settled with its lock list (one without locks is left to the
 *   parties, as before).
 * Only channels with pending locks are read, so a device without any costs nothing.
 */
import { isTrickleError, TrickleError } from '@trickle/protocol/errors';
import { lockOutcome, revealDue, type Lock } from '@trickle/protocol/locks';
import type { Bytes32, ChannelId } from '@trickle/protocol/types';
import type { ClientChain } from './client.js';
import type { DeviceChannelRecord } from './store.js';

/** What the guard did or failed to do, for the application's log (the client logs nothing itself). */
export type LockGuardEvent =
  | { readonly type: 'revealed'; readonly channelId: ChannelId; readonly hash: Bytes32; readonly revealedAt: bigint }
  | { readonly type: 'challenged'; readonly channelId: ChannelId; readonly version: bigint }
  | { readonly type: 'settled'; readonly channelId: ChannelId; readonly hash: string }
  | { readonly type: 'failed'; readonly channelId: ChannelId; readonly action: string; readonly error: TrickleError };

/** Options of the device's lock guard (`ClientOptions.lockGuard`); defaults in {@link LOCK_GUARD_DEFAULTS}. */
export interface LockGuardOptions {
  /** Reveal a claimed lock's preimage on-chain when it is still pending this many seconds before its expiry. */
  readonly revealMarginSeconds?: number | undefined;
  /** How often channels with pending locks are read on-chain (ms). */
  readonly pollMs?: number | undefined;
  /** Told of every reveal, challenge, settle and failure. */
  readonly onEvent?: ((e: LockGuardEvent) => void) | undefined;
}

/** Every default of {@link LockGuardOptions}. */
export const LOCK_GUARD_DEFAULTS = { revealMarginSeconds: 60, pollMs: 5_000 } as const;

/** The chain operations the guard needs; a {@link ClientChain} without all of them runs no guard. */
type GuardChain = Required<
  Pick<ClientChain, 'forceClose' | 'reveal' | 'revealedAt' | 'chainTime' | 'readChannel' | 'challenge' | 'settle'>
>;

/** Whether `chain` offers everything the guard needs. */
export function canGuard(chain: ClientChain | undefined): chain is ClientChain & GuardChain {
  return (
    chain !== undefined &&
    [chain.reveal, chain.revealedAt, chain.chainTime, chain.readChannel, chain.challenge, chain.settle].every(
      (f) => typeof f === 'function',
    )
  );
}

/** One channel as the guard sees it, from the client. */
export interface GuardedChannel {
  readonly record: DeviceChannelRecord;
  /** Stop payments: the channel is being closed on-chain (by the hub). Resolves once durable. */
  markClosing(mode: 'force'): Promise<void>;
}

/**
 * The guard's passes over the client's channels (one at a time; transactions one at a time).
 * @param chain - the device's chain, with every optional operation
 * @param channels - the client's channels now
 * @param options - see {@link LockGuardOptions}
 */
export function lockGuard(
  chain: GuardChain,
  channels: () => readonly GuardedChannel[],
  options: LockGuardOptions = {},
): { pass(): Promise<void>; start(): void; stop(): void } {
  const margin = BigInt(options.revealMarginSeconds ?? LOCK_GUARD_DEFAULTS.revealMarginSeconds);
  const pollMs = options.pollMs ?? LOCK_GUARD_DEFAULTS.pollMs;
  const closed = new Set<ChannelId>();
  /** Passes run one after the other (one sender: no nonce races, no double reveal). */
  let queue: Promise<void> = Promise.resolve();
  let timer: ReturnType<typeof setTimeout> | undefined;
  let stopped = false;

  const report = (e: LockGuardEvent) => {
    try {
      options.onEvent?.(e);
    } catch {
      /* a listener's failure is not the guard's */
    }
  };
  const fail = (channelId: ChannelId, action: string, e: unknown) =>
    report({
      type: 'failed',
      channelId,
      action,
      error: isTrickleError(e) ? e : new TrickleError('INTERNAL', String(e), { cause: e }),
    });

  async function guardOne(ch: GuardedChannel, now: bigint): Promise<void> {
    const r = ch.record;
    const locks = r.locks ?? [];
    if (closed.has(r.channelId) || locks.length === 0) return;
    const onChain = await chain.readChannel(r.channelId);
    if (onChain.status === 'closed') {
      closed.add(r.channelId);
      return;
    }
    const closing = onChain.status === 'closing';
    if (closing && r.closing !== 'force') await ch.markClosing('force'); // the hub force-closed: no more payments
    // Reveal what this device claimed and the hub has not countersigned, in time by the chain's clock.
    const revealed = new Map<Bytes32, bigint>();
    for (const p of r.preimages ?? []) {
      const lock = locks.find((l) => l.hash === p.hash && l.payer === 'hub');
      if (!lock || !revealDue(lock, now, closing, margin)) continue;
      let at = await chain.revealedAt(p.hash);
      if (at === 0n) {
        try {
          at = (await chain.reveal(p.preimage)).revealedAt;
          report({ type: 'revealed', channelId: r.channelId, hash: p.hash, revealedAt: at });
        } catch (e) {
          fail(r.channelId, 'reveal', e);
          continue;
        }
      }
      revealed.set(p.hash, at);
    }
    if (!closing) return;
    const latest = r.latest;
    if (onChain.version < latest.state.version && now < onChain.deadline) {
      try {
        await chain.challenge(latest, locks);
        report({ type: 'challenged', channelId: r.channelId, version: latest.state.version });
      } catch (e) {
        fail(r.channelId, 'challenge', e);
      }
      return; // settle on a later pass, against the new registration
    }
    if (now < onChain.deadline) return;
    // The registration is the latest state (whoever registered it): this device holds its lock list.
    let settleLocks: readonly Lock[];
    if (onChain.version === latest.state.version && onChain.locksRoot === latest.state.locksRoot) settleLocks = locks;
    else return; // no locks registered (the parties settle as before), or a list this device does not hold
    for (const l of settleLocks) {
      const at = revealed.get(l.hash) ?? (await chain.revealedAt(l.hash));
      if (lockOutcome(l, at, now) === 'pending') return; // settle reverts while a lock is undecided
    }
    try {
      const { hash } = await chain.settle(r.channelId, settleLocks);
      closed.add(r.channelId);
      report({ type: 'settled', channelId: r.channelId, hash });
    } catch (e) {
      fail(r.channelId, 'settle', e);
    }
  }

  async function pass(): Promise<void> {
    const todo = channels().filter((c) => !closed.has(c.record.channelId) && (c.record.locks?.length ?? 0) > 0);
    if (todo.length === 0) return;
    let now: bigint;
    try {
      now = await chain.chainTime();
    } catch (e) {
      for (const c of todo) fail(c.record.channelId, 'read', e);
      return;
    }
    for (const c of todo) {
      if (stopped) return;
      try {
        await guardOne(c, now);
      } catch (e) {
        fail(c.record.channelId, 'read', e);
      }
    }
  }

  const serial = (): Promise<void> => {
    const run = queue.then(pass);
    queue = run.catch(() => undefined);
    return run;
  };
  const schedule = () => {
    if (stopped) return;
    timer = setTimeout(() => void serial().then(schedule, schedule), pollMs);
    timer.unref?.();
  };

  return {
    /** One pass now (after the one running, if any). */
    pass: serial,
    start() {
      stopped = false;
      if (timer === undefined) schedule();
    },
    stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
      timer = undefined;
    },
  };
}
