import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startChainServer, type ChainServer } from '@trickle/devchain/chainServer';
import { balanceOf } from '@trickle/chain/erc20';

/** `trickle deploy` as an operator runs it: the bin as a child process against a chain server process. */

const BIN = fileURLToPath(new URL('../packages/cli/dist/bin.js', import.meta.url));

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function trickle(args: string[]): Promise<Run> {
  return new Promise((resolve, reject) => {
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('TRICKLE_')));
    const child = spawn(process.execPath, [BIN, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += String(d)));
    child.stderr.on('data', (d) => (stderr += String(d)));
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.once('error', reject);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

describe('trickle deploy', () => {
  let server: ChainServer;
  let dir: string;
  let keyFile: string;

  beforeAll(async () => {
    server = await startChainServer({ accounts: 2 });
    dir = mkdtempSync(join(tmpdir(), 'trickle-deploy-'));
    keyFile = join(dir, 'deployer.key');
    writeFileSync(keyFile, `${server.accounts[0]}\n`, { mode: 0o600 });
  });
  afterAll(async () => {
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('deploys the adjudicator and a test token, printing only one JSON object on stdout', async () => {
    const to = server.addresses[1]!;
    const run = await trickle([
      'deploy',
      '--rpc',
      server.url,
      '--key-file',
      keyFile,
      '--chain-id',
      '31337',
      '--test-token',
      '--mint',
      `${to.toLowerCase()}=5000000`,
      '--json',
    ]);
    expect(run.code).toBe(0);
    const out = JSON.parse(run.stdout) as {
      ok: boolean;
      chainId: string;
      deployer: string;
      adjudicator: string;
      testToken: { address: string; decimals: number };
    };
    expect(out).toMatchObject({
      ok: true,
      chainId: '31337',
      deployer: server.addresses[0],
      testToken: { decimals: 6, minted: [{ to, amount: '5000000' }] },
    });
    expect(run.stderr).toMatch(/adjudicator at 0x/);
    // Contract code is at the printed address; the token was minted to the --mint address.
    expect((await server.provider.getCode(out.adjudicator)).length).toBeGreaterThan(1_000);
    expect(await balanceOf(server.provider, out.testToken.address as never, to)).toBe(5_000_000n);
  });

  it('deploys again from the same key (next nonce), human output without --test-token', async () => {
    const run = await trickle(['deploy', '--rpc', server.url, '--key-file', keyFile, '--chain-id', '31337']);
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/^adjudicator 0x[0-9a-fA-F]{40}\n/);
    expect(run.stdout).not.toMatch(/test token/);
  });

  it('refuses a chain id it was not told to expect, deploying nothing', async () => {
    const nonce = await server.provider.getTransactionCount(server.addresses[0]!);
    const run = await trickle(['deploy', '--rpc', server.url, '--key-file', keyFile, '--chain-id', '1', '--json']);
    expect(run.code).toBe(1);
    expect(JSON.parse(run.stdout)).toMatchObject({
      ok: false,
      error: { code: 'INVALID_ARGUMENT', details: { expected: '1', actual: '31337' } },
    });
    expect(run.stderr).toMatch(/chain id 31337, not 1/);
    expect(await server.provider.getTransactionCount(server.addresses[0]!)).toBe(nonce);
  });

  it('requires --chain-id, and names an unreachable endpoint (exit 5)', async () => {
    const missing = await trickle(['deploy', '--rpc', server.url, '--key-file', keyFile]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/--chain-id <n> is required/);
    const mintAlone = await trickle([
      'deploy',
      '--rpc',
      server.url,
      '--key-file',
      keyFile,
      '--chain-id',
      '31337',
      '--mint',
      `${server.addresses[1]}=1`,
    ]);
    expect(mintAlone.code).toBe(1);
    expect(mintAlone.stderr).toMatch(/--mint needs --test-token/);
    const down = await trickle([
      'deploy',
      '--rpc',
      'http://127.0.0.1:1',
      '--key-file',
      keyFile,
      '--chain-id',
      '31337',
      '--json',
    ]);
    expect(down.code).toBe(5);
    expect(JSON.parse(down.stdout)).toMatchObject({ ok: false, error: { exitCode: 5 } });
  });
});
