/**
 * Follows the adjudicator's dispute events (`ForceClosed`, `Challenged`, `Closed`) block range by block range from
 * a persisted cursor, only over blocks with `confirmations` blocks on top of them.
 *
 * Reorgs: the cursor keeps the hash of the last processed block. Before each step the follower reads that block
 * again; if its hash changed, the cursor rewinds `reorgDepth` blocks and the range is processed again (handling is
 * idempotent: every event only triggers a fresh read of the channel). A range is committed only if the hash of its
 * last block is the same before and after its logs were read, so logs and cursor come from one chain. Reorgs deeper
 * than `reorgDepth` are not detected: choose `confirmations` and `reorgDepth` for the chain.
 */
import type { Provider } from 'ethers';
import { queryEvents, type ChallengedEvent, type ClosedEvent, type ForceClosedEvent } from '@trickle/chain/events';
import type { Address } from '@trickle/protocol/types';
import type { BlockCursor } from './db.js';
import type { WatchLogger } from './log.js';

/** What the follower needs. */
export interface FollowerOptions {
  readonly provider: Provider;
  readonly adjudicator: Address;
  readonly confirmations: number;
  readonly reorgDepth: number;
  /** Most blocks per `eth_getLogs`. */
  readonly maxBlockRange: number;
  /**
   * The range in use, kept by the caller across steps: a failed `eth_getLogs` is retried at once over half the blocks
   * (down to one), and each range read doubles it again up to `maxBlockRange`. A node that limits the range (many
   * do, some to a few hundred or fewer blocks) would otherwise fail every read of a follower that fell behind by more
   * (an outage), which then never reads the force closes made meanwhile. Without it, every step uses `maxBlockRange`.
   */
  readonly range?: { size: number } | undefined;
  readonly cursor: () => BlockCursor | undefined;
  readonly setCursor: (c: BlockCursor) => Promise<void>;
  /** Called for each dispute event, in chain order (also for channels not watched: filter there). */
  readonly onEvent: (e: ForceClosedEvent | ChallengedEvent | ClosedEvent) => void;
  readonly log: WatchLogger;
}

/** Result of one {@link followStep}. */
export interface FollowStep {
  /** Highest block with enough confirmations. */
  readonly safe: number;
  /** The cursor after the step. */
  readonly cursor: BlockCursor;
  /** Whether blocks remain between the cursor and `safe`. */
  readonly behind: boolean;
}

/**
 * Start following at `startAt` (default: the safe head) when there is no cursor yet; nothing before it matters,
 * since watched channels are also checked with `getChannel` when they are added and at startup.
 * @param o - options
 * @param safe - the highest block with enough confirmations (read from the node when not given)
 * @returns the cursor (the existing one, if any)
 */
export async function initCursor(o: FollowerOptions, safe?: number, startAt?: number): Promise<BlockCursor> {
  const existing = o.cursor();
  if (existing) return existing;
  const top = safe ?? (await o.provider.getBlockNumber()) - o.confirmations;
  const block = Math.max(-1, Math.min(startAt ?? top, top));
  const cursor = { block, hash: (await hashOf(o.provider, block)) ?? '' };
  await o.setCursor(cursor);
  o.log('info', 'cursor-initialised', { block });
  return cursor;
}

async function hashOf(provider: Provider, block: number): Promise<string | undefined> {
  if (block < 0) return '';
  const b = await provider.getBlock(block);
  return b?.hash ?? undefined;
}

/**
 * Process at most one range of blocks.
 * @param o - options
 * @param startAt - where to start when there is no cursor yet (see {@link initCursor})
 * @returns where the follower is
 * @throws whatever the provider throws (the caller logs and tries again on its next poll)
 */
export async function followStep(o: FollowerOptions, startAt?: number): Promise<FollowStep> {
  const head = await o.provider.getBlockNumber();
  const safe = head - o.confirmations;
  let cursor = o.cursor() ?? (await initCursor(o, safe, startAt));

  // Reorg detection: the last processed block must still be on the chain with the same hash.
  if (cursor.block >= 0) {
    const now = cursor.block <= head ? await hashOf(o.provider, cursor.block) : undefined;
    if (now !== cursor.hash) {
      // At least one block back: the cursor's own block changed, and its events (a force close moved into it) are new.
      const block = Math.max(-1, Math.min(cursor.block, safe) - Math.max(1, o.reorgDepth));
      const rewound = { block, hash: (await hashOf(o.provider, block)) ?? '' };
      o.log('warn', 'reorg', { block: cursor.block, oldHash: cursor.hash, newHash: now ?? null, rewindTo: block });
      await o.setCursor(rewound);
      cursor = rewound;
    }
  }

  const from = cursor.block + 1;
  let span = Math.max(1, Math.min(o.maxBlockRange, o.range?.size ?? o.maxBlockRange));
  if (Math.min(safe, from + span - 1) < from) return { safe, cursor, behind: false };
  let to: number;
  let before: string | undefined;
  let events;
  for (;;) {
    to = Math.min(safe, from + span - 1);
    before = await hashOf(o.provider, to);
    try {
      events = await queryEvents(o.provider, o.adjudicator, from, to, {
        names: ['ForceClosed', 'Challenged', 'Closed'],
      });
      break;
    } catch (err) {
      // The node may refuse the range as too large: try half of it, down to one block; then give up for this poll.
      if (o.range === undefined || to === from) throw err;
      span = Math.max(1, Math.floor((to - from + 1) / 2));
      o.range.size = span;
      o.log('warn', 'log-range-reduced', { from, to, blocks: span, err });
    }
  }
  if (o.range !== undefined && span === o.range.size) o.range.size = Math.min(o.maxBlockRange, span * 2);
  const after = await hashOf(o.provider, to);
  if (before === undefined || before !== after) {
    o.log('warn', 'reorg', { block: to, during: 'range read', from, to });
    return { safe, cursor, behind: true };
  }
  for (const e of events) {
    if (e.name === 'ForceClosed' || e.name === 'Challenged' || e.name === 'Closed') o.onEvent(e);
  }
  const next = { block: to, hash: after };
  await o.setCursor(next);
  return { safe, cursor: next, behind: to < safe };
}
