import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nobleSigner } from '@trickle/protocol/signer';
import type { Message } from '@trickle/protocol/codec';
import type { Bytes32, ChannelParams } from '@trickle/protocol/types';
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
});
