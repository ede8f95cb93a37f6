/**
 * First contact with a hub, as a new user meets it: a wrong URL fails in bounded time with the URL and the cause,
 * can be aborted, leaves the process free to exit; a chain id given as a number and an address given as a plain
 * `0x` literal work; a real mismatch shows both sides with their types.
 */
import { spawn } from 'node:child_process';
import { createServer as createHttpServer } from 'node:http';
import { createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Adjudicator } from '@trickle/chain/adjudicator';
import { TrickleClient } from '@trickle/client/client';
import { adjudicatorHubChain } from '@trickle/hub/chain-watcher';
import { adjudicatorClientChain } from '@trickle/client/chain';
import { memoryChannelStore } from '@trickle/client/store';
import { isTrickleError, type TrickleError } from '@trickle/protocol/errors';
import { nobleSigner } from '@trickle/protocol/signer';
import { createWorld, type World } from './helpers/harness.js';

const KEY = `0x${'11'.repeat(32)}` as const;

async function closedPort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address() as AddressInfo;
  await new Promise((r) => srv.close(r));
  return port;
}

async function failure(p: Promise<unknown>): Promise<TrickleError> {
  const e = await p.then(
    () => undefined,
    (x: unknown) => x,
  );
  expect(isTrickleError(e)).toBe(true);
  return e as TrickleError;
}

const connect = (url: string, more: Partial<Parameters<typeof TrickleClient.connect>[0]> = {}) =>
  TrickleClient.connect({ url, signer: nobleSigner(KEY), store: memoryChannelStore(), ...more });

describe('TrickleClient.connect to a hub that is not there', () => {
  it('gives up after connectTimeoutMs with DISCONNECTED, the URL and ECONNREFUSED', async () => {
    const url = `ws://127.0.0.1:${await closedPort()}/`;
    const t0 = Date.now();
    const e = await failure(connect(url, { connectTimeoutMs: 1_500 }));
    expect(Date.now() - t0).toBeLessThan(10_000); // bounded (the old default retried forever)
    expect(e.code).toBe('DISCONNECTED');
    expect(e.details).toMatchObject({ url, reason: 'ECONNREFUSED', gaveUp: 'timeout' });
    expect((e.details as { attempts: number }).attempts).toBeGreaterThan(0);
    expect((e.cause as { code?: string }).code).toBe('ECONNREFUSED');
    expect(e.shortMessage).toContain(url);
  });

  it('gives up after reconnect.maxAttempts with the same details, telling onRetry of each retry', async () => {
    const url = `ws://127.0.0.1:${await closedPort()}/`;
    const retries: unknown[] = [];
    const e = await failure(
      connect(url, { reconnect: { maxAttempts: 2, initialDelayMs: 10 }, onRetry: (r) => retries.push(r) }),
    );
    expect(e.code).toBe('DISCONNECTED');
    expect(e.details).toMatchObject({ url, reason: 'ECONNREFUSED', attempts: 3, gaveUp: 'attempts' });
    expect(retries).toEqual([
      { url, attempt: 1, reason: 'ECONNREFUSED', delayMs: expect.any(Number) },
      { url, attempt: 2, reason: 'ECONNREFUSED', delayMs: expect.any(Number) },
    ]);
  });

  it('names a DNS failure', async () => {
    const url = 'ws://trickle-hub.invalid:8547/';
    const e = await failure(connect(url, { connectTimeoutMs: 5_000 }));
    expect(e.details).toMatchObject({ url });
    expect((e.details as { reason: string }).reason).toMatch(/^(ENOTFOUND|EAI_AGAIN)$/);
  });

  it('names a TLS failure (wss:// to a server that speaks plain HTTP)', async () => {
    const http = createHttpServer((_req, res) => res.end('plain'));
    await new Promise<void>((r) => http.listen(0, '127.0.0.1', r));
    try {
      const url = `wss://127.0.0.1:${(http.address() as AddressInfo).port}/`;
      const e = await failure(connect(url, { connectTimeoutMs: 1_500 }));
      expect(e.details).toMatchObject({ url });
      expect((e.details as { reason: string }).reason).toMatch(/SSL|TLS|EPROTO/);
    } finally {
      http.closeAllConnections();
      await new Promise((r) => http.close(r));
    }
  });

  it('stops on an AbortSignal, with the abort reason as cause', async () => {
    const url = `ws://127.0.0.1:${await closedPort()}/`;
    const ac = new AbortController();
    setTimeout(() => ac.abort(new Error('operator pressed Ctrl-C')), 300);
    const e = await failure(connect(url, { connectTimeoutMs: Number.POSITIVE_INFINITY, signal: ac.signal }));
    expect(e.code).toBe('DISCONNECTED');
    expect(e.details).toMatchObject({ url, gaveUp: 'aborted', reason: 'ECONNREFUSED' });
    expect((e.cause as Error).message).toBe('operator pressed Ctrl-C');
    const already = await failure(connect(url, { signal: AbortSignal.abort() }));
    expect(already.details).toMatchObject({ gaveUp: 'aborted' });
  });

  it('leaves nothing that keeps the process alive', async () => {
    const url = `ws://127.0.0.1:${await closedPort()}/`;
    // A script that connects, prints the error and returns: the process must then exit by itself.
    const script = `
      import { Adjudicator } from '@trickle/chain/adjudicator';
import { TrickleClient } from '@trickle/client/client';
import { adjudicatorHubChain } from '@trickle/hub/chain-watcher';
      import { memoryChannelStore } from '@trickle/client/store';
      import { nobleSigner } from '@trickle/protocol/signer';
      try {
        await TrickleClient.connect({ url: ${JSON.stringify(url)}, signer: nobleSigner('${KEY}'), store: memoryChannelStore(), connectTimeoutMs: 1000 });
      } catch (e) {
        console.log(JSON.stringify({ code: e.code, reason: e.details.reason }));
      }`;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
      cwd: join(import.meta.dirname, '..'),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d) => (out += String(d)));
    const exit = await new Promise<number | null>((resolve) => {
      const killer = setTimeout(() => child.kill('SIGKILL'), 15_000);
      child.once('exit', (code) => {
        clearTimeout(killer);
        resolve(code);
      });
    });
    expect(exit).toBe(0);
    expect(JSON.parse(out)).toEqual({ code: 'DISCONNECTED', reason: 'ECONNREFUSED' });
  });

  it('validates its options', async () => {
    expect((await failure(connect('ws://127.0.0.1:1/', { connectTimeoutMs: 0 }))).code).toBe('INVALID_ARGUMENT');
    expect((await failure(connect('ws://127.0.0.1:1/', { expectHub: '0x1234' }))).code).toBe('INVALID_ARGUMENT');
  });
});

