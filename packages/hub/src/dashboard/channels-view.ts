import { TrickleError } from '@trickle/protocol/errors';
import type { ChannelRecord } from '../store/types.js';

/** One channel as the dashboard's table and `/api/channels` show it. Amounts are decimal strings (uint256). */
export interface ChannelRow {
  readonly channelId: string;
  readonly device: string;
  readonly token: string;
  readonly depositDevice: string;
  readonly depositHub: string;
  /** What the device would get if the channel settled on its latest state: deposit − paid + received. */
  readonly balanceDevice: string;
  readonly balanceHub: string;
  readonly version: string;
  readonly status: 'open' | 'closing' | 'closed' | 'final';
  readonly connected: boolean;
  /** Unix ms of the last frame about this channel since the hub started, or null. */
  readonly lastActivity: number | null;
}

/** Columns `/api/channels` sorts by. */
export const SORT_KEYS = [
  'channelId',
  'device',
  'token',
  'depositDevice',
  'depositHub',
  'balanceDevice',
  'balanceHub',
  'version',
  'status',
  'lastActivity',
] as const;
export type SortKey = (typeof SORT_KEYS)[number];

/** A page request, validated by {@link parseChannelQuery}. */
export interface ChannelQuery {
  readonly sort: SortKey;
  readonly order: 'asc' | 'desc';
  /** 1-based. */
  readonly page: number;
  readonly pageSize: number;
  /** Only channels whose id, device or token contains this (lower-case hex), when set. */
  readonly q: string | undefined;
}

/** A page of channels. */
export interface ChannelPage {
  readonly total: number;
  readonly page: number;
  readonly pages: number;
  readonly pageSize: number;
  readonly sort: SortKey;
  readonly order: 'asc' | 'desc';
  readonly rows: readonly ChannelRow[];
}

export const MAX_PAGE_SIZE = 500;

/**
 * Read `sort`, `order`, `page`, `pageSize` and `q` from a query string, with defaults (lastActivity, desc, 1, 50).
 * @throws TrickleError('INVALID_ARGUMENT') on an unknown sort key, order, or a page out of range
 */
export function parseChannelQuery(params: URLSearchParams): ChannelQuery {
  const sort = (params.get('sort') ?? 'lastActivity') as SortKey;
  if (!SORT_KEYS.includes(sort))
    throw new TrickleError('INVALID_ARGUMENT', `unknown sort key ${sort}`, {
      details: { allowed: SORT_KEYS.join(',') },
    });
  const order = params.get('order') ?? 'desc';
  if (order !== 'asc' && order !== 'desc') throw new TrickleError('INVALID_ARGUMENT', 'order must be asc or desc');
  const page = Number(params.get('page') ?? '1');
  const pageSize = Number(params.get('pageSize') ?? '50');
  if (!Number.isSafeInteger(page) || page < 1)
    throw new TrickleError('INVALID_ARGUMENT', 'page must be a positive integer');
  if (!Number.isSafeInteger(pageSize) || pageSize < 1 || pageSize > MAX_PAGE_SIZE)
    throw new TrickleError('INVALID_ARGUMENT', `pageSize must be 1..${MAX_PAGE_SIZE}`);
  const q = params.get('q')?.toLowerCase() || undefined;
  return { sort, order, page, pageSize, q };
}

interface Keyed {
  readonly record: ChannelRecord;
  readonly key: bigint | number | string;
}

function statusOf(r: ChannelRecord): ChannelRow['status'] {
  return isFinalRecord(r) ? 'final' : r.status;
}

/**
 * Whether a channel has a final state and is not closed on-chain yet: the final state both signed, or one the hub
 * signed first whose countersignature the device has not sent back (the hub takes nothing more on it: closing, its
 * signed version above its latest, no proposal of its own outstanding).
 */
export function isFinalRecord(r: ChannelRecord): boolean {
  if (r.status === 'closed') return false;
  if (r.latest.state.isFinal) return true;
  return r.status === 'closing' && r.outgoing === undefined && r.hubSignedVersion > r.latest.state.version;
}

function sortKey(
  r: ChannelRecord,
  key: SortKey,
  lastActivity: (r: ChannelRecord) => number | undefined,
): bigint | number | string {
  const s = r.latest.state;
  switch (key) {
    case 'channelId':
      return r.channelId;
    case 'device':
      return r.params.device.toLowerCase();
    case 'token':
      return r.params.token.toLowerCase();
    case 'depositDevice':
      return r.funding.device;
    case 'depositHub':
      return r.funding.hub;
    case 'balanceDevice':
      return r.funding.device - s.paidByDevice + s.paidByHub;
    case 'balanceHub':
      return r.funding.hub - s.paidByHub + s.paidByDevice;
    case 'version':
      return s.version;
    case 'status':
      return statusOf(r);
    case 'lastActivity':
      return lastActivity(r) ?? -1;
  }
}

/** The row of one record. */
export function channelRow(r: ChannelRecord, connected: boolean, lastActivity: number | undefined): ChannelRow {
  const s = r.latest.state;
  return {
    channelId: r.channelId,
    device: r.params.device,
    token: r.params.token,
    depositDevice: String(r.funding.device),
    depositHub: String(r.funding.hub),
    balanceDevice: String(r.funding.device - s.paidByDevice + s.paidByHub),
    balanceHub: String(r.funding.hub - s.paidByHub + s.paidByDevice),
    version: String(s.version),
    status: statusOf(r),
    connected,
    lastActivity: lastActivity ?? null,
  };
}

/**
 * Sort and page channel records on the server: one key per record, one sort (ties by channel id), and rows built
 * only for the requested page — a page of 50 out of 10,000 channels builds 50 rows.
 */
export function pageChannels(
  records: Iterable<ChannelRecord>,
  q: ChannelQuery,
  view: { connected: (r: ChannelRecord) => boolean; lastActivity: (r: ChannelRecord) => number | undefined },
): ChannelPage {
  const keyed: Keyed[] = [];
  for (const record of records) {
    if (
      q.q &&
      !record.channelId.includes(q.q) &&
      !record.params.device.toLowerCase().includes(q.q) &&
      !record.params.token.toLowerCase().includes(q.q)
    )
      continue;
    keyed.push({ record, key: sortKey(record, q.sort, view.lastActivity) });
  }
  const dir = q.order === 'asc' ? 1 : -1;
  keyed.sort((a, b) =>
    a.key < b.key
      ? -dir
      : a.key > b.key
        ? dir
        : a.record.channelId < b.record.channelId
          ? -1
          : a.record.channelId > b.record.channelId
            ? 1
            : 0,
  );
  const pages = Math.max(1, Math.ceil(keyed.length / q.pageSize));
  const page = Math.min(q.page, pages);
  const rows = keyed
    .slice((page - 1) * q.pageSize, page * q.pageSize)
    .map(({ record }) => channelRow(record, view.connected(record), view.lastActivity(record)));
  return { total: keyed.length, page, pages, pageSize: q.pageSize, sort: q.sort, order: q.order, rows };
}
