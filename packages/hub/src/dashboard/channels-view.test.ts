import { describe, expect, it } from 'vitest';
import { isTrickleError } from '@trickle/protocol/errors';
import type { ChannelId } from '@trickle/protocol/types';
import type { ChannelRecord } from '../store/types.js';
import { pageChannels, parseChannelQuery } from './channels-view.js';

const hex = (n: number, bytes: number) => `0x${n.toString(16).padStart(bytes * 2, '0')}`;

/** A synthetic record: version, counters and deposits derived from `i` so that sort orders are known. */
function record(i: number): ChannelRecord {
  const channelId = hex(i + 1, 32) as ChannelId;
  return {
    params: { device: hex(0x1000 + (i % 97), 20), hub: hex(1, 20), token: hex(0xabc, 20) },
    channelId,
    funding: { device: 1_000_000n + BigInt(i), hub: BigInt(i % 10) * 1_000n },
    status: i % 50 === 0 ? 'closing' : 'open',
    latest: {
      state: {
        channelId,
        version: BigInt((i * 7919) % 10_007),
        paidByDevice: BigInt(i),
        paidByHub: 0n,
        round: 0n,
        isFinal: false,
      },
    },
    hubSignedVersion: 0n,
  } as unknown as ChannelRecord;
}

const view = { connected: () => false, lastActivity: (r: ChannelRecord) => Number(BigInt(r.channelId) % 1000n) };

describe('dashboard channel pages', () => {
  it('parses the query with defaults and refuses what it does not know', () => {
    expect(parseChannelQuery(new URLSearchParams())).toEqual({
      sort: 'lastActivity',
      order: 'desc',
      page: 1,
      pageSize: 50,
      q: undefined,
    });
    expect(parseChannelQuery(new URLSearchParams('sort=version&order=asc&page=3&pageSize=10&q=0xABC'))).toEqual({
      sort: 'version',
      order: 'asc',
      page: 3,
      pageSize: 10,
      q: '0xabc',
    });
    for (const bad of ['sort=secret', 'order=up', 'page=0', 'page=1.5', 'pageSize=501', 'pageSize=x']) {
      let err: unknown;
      try {
        parseChannelQuery(new URLSearchParams(bad));
      } catch (e) {
        err = e;
      }
      expect(isTrickleError(err, 'INVALID_ARGUMENT'), bad).toBe(true);
    }
  });

  it('sorts 10,000 channels on the server by any column (bigint-exact), pages them, and filters', () => {
    const records = Array.from({ length: 10_000 }, (_, i) => record(i));
    const all = pageChannels(
      records,
      parseChannelQuery(new URLSearchParams('sort=version&order=asc&pageSize=500')),
      view,
    );
    expect(all.total).toBe(10_000);
    expect(all.pages).toBe(20);
    expect(all.rows).toHaveLength(500);
    const versions = all.rows.map((r) => BigInt(r.version));
    expect(versions).toEqual([...versions].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)));

    // Walking every page in balanceDevice desc order visits every channel once, in order.
    const seen: bigint[] = [];
    const ids = new Set<string>();
    for (let page = 1; page <= 20; page++) {
      const p = pageChannels(
        records,
        parseChannelQuery(new URLSearchParams(`sort=balanceDevice&order=desc&pageSize=500&page=${page}`)),
        view,
      );
      for (const r of p.rows) {
        seen.push(BigInt(r.balanceDevice));
        ids.add(r.channelId);
      }
    }
    expect(ids.size).toBe(10_000);
    for (let k = 1; k < seen.length; k++) expect(seen[k - 1]! >= seen[k]!).toBe(true);

    // A page past the end is clamped to the last; rows carry exact decimal amounts.
    const last = pageChannels(
      records,
      parseChannelQuery(new URLSearchParams('sort=channelId&order=asc&page=99&pageSize=300')),
      view,
    );
    expect(last.page).toBe(34);
    expect(last.rows).toHaveLength(100);
    expect(last.rows[99]!.channelId).toBe(hex(10_000, 32));
    const r0 = pageChannels([record(41)], parseChannelQuery(new URLSearchParams()), view).rows[0]!;
    expect(r0).toMatchObject({
      depositDevice: '1000041',
      depositHub: '1000',
      balanceDevice: String(1_000_041 - 41),
      balanceHub: String(1_000 + 41),
      status: 'open',
    });

    // Filter by device.
    const dev = hex(0x1000 + 5, 20);
    const mine = pageChannels(records, parseChannelQuery(new URLSearchParams(`q=${dev}&pageSize=500`)), view);
    expect(mine.total).toBe(records.filter((r) => r.params.device === dev).length);
    expect(mine.rows.every((r) => r.device === dev)).toBe(true);
  });
});