describe('chain ids as numbers, addresses as literals', () => {
  let world: World;
  beforeAll(async () => {
    world = await createWorld({ accounts: 4 });
    await world.startHub();
  });
  afterAll(() => world?.close());

  it('opens a channel with chainId as a number and lowercase address literals', async () => {
    const adjudicator = world.adjudicator.toLowerCase() as `0x${string}`;
    const client = await world.client(2, {
      chain: adjudicatorClientChain({ wallet: world.chain.wallet(2), chainId: 31337, adjudicator }),
      expectHub: world.chain.addresses[1]!.toLowerCase() as `0x${string}`,
    });
    const channel = await client.openChannel({
      token: world.token.toLowerCase() as `0x${string}`,
      deposit: 1_000_000n,
    });
    // The id the client derived (from the normalised chain id and checksummed addresses) is the contract's.
    const onChain = await new Adjudicator(world.adjudicator, world.chain.provider).getChannel(channel.channelId);
    expect(onChain).toMatchObject({ status: 'open', depositDevice: 1_000_000n, device: world.chain.addresses[2] });
  });

  it('refuses a real mismatch, showing both sides with their types', async () => {
    const client = await world.client(3, {
      chain: {
        ...adjudicatorClientChain({ wallet: world.chain.wallet(3), chainId: 31337, adjudicator: world.adjudicator }),
        chainId: 5 as never,
      },
    });
    const e = await failure(client.openChannel({ token: world.token, deposit: 1n }));
    expect(e.code).toBe('WRONG_CHANNEL');
    expect(e.details).toEqual({
      hub: { chainId: '31337 (bigint)', adjudicator: world.adjudicator },
      client: { chainId: '5 (number)', adjudicator: world.adjudicator },
    });
  });

  it('the hub side takes them too (adjudicatorHubChain)', async () => {
    const hubChain = adjudicatorHubChain({
      provider: world.chain.provider,
      chainId: 31337,
      adjudicator: world.adjudicator.toLowerCase() as `0x${string}`,
      runner: world.chain.wallet(1),
    });
    expect(hubChain.chainId).toBe(31337n);
    expect(hubChain.adjudicator).toBe(world.adjudicator);
    await hubChain.checkDeployed?.();
    expect(() =>
      adjudicatorHubChain({
        provider: world.chain.provider,
        chainId: -1,
        adjudicator: world.adjudicator,
        runner: world.chain.wallet(1),
      }),
    ).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
  });

  it('refuses a bad checksum and a bad chain id where they are given', () => {
    const flipped = (world.adjudicator.slice(0, 41) +
      (world.adjudicator[41] === world.adjudicator[41]!.toLowerCase()
        ? world.adjudicator[41]!.toUpperCase()
        : world.adjudicator[41]!.toLowerCase())) as `0x${string}`;
    if (flipped.toLowerCase() !== flipped && flipped !== world.adjudicator) {
      expect(() =>
        adjudicatorClientChain({ wallet: world.chain.wallet(2), chainId: 31337, adjudicator: flipped }),
      ).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    }
    expect(() =>
      adjudicatorClientChain({ wallet: world.chain.wallet(2), chainId: 0, adjudicator: world.adjudicator }),
    ).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
  });
});
