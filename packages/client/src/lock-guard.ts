/**
 * The device's on-chain guard, run by `TrickleClient` from its store's channels, from the start of `connect()` (while
 * the hub is unreachable too) until `disconnect()` or a failed `connect()`:
 * - a lock the hub pays this device, whose preimage the device showed (stored in the channel's record) but which is
 *   still pending `revealMarginSeconds` before its expiry by the chain's clock (the hub withholds the countersignature
 *   of the claim, or has vanished), or pending in a channel being force-closed, is revealed on-chain
 *   (`reveal(preimage)`), so that settlement pays it to the device;
 * - every channel in which an older state would cost the device something is read on-chain: its latest fully signed
 *   state has pending locks or `paidByHub > 0` (a credit, a routed payment, market proceeds, a claimed lock), or this
 *   client already started its close. A force close (by either side) that registered an older state is challenged
 *   with the latest one and its locks, and the channel is marked closing (no more payments). Once the deadline has
 *   passed, a registration with locks is settled with its lock list once every lock is decided (revealed in time, or
 *   expired); a registration without locks is settled when the channel's record says it is being force-closed (the
 *   device's own `client.close()` falling back to a force close, or one the guard answered — recorded before the
 *   transaction, so a client restarted during the challenge period settles it too) or the guard answered it in this
 *   run, and nobody settled it yet: the device gets its money back without its caller having to come back for it.
 * Cost: one `chainTime` per pass and one `readChannel` per watched channel per `pollMs`, until the channel is seen
 * closed or its settlement is left to the parties; a device whose channels only paid the hub costs nothing.
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
  /**
   * How often the watched channels (pending locks, `paidByHub > 0`, or a close started) are read on-chain (ms): one
   * `readChannel` per watched channel per pass.
   */
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

const ZERO_ROOT = /^0x0{64}$/;

/**
 * Whether an older state than `r.latest` could cost this device: it holds pending locks, was paid by the hub, or its
 * close was started. A channel that only paid the hub is not read: an older state pays the device more.
 */
function watched(r: DeviceChannelRecord): boolean {
  return (r.locks?.length ?? 0) > 0 || r.latest.state.paidByHub > 0n || r.closing !== undefined;
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
): { pass(): Promise<void>; start(): void; stop(): Promise<void> } {
  const margin = BigInt(options.revealMarginSeconds ?? LOCK_GUARD_DEFAULTS.revealMarginSeconds);
  const pollMs = options.pollMs ?? LOCK_GUARD_DEFAULTS.pollMs;
  /** Channels seen closed on-chain, or whose settlement is left to the parties: not read again. */
  const done = new Set<ChannelId>();
  /** Force closes the guard answered in this run (it challenged, or the close was not this client's): it settles them. */
  const disputes = new Set<ChannelId>();
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
    const id = ch.record.channelId;
    if (done.has(id)) return;
    const onChain = await chain.readChannel(id);
    // The record as of after the read: a close this client sent was marked in it before its transaction left.
    const r = ch.record;
    const locks = r.locks ?? [];
    if (onChain.status === 'closed') {
      done.add(id);
      return;
    }
    const closing = onChain.status === 'closing';
    if (closing && r.closing !== 'force') {
      disputes.add(id); // a force close this client did not send (the hub's): the guard sees it through
      await ch.markClosing('force'); // no more payments
    }
    // Reveal what this device claimed and the hub has not countersigned, in time by the chain's clock.
    const revealed = new Map<Bytes32, bigint>();
    for (const p of r.preimages ?? []) {
      const lock = locks.find((l) => l.hash === p.hash && l.payer === 'hub');
      if (!lock || !revealDue(lock, now, closing, margin)) continue;
      let at = await chain.revealedAt(p.hash);
      if (at === 0n) {
        try {
          at = (await chain.reveal(p.preimage)).revealedAt;
          report({ type: 'revealed', channelId: id, hash: p.hash, revealedAt: at });
        } catch (e) {
          fail(id, 'reveal', e);
          continue;
        }
      }
      revealed.set(p.hash, at);
    }
    if (!closing) return;
    const latest = r.latest;
    if (onChain.version < latest.state.version && now < onChain.deadline) {
      disputes.add(id);
      try {
        await chain.challenge(latest, locks);
        report({ type: 'challenged', channelId: id, version: latest.state.version });
      } catch (e) {
        fail(id, 'challenge', e);
      }
      return; // settle on a later pass, against the new registration
    }
    if (now < onChain.deadline) return;
    // The registration is final now. Its lock list is this device's when it is the latest state (whoever registered
    // it); a lock-free one is settled for a force close on record (the device's own, or one the guard answered, also
    // before a restart) or answered in this run.
    const latestRegistered = onChain.version === latest.state.version && onChain.locksRoot === latest.state.locksRoot;
    let settleLocks: readonly Lock[];
    if (latestRegistered && locks.length > 0) settleLocks = locks;
    else if ((disputes.has(id) || r.closing === 'force') && (latestRegistered || ZERO_ROOT.test(onChain.locksRoot)))
      settleLocks = [];
    else {
      // Left to the parties. Without locks nothing is left for this guard to do; with locks, reveals are still its own.
      if (locks.length === 0) done.add(id);
      return;
    }
    for (const l of settleLocks) {
      const at = revealed.get(l.hash) ?? (await chain.revealedAt(l.hash));
      if (lockOutcome(l, at, now) === 'pending') return; // settle reverts while a lock is undecided
    }
    try {
      const { hash } = await chain.settle(id, settleLocks);
      done.add(id);
      report({ type: 'settled', channelId: id, hash });
    } catch (e) {
      // Someone else settled it meanwhile; any other failure is reported and the settle retried on the next pass.
      if (isTrickleError(e, 'CHAIN_REVERTED') && e.details['error'] === 'ChannelNotClosing') done.add(id);
      else fail(id, 'settle', e);
    }
  }

  async function pass(): Promise<void> {
    const todo = channels().filter((c) => !done.has(c.record.channelId) && watched(c.record));
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
  const schedule = (ms: number) => {
    if (stopped) return;
    timer = setTimeout(() => void serial().then(next, next), ms);
    timer.unref?.();
  };
  const next = () => schedule(pollMs);

  return {
    /** One pass now (after the one running, if any). */
    pass: serial,
    /** Passes from now on: the first at once (a restarted device may be inside a lock's margin already). */
    start() {
      stopped = false;
      if (timer === undefined) schedule(0);
    },
    /** No more passes; resolves once the pass running, if any, is done (its transactions and writes). */
    stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
      timer = undefined;
      return queue;
    },
  };
}
