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

const CHANNEL_KEYS = new Set(['params', 'channelId', 'funding', 'status', 'latest', 'hubSignedVersion', 'outgoing']);
const SIGNED_KEYS = new Set(['state', 'deviceSig', 'hubSig']);
const STATE_KEYS = ['channelId', 'version', 'paidByDevice', 'paidByHub', 'round', 'locksRoot', 'lockedByDevice', 'lockedByHub', 'isFinal'] as const;
const OUTGOING_KEYS = new Set(['state', 'hubSig', 'paymentId']);
/** `params` never change for a channel: their JSON is made once per params object. */
const paramsJson = new WeakMap<ChannelParams, string>();

const str = (v: string) => JSON.stringify(v);
const stateJson = (s: State) =>
  Object.keys(s).length === STATE_KEYS.length && STATE_KEYS.every((k) => k in s)
    ? `{"channelId":${str(s.channelId)},"version":"${s.version}","paidByDevice":"${s.paidByDevice}","paidByHub":"${s.paidByHub}","round":"${s.round}","locksRoot":${str(s.locksRoot)},"lockedByDevice":"${s.lockedByDevice}","lockedByHub":"${s.lockedByHub}","isFinal":${s.isFinal === true}}`
    : stringifyJson(s);

/**
 * A channel record as {@link encodeRecord} writes it, built directly (the hub writes one per accepted update, and
 * the generic replacer-based serialiser was ~5% of its event loop). Records of another shape take the generic path,
 * so nothing is ever dropped; the tests check both give the same record back.
 */
export function encodeChannelRecord(r: ChannelRecord): Buffer {
  const keys = Object.keys(r);
  if (!keys.every((k) => CHANNEL_KEYS.has(k)) || !Object.keys(r.latest).every((k) => SIGNED_KEYS.has(k)) || (r.outgoing && !Object.keys(r.outgoing).every((k) => OUTGOING_KEYS.has(k)))) {
    return encodeRecord(r);
  }
  let params = paramsJson.get(r.params);
  if (params === undefined) paramsJson.set(r.params, (params = stringifyJson(r.params)));
  const l = r.latest;
  const latest = `{"state":${stateJson(l.state)}${l.deviceSig !== undefined ? `,"deviceSig":${str(l.deviceSig)}` : ''}${l.hubSig !== undefined ? `,"hubSig":${str(l.hubSig)}` : ''}}`;
  const o = r.outgoing;
  const outgoing = o ? `,"outgoing":{"state":${stateJson(o.state)},"hubSig":${str(o.hubSig)}${o.paymentId !== undefined ? `,"paymentId":${str(o.paymentId)}` : ''}}` : '';
  return Buffer.from(
    `{"params":${params},"channelId":${str(r.channelId)},"funding":{"device":"${r.funding.device}","hub":"${r.funding.hub}"},"status":${str(r.status)},"latest":${latest},"hubSignedVersion":"${r.hubSignedVersion}"${outgoing}}`,
  );
}

/** Parse a record written by {@link encodeRecord}. */
export function decodeRecord<T>(bytes: Uint8Array | string): T {
  return parseJson<T>(typeof bytes === 'string' ? bytes : Buffer.from(bytes).toString('utf8'));
}
