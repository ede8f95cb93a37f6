import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nobleSigner } from '@trickle/protocol/signer';
import type { Message } from '@trickle/protocol/codec';
import { DEFAULT_HUB_LIMITS } from '@trickle/hub/options';
import type { Address, Bytes32, ChannelParams } from '@trickle/protocol/types';
import { adjudicatorHubChain } from '@trickle/hub/chain-watcher';
import { createWorld, type World } from './helpers/harness.js';
import { RawDevice } from './helpers/raw-device.js';

/**
 * Every `open` costs the hub a read of its chain endpoint, whose quota it needs to see stale force closes; any key can
 * authenticate. A device announcing channel after channel is refused RATE_LIMITED past its share (a burst, then a
 * few per second), the hub's reads stay bounded, and other devices open channels as usual.
 */
describe('chain reads a device may cause', () => {
  let w: World;
  let reads = 0;
  beforeAll(async () => {
    w = await createWorld({ accounts: 5 });
    const inner = adjudicatorHubChain({
      provider: w.chain.provider,
      chainId: w.chain.chainId,
      adjudicator: w.adjudicator,
      runner: w.chain.wallet(1),
    });
    await w.startHub({
      more: {
        chain: {
          ...inner,
          readChannel: (id) => {
            reads++;
            return inner.readChannel(id);
          },
        },
      },
    });
  });
  afterAll(async () => w?.close());

  it('a flood of opens of channels that do not exist is refused RATE_LIMITED past the burst; others open as usual', async () => {
    const signer = nobleSigner(w.chain.accounts[2]!);
    const raw = await RawDevice.connect(w.hub!.url, signer);
    const params = (): ChannelParams => ({
      chainId: w.chain.chainId,
      adjudicator: w.adjudicator,
      device: signer.address,
      hub: w.hub!.address,
      token: w.token,
      challengeDuration: 3600n,
      salt: `0x${randomBytes(32).toString('hex')}` as Bytes32,
    });
    const before = reads;
    const answers: Message[] = [];
    for (let id = 1; id <= 100; id++) raw.send({ t: 'open', id, params: params() });
    for (let id = 1; id <= 100; id++) answers.push(await raw.next((m) => m.id === id, 20_000));
    const codes = answers.map((m) => (m.t === 'error' ? m.code : m.t));
    // Unknown channels: refused after the read (no deposit) up to the burst, then without a read.
    expect(codes.filter((c) => c === 'RATE_LIMITED').length).toBeGreaterThanOrEqual(60);
    expect(codes.every((c) => c === 'RATE_LIMITED' || c === 'CHANNEL_NOT_OPEN')).toBe(true);
    expect(reads - before).toBeLessThanOrEqual(40);
    expect(w.hub!.channels.size).toBe(0);
    raw.close();

    // Another device is not held back by it, and its client opens and pays as usual.
    const c = await w.client(3);
    const ch = await c.openChannel({ token: w.token, deposit: 1_000_000n });
    await ch.pay(7n);
    expect(w.hub!.channels.get(ch.channelId)!.latest.state.paidByDevice).toBe(7n);
  });

  it('fresh keys, each within its share, are bounded by the share of all devices; opens naming another device, hub, chain or adjudicator are refused WRONG_CHANNEL without a read', async () => {
    const params = (device: Address, more: Partial<ChannelParams> = {}): ChannelParams => ({
      chainId: w.chain.chainId,
      adjudicator: w.adjudicator,
      device,
      hub: w.hub!.address,
      token: w.token,
      challengeDuration: 3600n,
      salt: `0x${randomBytes(32).toString('hex')}` as Bytes32,
      ...more,
    });
    const fresh = () => nobleSigner(`0x${randomBytes(32).toString('hex')}`);
    const started = Date.now();
    const before = reads;
    // 20 throwaway keys × 30 opens of made-up channels (before: 600 reads, each key's whole share)
    const codes = (
      await Promise.all(
        Array.from({ length: 20 }, async () => {
          const key = fresh();
          const d = await RawDevice.connect(w.hub!.url, key);
          for (let id = 10; id < 40; id++) d.send({ t: 'open', id, params: params(key.address) });
          const answers: Message[] = [];
          for (let id = 10; id < 40; id++) answers.push(await d.next((m) => m.id === id, 20_000));
          d.close();
          return answers.map((m) => (m.t === 'error' ? m.code : m.t));
        }),
      )
    ).flat();
    const bound =
      DEFAULT_HUB_LIMITS.totalChainReadBurst +
      (DEFAULT_HUB_LIMITS.totalChainReadsPerSecond * (Date.now() - started)) / 1000;
    expect(reads - before).toBeLessThanOrEqual(Math.ceil(bound));
    expect(codes.filter((c) => c === 'CHANNEL_NOT_OPEN').length).toBe(reads - before);
    expect(codes.filter((c) => c === 'RATE_LIMITED').length).toBe(600 - (reads - before));

    // The cheap checks come before the budget, and read nothing (before: a read each, within the key's share).
    const key = fresh();
    const d = await RawDevice.connect(w.hub!.url, key);
    const other = `0x${'ab'.repeat(20)}` as Address;
    const wrong = [
      ...Array.from({ length: 20 }, () => params(other)),
      ...Array.from({ length: 5 }, () => params(key.address, { hub: other })),
      ...Array.from({ length: 5 }, () => params(key.address, { chainId: w.chain.chainId + 1n })),
      ...Array.from({ length: 5 }, () => params(key.address, { adjudicator: other })),
    ];
    const quiet = reads;
    wrong.forEach((p, i) => d.send({ t: 'open', id: 10 + i, params: p }));
    for (let i = 0; i < wrong.length; i++)
      expect(await d.next((m) => m.id === 10 + i)).toMatchObject({ t: 'error', code: 'WRONG_CHANNEL' });
    expect(reads).toBe(quiet);
    d.close();

    // An honest device opens as usual (its client retries RATE_LIMITED while the share of all refills).
    const c = await w.client(4);
    const ch = await c.openChannel({ token: w.token, deposit: 1_000_000n });
    await ch.pay(3n);
    expect(w.hub!.channels.get(ch.channelId)!.latest.state.paidByDevice).toBe(3n);
  }, 60_000);
});

