import { TrickleError } from '@trickle/protocol/errors';
import type { Address, ChannelId } from '@trickle/protocol/types';
import type { ChannelRecord } from './store/types.js';

/**
 * Channel leases of one hub process in a cluster sharing one database (see `store/postgres.ts`). Each channel is
 * owned by one process at a time; the lease carries an epoch, and every write of the channel's record is checked,
 * inside the commit's transaction, against the epoch the writer holds (a fencing token). A process counts a lease
 * as held only until a safety margin before the database can consider it expired, so it stops committing, and
 * therefore stops acking or signing, for a channel before another process can take it over.
 *
 * The committer consults {@link ChannelLeases.epochOf} before each group commit (a channel write for a channel not
 * held fails with `STORE_FAILURE` without touching the database); the store repeats the check in the transaction.
 */
export interface ChannelLeases {
  /** This process's owner id in the lease table (unique per process start). */
  readonly owner: string;
  /** Lease time in milliseconds. */
  readonly leaseMs: number;
  /** The epoch held for a channel, while the lease is safely inside its term; `undefined` otherwise. */
  epochOf(channelId: ChannelId): bigint | undefined;
  /**
   * Take the lease of one channel: at once when nobody holds it (or its holder let it expire), else after waiting
   * up to `waitMs` for the holder's lease to lapse.
   * @returns the channel's stored record read after the takeover (undefined for a channel not stored yet), or
   * `held: true` with no record when this process's copy is current: it held the lease already, or held the epoch
   * just before the new one (its lease had only run out, nobody else took it)
   * @throws TrickleError('STORE_FAILURE') when another process still holds it after `waitMs`, or the database fails
   */
  acquire(
    channelId: ChannelId,
    device: Address,
    waitMs: number,
  ): Promise<{ held: true } | { held: false; record: ChannelRecord | undefined }>;
  /** The stored channels of a device (whoever holds them), for a process that has not loaded them yet. */
  channelsOfDevice(device: Address): Promise<ChannelId[]>;
  /** Give up leases (the device went elsewhere): another process may take them at once. */
  release(channelIds: readonly ChannelId[]): Promise<void>;
  /** Channels whose lease this process lost (renewal found another epoch or owner, or it ran out): called once per loss. */
  onLost(listener: (channelIds: ChannelId[]) => void): void;
  /** How many leases are held now. */
  held(): number;
  /** The channels whose lease is held now. */
  heldChannels(): ChannelId[];
  /** Whether the last renewal or lease query reached the database. */
  databaseReachable(): boolean;
  /**
   * The URL this process serves devices on, stored with every lease it takes from now on (operators find a
   * channel's owner by it). `createHub` sets it once it listens, so a process started on port 0 stores its bound port.
   */
  advertise(url: string): void;
}

/** The failure of a write refused for want of a lease: `STORE_FAILURE` with `details.fenced` naming the channels. */
export function fencedError(channelIds: readonly string[]): TrickleError {
  return new TrickleError(
    'STORE_FAILURE',
    'this hub process does not hold the lease of the channel it writes (fenced)',
    { details: { fenced: [...channelIds] } },
  );
}

/** The channel ids of a {@link fencedError}; `undefined` for any other error. */
export function fencedChannels(e: unknown): Set<string> | undefined {
  if (!(e instanceof TrickleError) || e.code !== 'STORE_FAILURE') return undefined;
  const f = e.details['fenced'];
  return Array.isArray(f) ? new Set(f as string[]) : undefined;
}
