import { JsonRpcProvider } from 'ethers';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { channelIdOf } from '@trickle/protocol/eip712';
import { ETH_TOKEN, type Address, type Bytes32 } from '@trickle/protocol/types';
import { startChainServer, type ChainServer } from './chainServer.js';
import { deployAdjudicator } from '@trickle/chain/deploy';
import { isChainRevert } from '@trickle/chain/errors';

let server: ChainServer;
let startupMs = 0;
beforeAll(async () => {
  const t0 = performance.now();
  server = await startChainServer({ accounts: 4 });
  startupMs = performance.now() - t0;
});
afterAll(() => server?.stop());

describe('startChainServer', () => {
  it('spawns a JSON-RPC server process that a plain ethers JsonRpcProvider reaches', async () => {
    expect(startupMs).toBeLessThan(15_000);
    expect(server.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    const provider = new JsonRpcProvider(server.url, undefined, { batchMaxCount: 1, staticNetwork: true });
    try {
      expect((await provider.getNetwork()).chainId).toBe(31337n);
      expect(await provider.getBalance(server.addresses[0]!)).toBe(10_000n * 10n ** 18n);
    } finally {
      provider.destroy();
    }
  });

  it('runs the adjudicator and returns decodable reverts over HTTP', async () => {
    const adj = await deployAdjudicator(server.wallet(0));
    const params = {
      chainId: server.chainId,
      adjudicator: adj.address,
      device: server.addresses[1]!,
      hub: server.addresses[2]!,
      token: ETH_TOKEN,
      challengeDuration: 60n,
      salt: `0x${'00'.repeat(31)}07` as Bytes32,
    };
    const opened = await adj.connect(server.wallet(1)).open(params, 1000n);
    expect(opened.channelId).toBe(channelIdOf(params));
    const again = await adj
      .connect(server.wallet(2))
      .open(params, 0n)
      .catch((e: unknown) => e);
    expect(isChainRevert(again, 'ChannelExists')).toBe(true);

    await adj.connect(server.wallet(1)).forceClose({
      state: {
        channelId: opened.channelId,
        version: 0n,
        paidByDevice: 0n,
        paidByHub: 0n,
        round: 0n,
        locksRoot: `0x${'00'.repeat(32)}` as never,
        lockedByDevice: 0n,
        lockedByHub: 0n,
        isFinal: false,
      },
    });
    const early = await adj
      .connect(server.wallet(3))
      .settle(opened.channelId)
      .catch((e: unknown) => e);
    expect(isChainRevert(early, 'ChallengePeriodNotOver')).toBe(true);
    await server.increaseTime(60);
    const { closed } = await adj.connect(server.wallet(3)).settle(opened.channelId);
    expect(closed.devicePayout).toBe(1000n);
    expect(await adj.owed(ETH_TOKEN, server.addresses[1] as Address)).toBe(0n);
  });

  it('answers batch requests and refuses non-POST', async () => {
    const res = await fetch(server.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify([
        { jsonrpc: '2.0', id: 1, method: 'eth_chainId', params: [] },
        { jsonrpc: '2.0', id: 2, method: 'no_such_method', params: [] },
      ]),
    });
    const body = (await res.json()) as { id: number; result?: string; error?: { code: number } }[];
    expect(body[0]).toMatchObject({ id: 1, result: '0x7a69' });
    expect(body[1]?.error).toBeDefined();
    expect((await fetch(server.url)).status).toBe(405);
  });

  it('stops the process', async () => {
    const extra = await startChainServer({ accounts: 1 });
    await extra.stop();
    expect(() => process.kill(extra.pid, 0)).toThrow();
    await expect(fetch(extra.url)).rejects.toThrow();
  });
});
