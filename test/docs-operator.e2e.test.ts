import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isTrickleError } from '@trickle/protocol/errors';
import { HUB_BIN, spawnHub } from '@trickle/hub/spawn';
import { startChainServer, type ChainServer } from '@trickle/devchain/chainServer';
import { deployAdjudicator } from '@trickle/chain/deploy';

/**
 * docs/operator.md and packages/hub/README.md: the hub "refuses to start (exit 1, the reason on stderr) … when a numeric
 * flag is not a whole number in its range (`INVALID_ARGUMENT` naming the flag, exit 1)".
 */
describe('trickle-hub: every numeric flag is refused at start when it is not a whole number in its range', () => {
  let server: ChainServer;
  let adjudicator: string;
  let dir: string;
  beforeAll(async () => {
    server = await startChainServer({ accounts: 3 });
    adjudicator = (await deployAdjudicator(server.wallet(0))).address;
    dir = mkdtempSync(join(tmpdir(), 'docs-operator-'));
  });
  afterAll(async () => {
    await server?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it.each([
    // The market's numbers, also without --market-round-ms: they were only checked once a market was on.
    ['--market-fee-bps', '20000'],
    ['--market-fee-bps', 'abc'],
    ['--market-keep-clearings', '-1'],
    ['--market-max-round-orders', '0'],
    ['--market-max-participant-orders', '1.5'],
    // Number('1e5') is 100000: taken before although it is no whole number as written.
    ['--store-log-bytes', '1e5'],
    ['--store-log-bytes', '100'],
  ])('%s %s: exit 1, INVALID_ARGUMENT naming the flag', async (flag, value) => {
    const keyFile = join(dir, 'hub.key');
    writeFileSync(keyFile, `${server.accounts[1]}\n`, { mode: 0o600 });
    const err = await spawnHub([
      ...['--rpc', server.url, '--key-file', keyFile, '--port', '0', '--log-level', 'warn'],
      ...['--adjudicator', adjudicator, '--store', join(dir, `store-${flag}`), flag, value],
    ]).catch((e: unknown) => e);
    expect(isTrickleError(err, 'INTERNAL'), 'exited before listening').toBe(true);
    expect(String((err as Error).message)).toMatch(
      new RegExp(`exited with 1: trickle-hub: INVALID_ARGUMENT: ${flag} must be a whole number`),
    );
  });

  it('--help describes --market-max-round-orders as the docs do: in a cluster, one count over all processes', () => {
    const help = execFileSync(process.execPath, [HUB_BIN, '--help'], { encoding: 'utf8' }).replace(/\s+/g, ' ');
    expect(help).not.toMatch(/In a cluster, per process/);
    expect(help).toMatch(/--market-max-round-orders <n> .*over all processes/);
  });
});
