import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startChainServer, type ChainServer } from '@trickle/devchain/chainServer';
import { CommandContext } from './context.js';

const capture = () => {
  const io = {
    stdout: '',
    stderr: '',
    out: (s: string) => void (io.stdout += s),
    err: (s: string) => void (io.stderr += s),
  };
  return io;
};

let dev: ChainServer;
let other: ChainServer;
beforeAll(async () => {
  [dev, other] = await Promise.all([
    startChainServer({ accounts: 2 }),
    startChainServer({ accounts: 2, chainId: 4242 }),
  ]);
});
afterAll(async () => {
  await Promise.all([dev?.stop(), other?.stop()]);
});

async function transfer(server: ChainServer) {
  const tx = await server.wallet(0).sendTransaction({ to: server.addresses[1], value: 1n });
  return (await tx.wait())!;
}

describe('default confirmations', () => {
  it('are 0 on a development chain (31337): a mined transaction is done at once', async () => {
    const io = capture();
    const ctx = new CommandContext({ rpc: dev.url }, io);
    try {
      expect(await ctx.confirmations()).toBe(0);
      await ctx.confirm(await transfer(dev));
      expect(io.stderr).toBe('');
    } finally {
      await ctx.close();
    }
  });

  it('are 1 on another chain id, and an explicit --confirmations wins either way', async () => {
    for (const [url, given, want] of [
      [other.url, undefined, 1],
      [dev.url, '2', 2],
      [other.url, '0', 0],
    ] as const) {
      const ctx = new CommandContext({ rpc: url, confirmations: given }, capture());
      try {
        expect(await ctx.confirmations()).toBe(want);
      } finally {
        await ctx.close();
      }
    }
  });

  it('stop waiting, under the default, on a chain that mines only on transactions', async () => {
    const io = capture();
    const ctx = new CommandContext({ rpc: other.url }, io);
    try {
      await ctx.confirm(await transfer(other)); // chain 4242 mines nothing more: taken for a development node
      expect(io.stderr).toMatch(/waiting for confirmations: 0\/1/);
      expect(io.stderr).toMatch(/mines only on transactions/);
    } finally {
      await ctx.close();
    }
  }, 40_000);

  it('with an explicit count, wait for the blocks', async () => {
    const io = capture();
    const ctx = new CommandContext({ rpc: other.url, confirmations: '1' }, io);
    try {
      const receipt = await transfer(other);
      const done = ctx.confirm(receipt);
      await new Promise((r) => setTimeout(r, 300));
      await other.mine();
      await done;
      expect(io.stderr).toMatch(/waiting for confirmations: 0\/1/);
      expect(io.stderr).not.toMatch(/mines only on transactions/);
    } finally {
      await ctx.close();
    }
  });
});
