#!/usr/bin/env node
/**
 * trickle-chain: a local EDR development chain served over HTTP JSON-RPC, in the foreground.
 * Prints one JSON line on stdout once listening: { url, chainId, accounts: [{ address, privateKey }], pid }.
 * Stops on SIGINT/SIGTERM (and, with --exit-with-parent, when stdin closes).
 */
import { parseArgs } from 'node:util';
import { serveChain } from '../serve.js';

const USAGE = `usage: trickle-chain [--port 8545] [--host 127.0.0.1] [--accounts 10] [--chain-id 31337]
                     [--balance <wei>] [--exit-with-parent]
Prints {"url","chainId","accounts":[{"address","privateKey"}],"pid"} as one JSON line when ready.
The keys are public test keys: never use them on a real network.`;

function intArg(name: string, value: string, min: number, max: number): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < min || n > max) {
    process.stderr.write(`trickle-chain: --${name} must be an integer in [${min}, ${max}]\n${USAGE}\n`);
    process.exit(2);
  }
  return n;
}

async function main(): Promise<void> {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        port: { type: 'string', default: '8545' },
        host: { type: 'string', default: '127.0.0.1' },
        accounts: { type: 'string', default: '10' },
        'chain-id': { type: 'string', default: '31337' },
        balance: { type: 'string' },
        'exit-with-parent': { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
      strict: true,
    }));
  } catch (e) {
    process.stderr.write(`trickle-chain: ${(e as Error).message}\n${USAGE}\n`);
    process.exit(2);
  }
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  let balance: bigint | undefined;
  if (values.balance !== undefined) {
    if (!/^\d+$/.test(values.balance)) {
      process.stderr.write(`trickle-chain: --balance must be an amount of wei\n`);
      process.exit(2);
    }
    balance = BigInt(values.balance);
  }
  const t0 = performance.now();
  const served = await serveChain({
    host: values.host,
    port: intArg('port', values.port, 0, 65535),
    accounts: intArg('accounts', values.accounts, 1, 1000),
    chainId: intArg('chain-id', values['chain-id'], 1, Number.MAX_SAFE_INTEGER),
    balance,
  });
  const { chain } = served;
  process.stdout.write(
    `${JSON.stringify({
      url: served.url,
      chainId: Number(chain.chainId),
      accounts: chain.addresses.map((address, i) => ({ address, privateKey: chain.accounts[i] })),
      pid: process.pid,
    })}\n`,
  );
  process.stderr.write(
    `trickle-chain: listening on ${served.url} (ready in ${(performance.now() - t0).toFixed(0)} ms)\n`,
  );

  let stopping = false;
  const stop = (): void => {
    if (stopping) return;
    stopping = true;
    served.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
  if (values['exit-with-parent']) {
    process.stdin.on('end', stop);
    process.stdin.on('close', stop);
    process.stdin.resume();
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`trickle-chain: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exit(1);
});