/**
 * All devices' share counts the reads that find nothing: an open whose read found the device's channel open on-chain
 * is given back, so devices announcing new channels together are not held to the rate of made-up ones.
 */
describe('the share of chain reads of all devices', () => {
  let w: World;
  let reads = 0;
  beforeAll(async () => {
    w = await createWorld({ accounts: 6 });
    const inner = adjudicatorHubChain({
      provider: w.chain.provider,
      chainId: w.chain.chainId,
      adjudicator: w.adjudicator,
      runner: w.chain.wallet(1),
    });
    await w.startHub({
      limits: { totalChainReadBurst: 2, totalChainReadsPerSecond: 0.001 },
      more: {
        chain: {
          ...inner,
          readChannel: (id) => {
            reads++;
            return inner.readChannel(id);
          },
        },
      },
    });
  });
  afterAll(async () => w?.close());

  it('opens of channels open on-chain are not counted (three devices open with a share of two); made-up ones are, past it RATE_LIMITED without a read', async () => {
    for (const i of [2, 3, 4]) {
      // before: the third refused RATE_LIMITED until its open timeout
      const c = await w.client(i, { openTimeoutMs: 5_000 });
      const ch = await c.openChannel({ token: w.token, deposit: 1_000_000n });
      await ch.pay(1n);
    }
    expect(reads).toBe(3);
    const key = nobleSigner(`0x${randomBytes(32).toString('hex')}`);
    const d = await RawDevice.connect(w.hub!.url, key);
    const codes: string[] = [];
    for (let id = 10; id < 13; id++) {
      d.send({
        t: 'open',
        id,
        params: {
          chainId: w.chain.chainId,
          adjudicator: w.adjudicator,
          device: key.address,
          hub: w.hub!.address,
          token: w.token,
          challengeDuration: 3600n,
          salt: `0x${randomBytes(32).toString('hex')}` as Bytes32,
        },
      });
      const m = await d.next((x) => x.id === id);
      codes.push(m.t === 'error' ? m.code : m.t);
    }
    expect(codes).toEqual(['CHANNEL_NOT_OPEN', 'CHANNEL_NOT_OPEN', 'RATE_LIMITED']);
    expect(reads).toBe(5);
    d.close();
  });
});
