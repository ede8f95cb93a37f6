import { describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { nobleSigner } from '@trickle/protocol/signer';
import { domainSeparator, stateDigest, trickleDomain } from '@trickle/protocol/eip712';
import type { Bytes32, ChannelId, SignedState } from '@trickle/protocol/types';
import { clusterWorld, sql } from './helpers/cluster-world.js';
import { RawDevice } from './helpers/raw-device.js';
import { specClaimRejectCodes } from './helpers/spec-claim.js';

/**
 * A `claim` in a cluster of `trickle-hub` processes on one PostgreSQL database, refused before the claim is handled
 * (while its process takes the channel's lease): answered with a `reject` naming the claim and its channel, as a single
 * hub answers (spec §4), not with an `error` frame, which names no channel — the device's client left it unpaired and
 * its claim() waited. And a frame naming another device's channel takes no lease: the process neither waits for the
 * holder's lease nor takes a free one (it kept it for as long as it ran, from the channel's own device).
 */
describe('hub cluster: a claim refused before it is handled', () => {
  const LEASE_MS = 1500;
  const DEPOSIT = 1_000_000n;
  const w = clusterWorld({ name: 'trickle-cluster-claim', accounts: 6, firstFunded: 2, leaseMs: LEASE_MS });
  const unlock = { hash: `0x${'11'.repeat(32)}` as Bytes32, preimage: `0x${'22'.repeat(32)}` as Bytes32 };
  const lease = async (url: string, channelId: ChannelId) =>
    (
      await sql<{ owner_url: string; epoch: string }>(
        url,
        'SELECT owner_url, epoch FROM trickle_leases WHERE channel_id = $1',
        [channelId],
      )
    )[0];

  /**
   * Device `account`'s channel (opened, paid once) and the device connected raw to the process that held it, synced;
   * then PostgreSQL is stopped and the lease left to run out there (no renewal reaches the database), so the next
   * frame needs it taken again, which fails: `fn` sends it. PostgreSQL is started again after.
   */
  async function leaseLapsed(
    account: number,
    fn: (raw: RawDevice, channelId: ChannelId, latest: SignedState) => Promise<void>,
  ): Promise<void> {
    const { url } = await w.startCluster();
    const c = await w.connect(url, account);
    const ch = await c.openChannel({ token: w.token, deposit: DEPOSIT });
    await ch.pay(5n);
    const { channelId } = ch;
    const owner = (await lease(url, channelId))!.owner_url;
    await c.disconnect();
    // The device again, straight to the process that held its channel: it takes the lease back and serves it.
    const raw = await RawDevice.connect(owner, nobleSigner(w.chain.accounts[account]!));
    try {
      raw.send({ t: 'sync', id: 2, channelId, latest: null });
      const synced = await raw.next((m) => m.id === 2, 10_000);
      if (synced.t !== 'sync' || !synced.latest) throw new Error(`no latest in ${JSON.stringify(synced.t)}`);
      await w.pg.stop();
      try {
        await new Promise((r) => setTimeout(r, LEASE_MS + 500));
        await fn(raw, channelId, synced.latest);
      } finally {
        await w.pg.start();
      }
    } finally {
      raw.close();
    }
  }

  it('the channel’s lease cannot be taken (the database is down): reject STORE_FAILURE with the claim’s id and channel', async () => {
    await leaseLapsed(2, async (raw, channelId) => {
      raw.send({ t: 'claim', id: 41, channelId, unlock });
      const answer = await raw.next((m) => m.id === 41, 15_000);
      // before: { t: 'error', id: 41, code: 'STORE_FAILURE' }
      expect(answer).toMatchObject({ t: 'reject', id: 41, channelId, code: 'STORE_FAILURE', latest: null });
      expect(specClaimRejectCodes(), "the claim row of the spec's message table").toContain('STORE_FAILURE');
      expect(raw.inbox.filter((m) => m.t === 'error' && m.id === 41)).toEqual([]);
    });
  });

  it('another device’s channel named in a claim: reject WRONG_CHANNEL, and its lease is neither waited for nor taken', async () => {
    const { url, ports } = await w.startCluster();
    const c = await w.connect(url, 3);
    const { channelId } = await c.openChannel({ token: w.token, deposit: DEPOSIT });
    const held = (await lease(url, channelId))!;
    const other = ports.map((p) => `ws://127.0.0.1:${p}/`).find((u) => u !== held.owner_url)!;
    const stranger = await RawDevice.connect(other, nobleSigner(`0x${randomBytes(32).toString('hex')}`));
    try {
      // Held by a live process: before, this process waited for that lease (2 lease times), then answered
      // { t: 'error', code: 'STORE_FAILURE' }.
      stranger.send({ t: 'claim', id: 51, channelId, unlock });
      expect(await stranger.next((m) => m.id === 51, 15_000)).toMatchObject({
        t: 'reject',
        id: 51,
        channelId,
        code: 'WRONG_CHANNEL',
        latest: null,
      });
      expect(await lease(url, channelId)).toEqual(held);
      // Released (its device went away): before, this process took the lease and renewed it for as long as it ran.
      await c.disconnect();
      stranger.send({ t: 'claim', id: 52, channelId, unlock });
      expect(await stranger.next((m) => m.id === 52, 15_000)).toMatchObject({ t: 'reject', code: 'WRONG_CHANNEL' });
      await new Promise((r) => setTimeout(r, 300)); // a take in flight would have landed by now
      expect((await lease(url, channelId))!.owner_url).toBe(held.owner_url);
      // The channel's own device, wherever the balancer puts it, is served.
      const back = await w.connect(url, 3);
      await back.channel(channelId)!.pay(1n);
    } finally {
      stranger.close();
    }
  });

  it('an update or close whose channel lease cannot be taken (the database is down): reject STORE_FAILURE naming it, never an error frame', async () => {
    const signer = nobleSigner(w.chain.accounts[4]!);
    const sep = domainSeparator(trickleDomain(w.chain.chainId, w.adjudicator));
    await leaseLapsed(4, async (raw, channelId, latest) => {
      const next = { ...latest.state, version: latest.state.version + 1n };
      const paying = { ...next, paidByDevice: next.paidByDevice + 1n };
      const final = { ...next, isFinal: true };
      raw.send({ t: 'update', id: 43, state: paying, sig: signer.signDigest(stateDigest(sep, paying)) });
      raw.send({ t: 'close', id: 44, state: final, sig: signer.signDigest(stateDigest(sep, final)) });
      for (const id of [43, 44]) {
        // Not an `error` frame: that names no channel, and a client pairs it with no update (its pay() would wait).
        expect(await raw.next((m) => m.id === id, 15_000)).toMatchObject({
          t: 'reject',
          id,
          channelId,
          code: 'STORE_FAILURE',
          latest: null,
        });
        expect(raw.inbox.filter((m) => m.t === 'error' && m.id === id)).toEqual([]);
      }
    });
  });
});
