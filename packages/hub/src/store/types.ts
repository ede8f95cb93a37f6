import { parseJson, stringifyJson } from '@trickle/protocol/json';
import type { Address, Bytes32, ChannelId, ChannelParams, Funding, SignatureHex, SignedState, State } from '@trickle/protocol/types';

/** Where a channel is in its on-chain life. */
export type ChannelStatus = 'open' | 'closing' | 'closed';

/** A state the hub signed first and sent, not yet countersigned (a credit to the device). */
export interface OutgoingProposal {
  readonly state: State;
  readonly hubSig: SignatureHex;
  /** The routed payment or market round this credit delivers, if any. */
  readonly paymentId?: Bytes32 | undefined;
}

/** Everything the hub keeps about one channel. */
export interface ChannelRecord {
  readonly params: ChannelParams;
  readonly channelId: ChannelId;
  readonly funding: Funding;
  readonly status: ChannelStatus;
  /** Latest state both parties signed (the unsigned zero state before any update). */
  readonly latest: SignedState;
  /** Highest version the hub has ever signed on this channel: it never signs two states at one version. */
  readonly hubSignedVersion: bigint;
  readonly outgoing?: OutgoingProposal | undefined;
}

/** A routed payment: device `from` paid the hub to forward `amount` to device `to`. */
export interface RouteRecord {
  readonly paymentId: Bytes32;
  readonly from: Address;
  readonly to: Address;
  readonly fromChannel: ChannelId;
  readonly toChannel?: ChannelId | undefined;
  readonly amount: bigint;
  readonly status: 'pending' | 'delivered' | 'refunded';
}

/** Two different states signed at one version: kept as evidence, never acted on. */
export interface EvidenceRecord {
  readonly channelId: ChannelId;
  readonly version: bigint;
  readonly held: SignedState;
  readonly offered: { readonly state: State; readonly sig: SignatureHex };
  readonly at: number;
}

/** One write of a group commit. */
export type StoreWrite =
  | { readonly kind: 'channel'; readonly record: ChannelRecord }
  | { readonly kind: 'route'; readonly route: RouteRecord }
  | { readonly kind: 'evidence'; readonly evidence: EvidenceRecord }
  | { readonly kind: 'meta'; readonly key: string; readonly value: string }
  | { readonly kind: 'deleteMeta'; readonly key: string };

/**
 * The hub's durable store. `commit` applies a batch of writes atomically and resolves only once they are durable
 * (flushed to disk): the hub acks nothing before. Implementations: LMDB (embedded default); the interface is kept
 * small enough for a PostgreSQL store shared by several hub processes (per-channel row locks around `commit`).
 */
export interface HubStore {
  /** Every channel, for startup. */
  loadChannels(): Promise<ChannelRecord[]>;
  /** Every route not yet delivered or refunded, for recovery after a restart. */
  loadPendingRoutes(): Promise<RouteRecord[]>;
  /** Evidence of equivocation kept for a channel. */
  loadEvidence(channelId: ChannelId): Promise<EvidenceRecord[]>;
  getMeta(key: string): Promise<string | undefined>;
  /** Every meta entry whose key starts with `prefix`, in key order (market orders, escrows, clearings). */
  loadMetaPrefix(prefix: string): Promise<{ key: string; value: string }[]>;
  /** Apply writes atomically and durably. */
  commit(writes: readonly StoreWrite[]): Promise<void>;
  close(): Promise<void>;
}

// Records are stored as JSON with bigints as decimal strings: readable with any tool, and exact.

/** Serialise a record (bigint-safe). */
export function encodeRecord(value: unknown): Buffer {
  return Buffer.from(stringifyJson(value));
}

/** Parse a record written by {@link encodeRecord}. */
export function decodeRecord<T>(bytes: Uint8Array | string): T {
  return parseJson<T>(typeof bytes === 'string' ? bytes : Buffer.from(bytes).toString('utf8'));
}
