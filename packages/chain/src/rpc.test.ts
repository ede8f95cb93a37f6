import { spawnSync } from 'node:child_process';
import { createServer, type AddressInfo } from 'node:net';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startChainServer, type ChainServer } from '@trickle/devchain/chainServer';
import { isTrickleError } from '@trickle/protocol/errors';
import { deployAdjudicator, deployToken } from './deploy.js';
import { balanceOf, mintTestToken } from './erc20.js';
import { connectChain, jsonRpcProvider } from './rpc.js';

let server: ChainServer;
beforeAll(async () => {
  server = await startChainServer({ accounts: 2 });
});
afterAll(() => server?.stop());

const README = fileURLToPath(new URL('../README.md', import.meta.url));

/** The README's ```js blocks. */
function readmeBlocks(): string[] {
  return [...readFileSync(README, 'utf8').matchAll(/```js\n([\s\S]*?)```/g)].map((m) => m[1]!);
}

describe('the README provider setups', () => {
  it('has two blocks to run', () => {
    expect(readmeBlocks()).toHaveLength(2);
  });

  // Each block runs as written in its own Node process, given `url` and `privateKey`: two deployments in a row.
  it.each([0, 1])('block %i deploys twice from one key', (i) => {
    const file = fileURLToPath(new URL(`../.readme-block-${i}-${process.pid}.mjs`, import.meta.url));
    const prelude = `const url = ${JSON.stringify(server.url)};\nconst privateKey = ${JSON.stringify(server.accounts[1])};\n`;
    const body = readmeBlocks()[i]!;
    // imports first (ES modules hoist them anyway), the prelude after them
    const lines = body.split('\n');
    const lastImport = lines.findLastIndex((l) => l.startsWith('import '));
    writeFileSync(file, [...lines.slice(0, lastImport + 1), prelude, ...lines.slice(lastImport + 1)].join('\n'));
    try {
      const run = spawnSync(process.execPath, [file], { encoding: 'utf8', timeout: 60_000 });
      expect(run.stderr).toBe('');
      expect(run.status).toBe(0);
      const [a, b] = run.stdout.trim().split(' ');
      expect(a).toMatch(/^0x[0-9a-fA-F]{40}$/);
      expect(b).toMatch(/^0x[0-9a-fA-F]{40}$/);
      expect(a).not.toBe(b);
    } finally {
      rmSync(file, { force: true });
    }
  });
});

describe('connectChain', () => {
  it('accepts the expected chain id as a number or a bigint and sends concurrent transactions from one key', async () => {
    const byNumber = await connectChain(server.url, { expectChainId: 31337 });
    const byBigint = await connectChain(server.url, { expectChainId: 31337n });
    try {
      expect(byNumber.chainId).toBe(31337n);
      expect(byBigint.chainId).toBe(31337n);
      const w = byNumber.wallet(server.accounts[0]!);
      expect(byNumber.wallet(server.accounts[0]!)).toBe(w);
      const deployed = await Promise.all([deployAdjudicator(w), deployAdjudicator(w), deployAdjudicator(w)]);
      expect(new Set(deployed.map((d) => d.address)).size).toBe(3);
    } finally {
      byNumber.provider.destroy();
      byBigint.provider.destroy();
    }
  });

  it('refuses another chain id, showing both', async () => {
    const e = await connectChain(server.url, { expectChainId: 1 }).catch((x: unknown) => x);
    expect(isTrickleError(e, 'INVALID_ARGUMENT')).toBe(true);
    expect((e as { details: Record<string, unknown> }).details).toMatchObject({ expected: 1n, actual: 31337n });
  });

  it('names the URL and the cause when nothing listens', async () => {
    const url = `http://127.0.0.1:${await closedPort()}`;
    const e = await connectChain(url, { timeoutMs: 5_000 }).catch((x: unknown) => x);
    expect(isTrickleError(e, 'DISCONNECTED')).toBe(true);
    expect((e as { details: Record<string, unknown> }).details).toMatchObject({ url, reason: 'ECONNREFUSED' });
  });

  it('validates a chain id given to jsonRpcProvider', () => {
    expect(() => jsonRpcProvider(server.url, 0)).toThrow(/positive integer/);
    expect(() => jsonRpcProvider(server.url, 1.5)).toThrow(/positive integer/);
  });
});

/** A loopback port that nothing listens on (bound, then released). */
async function closedPort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address() as AddressInfo;
  await new Promise((r) => srv.close(r));
  return port;
}

describe('erc20 helpers take plain 0x literals', () => {
  it('mints and reads with lowercase literals, and refuses a bad checksum naming the parameter', async () => {
    const chain = await connectChain(server.url, { expectChainId: 31337 });
    try {
      const token = await deployToken(chain.wallet(server.accounts[0]!), 'usdt');
      const tokenLiteral = token.address.toLowerCase() as `0x${string}`;
      const owner = server.addresses[1]!.toLowerCase() as `0x${string}`;
      await mintTestToken(chain.wallet(server.accounts[0]!), tokenLiteral, owner, 7n);
      expect(await balanceOf(chain.provider, tokenLiteral, owner)).toBe(7n);
      const body = server.addresses[1]!.slice(2);
      const i = [...body].findIndex((c) => /[a-f]/i.test(c));
      const flipped =
        `0x${body.slice(0, i)}${body[i] === body[i]!.toUpperCase() ? body[i]!.toLowerCase() : body[i]!.toUpperCase()}${body.slice(i + 1)}` as `0x${string}`;
      const e = await balanceOf(chain.provider, tokenLiteral, flipped).catch((x: unknown) => x);
      expect(isTrickleError(e, 'INVALID_ARGUMENT')).toBe(true);
      expect((e as { shortMessage: string }).shortMessage).toMatch(/^owner is not an address/);
    } finally {
      chain.provider.destroy();
    }
  });
});
