/**
 * A local chain in a child process (the `trickle-chain` bin), reachable over HTTP JSON-RPC by any process: the
 * demo, the CLI, end-to-end tests.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { JsonRpcProvider, Network, Wallet } from 'ethers';
import { SerialWallet } from '@trickle/chain/serialWallet';
import { TrickleError } from '@trickle/protocol/errors';
import { toChainId, type ChainIdInput } from '@trickle/protocol/input';
import type { Address, Hex } from '@trickle/protocol/types';
import { timeTravel, type TimeTravel } from './timeTravel.js';

/** Options of {@link startChainServer}; every default is written out here. */
export interface ChainServerOptions {
  /** Port (default 0: a free port, reported in `url`). */
  readonly port?: number | undefined;
  /** Interface (default `127.0.0.1`). */
  readonly host?: string | undefined;
  /** Funded accounts (default 10). */
  readonly accounts?: number | undefined;
  /** Chain id, a number or a bigint (default 31337). */
  readonly chainId?: ChainIdInput | undefined;
  /** Balance per account in wei (default 10,000 ETH). */
  readonly balance?: bigint | undefined;
  /** How long to wait for the server to come up (default 30 s). */
  readonly startupTimeoutMs?: number | undefined;
}

/** A running chain server process. */
export interface ChainServer extends TimeTravel {
  /** `http://127.0.0.1:<port>`. */
  readonly url: string;
  readonly chainId: bigint;
  /** Funded test private keys, and their addresses in the same order. */
  readonly accounts: readonly Hex[];
  readonly addresses: readonly Address[];
  readonly pid: number;
  /** ethers provider for `url` (`batchMaxCount: 1`, static network). */
  readonly provider: JsonRpcProvider;
  /** An ethers Wallet for account `index`, connected to {@link ChainServer.provider}; its sends are serialized. */
  wallet(index: number): Wallet;
  /** Stop the process (SIGTERM, then SIGKILL after 5 s) and destroy the provider. */
  stop(): Promise<void>;
}

/** Path of the `trickle-chain` bin (from `dist/`, also when this module runs from `src/` under a test runner). */
export function chainServerBinPath(): string {
  const here = fileURLToPath(new URL('./bin/trickle-chain.js', import.meta.url));
  if (existsSync(here)) return here;
  const fromDist = here.replace(/([\\/])src([\\/])bin([\\/])trickle-chain\.js$/, '$1dist$2bin$3trickle-chain.js');
  if (existsSync(fromDist)) return fromDist;
  throw new TrickleError('INTERNAL', 'trickle-chain bin not found: build @trickle/chain first', {
    details: { tried: [here, fromDist] },
  });
}

interface Ready {
  url: string;
  chainId: number;
  accounts: { address: Address; privateKey: Hex }[];
  pid: number;
}

const STDERR_KEEP = 16 * 1024;

/**
 * Spawn a chain server process and wait until it listens.
 * @param opts - see {@link ChainServerOptions}
 * @returns the URL, keys, a provider, time travel over RPC and `stop`
 * @throws TrickleError `TIMEOUT` when it does not come up in time; `INTERNAL` when it exits first (stderr in details)
 * @example
 * ```ts
 * const server = await startChainServer();
 * const provider = new JsonRpcProvider(server.url, undefined, { batchMaxCount: 1, staticNetwork: true });
 * await server.increaseTime(60);
 * await server.stop();
 * ```
 */
export async function startChainServer(opts: ChainServerOptions = {}): Promise<ChainServer> {
  const o = {
    port: opts.port ?? 0,
    host: opts.host ?? '127.0.0.1',
    accounts: opts.accounts ?? 10,
    chainId: toChainId(opts.chainId ?? 31337),
    balance: opts.balance,
    startupTimeoutMs: opts.startupTimeoutMs ?? 30_000,
  };
  const args = [
    chainServerBinPath(),
    '--port',
    String(o.port),
    '--host',
    o.host,
    '--accounts',
    String(o.accounts),
    '--chain-id',
    String(o.chainId),
    '--exit-with-parent',
  ];
  if (o.balance !== undefined) args.push('--balance', o.balance.toString());
  const child = spawn(process.execPath, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (s: string) => {
    stderr = (stderr + s).slice(-STDERR_KEEP);
  });

  const ready = await new Promise<Ready>((resolve, reject) => {
    let out = '';
    const fail = (e: TrickleError): void => {
      clearTimeout(timer);
      child.kill('SIGKILL');
      reject(e);
    };
    const timer = setTimeout(
      () =>
        fail(
          new TrickleError('TIMEOUT', `chain server did not start within ${o.startupTimeoutMs} ms`, {
            details: { stderr },
          }),
        ),
      o.startupTimeoutMs,
    );
    child.once('error', (cause) => fail(new TrickleError('INTERNAL', 'cannot spawn the chain server', { cause })));
    child.once('exit', (code, signal) =>
      fail(
        new TrickleError('INTERNAL', 'chain server exited before it was ready', { details: { code, signal, stderr } }),
      ),
    );
    child.stdout!.setEncoding('utf8').on('data', function onData(s: string) {
      out += s;
      const nl = out.indexOf('\n');
      if (nl < 0) return;
      child.stdout!.off('data', onData);
      child.removeAllListeners('exit');
      clearTimeout(timer);
      try {
        resolve(JSON.parse(out.slice(0, nl)) as Ready);
      } catch (cause) {
        fail(
          new TrickleError('INTERNAL', 'chain server printed no readiness line', {
            details: { line: out.slice(0, nl) },
            cause,
          }),
        );
      }
    });
  });
  child.stdout!.resume();

  const chainId = BigInt(ready.chainId);
  const provider = new JsonRpcProvider(ready.url, Network.from(chainId), {
    batchMaxCount: 1,
    staticNetwork: Network.from(chainId),
    cacheTimeout: -1,
    pollingInterval: 50,
  });
  const wallets = new Map<number, Wallet>();
  const accounts = ready.accounts.map((a) => a.privateKey);
  return {
    ...timeTravel(provider),
    url: ready.url,
    chainId,
    accounts,
    addresses: ready.accounts.map((a) => a.address),
    pid: ready.pid,
    provider,
    wallet(index) {
      const key = accounts[index];
      if (key === undefined) throw new TrickleError('INVALID_ARGUMENT', `no account ${index}`, { details: { index } });
      let w = wallets.get(index);
      if (w === undefined) wallets.set(index, (w = new SerialWallet(key, provider)));
      return w;
    },
    stop: () => stopChild(child, provider),
  };
}

async function stopChild(child: ChildProcess, provider: JsonRpcProvider): Promise<void> {
  provider.destroy();
  if (child.exitCode !== null || child.signalCode !== null) return;
  await new Promise<void>((resolve) => {
    const killer = setTimeout(() => child.kill('SIGKILL'), 5_000);
    child.once('exit', () => {
      clearTimeout(killer);
      resolve();
    });
    child.kill('SIGTERM');
  });
}
