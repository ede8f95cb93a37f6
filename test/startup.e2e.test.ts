import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
import { get } from 'node:https';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { isTrickleError, type TrickleError } from '@trickle/protocol/errors';
import { nobleSigner } from '@trickle/protocol/signer';
import type { Address, Bytes32 } from '@trickle/protocol/types';
import { TrickleClient } from '@trickle/client/client';
import { fileChannelStore } from '@trickle/client/store';
import { adjudicatorClientChain } from '@trickle/client/chain';
import { nativeSigner } from '@trickle/protocol/native';
import { createHub } from '@trickle/hub/hub';
import { openLmdbStore } from '@trickle/hub/store/lmdb';
import { adjudicatorHubChain } from '@trickle/hub/chain-watcher';
import { HUB_BIN, spawnHub } from '@trickle/hub/spawn';
import { startChainServer, type ChainServer } from '@trickle/devchain/chainServer';
import { deployAdjudicator } from '@trickle/chain/deploy';
import { createWorld, type World } from './helpers/harness.js';
import { waitFor } from './helpers/wait.js';
import { freePort } from './helpers/hub-process.js';
import { RawDevice } from './helpers/raw-device.js';

/** An address with no contract on the test chain. */
const NOWHERE = '0x000000000000000000000000000000000000dEaD';

/** What an operator meets first: typed refusals at start and at the first order, and the hub's info-level log lines. */
describe('start-up checks, MARKET_DISABLED and operator logs (createHub)', () => {
  let w: World;
  const lines: { msg: string; [k: string]: unknown }[] = [];
  beforeAll(async () => {
    w = await createWorld({ accounts: 5 });
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        for (const l of chunk.toString('utf8').split('\n')) if (l) lines.push(JSON.parse(l) as { msg: string });
        done();
      },
    });
    await w.startHub({ more: { logger: pino({ level: 'info' }, sink) } });
  });
  afterAll(async () => w?.close());

  it('a market order against a hub without a market fails at once with MARKET_DISABLED', async () => {
    const c = await w.client(2);
    const ch = await c.openChannel({ token: w.token, deposit: 1_000_000n });
    const err = await c.market
      .submitOrder(ch, { market: 'kwh', side: 'bid', quantity: 1n, price: 10n })
      .catch((e: unknown) => e);
    expect(isTrickleError(err, 'MARKET_DISABLED')).toBe(true);
    expect(c.market.disabled).toBe(true);
    expect(ch.latest.state.paidByDevice).toBe(0n); // no escrow was paid for an order that cannot be placed
  });

  it('logs channel opens and closes and the shutdown at info', async () => {
    const c = await w.client(3);
    const ch = await c.openChannel({ token: w.token, deposit: 1_000_000n });
    await ch.pay(10n);
    await waitFor(() => lines.some((l) => l.msg === 'channel opened' && l['channelId'] === ch.channelId));
    await c.close(ch.channelId);
    await waitFor(
      () => lines.some((l) => l.msg === 'channel closed on-chain' && l['channelId'] === ch.channelId),
      20_000,
    );
    await w.hub!.close();
    w.hub = undefined;
    expect(lines.map((l) => l.msg)).toEqual(
      expect.arrayContaining([
        'hub listening',
        'device asked to close a channel cooperatively',
        'hub shutting down: draining',
        'hub stopped',
      ]),
    );
  });

  it('warns when it serves without TLS on a non-loopback interface, and logs where it listens', async () => {
    const seen: { level: number; msg: string; [k: string]: unknown }[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        for (const l of chunk.toString('utf8').split('\n')) if (l) seen.push(JSON.parse(l) as (typeof seen)[0]);
        done();
      },
    });
    const start = async (host: string, path: string) => {
      const store = openLmdbStore({ path: join(w.dir, path) });
      const hub = await createHub({
        signer: nativeSigner(w.hubKey),
        store,
        chain: adjudicatorHubChain({
          provider: w.chain.provider,
          chainId: w.chain.chainId,
          adjudicator: w.adjudicator,
          runner: w.chain.wallet(1),
        }),
        host,
        port: 0,
        logger: pino({ level: 'info' }, sink),
      });
      await hub.close();
    };
    const warning = /serving without TLS on a non-loopback interface/;
    await start('127.0.0.1', 'loopback-store');
    expect(seen.find((l) => l.msg === 'hub listening')?.['url']).toMatch(/^ws:\/\/127\.0\.0\.1:\d+\/$/);
    expect(seen.some((l) => warning.test(l.msg))).toBe(false);
    await start('0.0.0.0', 'public-store');
    expect(seen.some((l) => l.level === 40 && warning.test(l.msg))).toBe(true);
  });

  it("refuses to start on another hub's, chain's or adjudicator's store", async () => {
    const path = join(w.dir, 'identity-store');
    const other = (await deployAdjudicator(w.chain.wallet(0))).address;
    const start = (o: { key?: `0x${string}`; adjudicator?: typeof other }) => {
      const store = openLmdbStore({ path });
      return createHub({
        signer: nativeSigner(o.key ?? w.hubKey),
        store,
        chain: adjudicatorHubChain({
          provider: w.chain.provider,
          chainId: w.chain.chainId,
          adjudicator: o.adjudicator ?? w.adjudicator,
          runner: w.chain.wallet(1),
        }),
        port: 0,
        logger: pino({ level: 'silent' }),
      }).catch(async (e: unknown) => {
        await store.close();
        throw e;
      });
    };
    await (await start({})).close(); // the store's first start records whose it is
    // A hub on another adjudicator would follow that one only, leaving this store's channels unwatched.
    const moved = await start({ adjudicator: other }).catch((e: unknown) => e);
    expect(isTrickleError(moved, 'INVALID_ARGUMENT')).toBe(true);
    expect((moved as TrickleError).details['store']).toMatchObject({ adjudicator: w.adjudicator });
    const rekeyed = await start({ key: w.chain.accounts[4]! as `0x${string}` }).catch((e: unknown) => e);
    expect(isTrickleError(rekeyed, 'INVALID_ARGUMENT')).toBe(true);
    await (await start({})).close(); // its own hub starts on it again
  });

  it('/health turns degraded, and trickle_chain_poll_age_seconds grows, while the chain cannot be polled', async () => {
    const chainServer = await startChainServer({ accounts: 3 });
    let stopped = false;
    const store = openLmdbStore({ path: join(w.dir, 'chain-down-store') });
    const hub = await createHub({
      signer: nativeSigner(chainServer.accounts[1]!),
      store,
      chain: adjudicatorHubChain({
        provider: chainServer.provider,
        chainId: chainServer.chainId,
        adjudicator: (await deployAdjudicator(chainServer.wallet(0))).address,
        runner: chainServer.wallet(1),
      }),
      port: 0,
      chainPollMs: 100,
      limits: { chainStaleMs: 1_000 },
      logger: pino({ level: 'silent' }),
    });
    try {
      const health = async () => (await (await fetch(`${hub.httpUrl}health`)).json()) as Record<string, unknown>;
      const pollAge = async () =>
        Number(/^trickle_chain_poll_age_seconds (\S+)$/m.exec(await (await fetch(`${hub.httpUrl}metrics`)).text())![1]);
      const until = async (cond: () => Promise<boolean>, ms: number) => {
        for (const end = Date.now() + ms; !(await cond()); await new Promise((r) => setTimeout(r, 100)))
          if (Date.now() > end) throw new Error('condition not met in time');
      };
      await until(async () => (await health())['status'] === 'ok', 20_000);
      expect((await health())['chain']).toBe('ok');
      await chainServer.stop(); // the hub can no longer see a force close, let alone answer it
      stopped = true;
      await until(async () => (await health())['status'] === 'degraded', 60_000);
      expect((await health())['chain']).toBe('behind');
      expect(await pollAge()).toBeGreaterThan(1);
    } finally {
      await hub.close();
      if (!stopped) await chainServer.stop();
    }
  });

  it('createHub refuses an adjudicator address with no code (NO_CONTRACT)', async () => {
    const store = openLmdbStore({ path: join(w.dir, 'nowhere-store') });
    const chain = adjudicatorHubChain({
      provider: w.chain.provider,
      chainId: w.chain.chainId,
      adjudicator: NOWHERE as never,
      runner: w.chain.wallet(1),
    });
    const err = await createHub({
      signer: nativeSigner(w.hubKey),
      store,
      chain,
      logger: pino({ level: 'silent' }),
    }).catch((e: unknown) => e);
    await store.close();
    expect(isTrickleError(err, 'NO_CONTRACT')).toBe(true);
    expect((err as { details: Record<string, unknown> }).details['adjudicator']).toBe(NOWHERE);
  });
});

/**
 * Run the `trickle-hub` bin until it listens, then SIGTERM it: its stdout lines (pino's JSON lines, which it may write
 * after the `listening` line, and the `listening` line) read until the process has closed them, and its exit code.
 */
async function runBin(args: readonly string[]): Promise<{ lines: string[]; code: number | null; why: string }> {
  const child = spawn(process.execPath, [HUB_BIN, ...args]);
  let out = '';
  let err = '';
  let why = '';
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (s: string) => (out += s));
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (s: string) => (err += s));
  const closed = new Promise<number | null>((r) =>
    child.once('close', (code, signal) => {
      why = `exit ${code}, signal ${signal}, stderr: ${err}`;
      r(code);
    }),
  );
  await new Promise<void>((resolve, reject) => {
    child.stdout.on('data', () => out.includes('"event":"listening"') && resolve());
    child.once('exit', (code) => reject(new Error(`exited with ${code}: ${out}`)));
  });
  child.kill('SIGTERM');
  const code = await closed;
  return { lines: out.split('\n'), code, why };
}

/** The same, as an operator runs it: the `trickle-hub` bin with its flags. */
describe('trickle-hub flags: numbers, --chain-id, --min-challenge-seconds, --adjudicator check, --tls-cert/--tls-key, --dashboard-token-file', () => {
  let server: ChainServer;
  let adjudicator: string;
  let w: World;
  beforeAll(async () => {
    server = await startChainServer({ accounts: 3 });
    adjudicator = (await deployAdjudicator(server.wallet(0))).address;
    w = await createWorld({ accounts: 3 }); // only for its temporary directory
  });
  afterAll(async () => {
    await w?.close();
    await server?.stop();
  });
  const base = () => {
    const keyFile = join(w.dir, 'hub.key');
    writeFileSync(keyFile, `${server.accounts[1]}\n`, { mode: 0o600 });
    return ['--rpc', server.url, '--key-file', keyFile, '--port', '0', '--log-level', 'warn'];
  };

  it('exits 1 with INVALID_ARGUMENT naming the flag for a number it cannot use, before it starts', async () => {
    // Each of these started a hub before: `--confirmations abc` (NaN) made every chain poll fail, so the hub never
    // saw a force close to challenge; `--confirmations -1` read one block past the head and skipped it;
    // `--market-fee-bps 20000` failed every market round; `--poll-ms abc` polled the chain every millisecond.
    const cases: [string, string][] = [
      ['--confirmations', 'abc'],
      ['--confirmations', '-1'],
      ['--poll-ms', 'abc'],
      ['--market-fee-bps', '20000'],
      ['--port', '70000'],
      ['--drain-timeout-ms', '1.5'],
      ['--min-challenge-seconds', '0'],
      ['--max-handshakes-per-address', '0'],
      ['--http-requests-per-second', '0'],
      ['--http-request-burst', '1.5'],
      ['--route-retention-hours', '-1'],
    ];
    for (const [flag, value] of cases) {
      const extra = flag === '--market-fee-bps' ? ['--market-round-ms', '1000'] : [];
      const err = await spawnHub([
        ...base(),
        '--adjudicator',
        adjudicator,
        '--store',
        join(w.dir, 'bin-numbers'),
        ...extra,
        flag,
        value,
      ]).catch((e: unknown) => e);
      expect(isTrickleError(err, 'INTERNAL'), `${flag} ${value}`).toBe(true); // exited before listening
      expect(String((err as Error).message)).toMatch(
        new RegExp(`exited with 1: trickle-hub: INVALID_ARGUMENT: ${flag} must be a whole number`),
      );
    }
    // A market without the token it settles in would take escrows and pay credits in any channel's token.
    const store = join(w.dir, 'bin-numbers');
    const noToken = await spawnHub([
      ...base(),
      '--adjudicator',
      adjudicator,
      '--store',
      store,
      '--market-round-ms',
      '1000',
    ]).catch((e: unknown) => e);
    expect(String((noToken as Error).message)).toMatch(
      /exited with 1: trickle-hub: INVALID_ARGUMENT: --market-round-ms needs --market-token/,
    );
  });

  it('exits 1 when the --rpc endpoint serves another chain than --chain-id, or cannot be reached', async () => {
    const args = [...base(), '--adjudicator', adjudicator, '--store', join(w.dir, 'bin-chain-id')];
    const wrong = await spawnHub([...args, '--chain-id', '1']).catch((e: unknown) => e);
    expect(String((wrong as Error).message)).toMatch(
      /exited with 1: trickle-hub: INVALID_ARGUMENT: the chain at .* has chain id 31337, not the expected 1/,
    );
    const nothing = `http://127.0.0.1:${await freePort()}`; // nothing listens there
    const args2 = args.map((a) => (a === server.url ? nothing : a));
    const down = await spawnHub(args2).catch((e: unknown) => e);
    expect(String((down as Error).message)).toMatch(
      /exited with 1: trickle-hub: DISCONNECTED: cannot reach the chain at http:\/\/127\.0\.0\.1:\d+ \(ECONNREFUSED\)/,
    );
    const hub = await spawnHub([...args, '--chain-id', '31337']);
    await hub.stop();
    expect([hub.child.exitCode, hub.child.signalCode, hub.stderr()]).toEqual([0, null, '']);
  });

  it('refuses by default a channel whose challenge period is too short to answer a stale force close', async () => {
    const hub = await spawnHub([...base(), '--adjudicator', adjudicator, '--store', join(w.dir, 'bin-challenge')]);
    const device = await TrickleClient.connect({
      url: hub.url,
      signer: nobleSigner(server.accounts[2]!),
      store: fileChannelStore(join(w.dir, 'bin-challenge-device')),
      chain: adjudicatorClientChain({
        wallet: server.wallet(2),
        chainId: server.chainId,
        adjudicator: adjudicator as Address,
      }),
      requestTimeoutMs: 10_000,
    });
    try {
      expect(device.hub.minChallengeSeconds).toBe(600n); // told in the connection's first frame
      // 60 s: a device could force-close on its version-0 state and settle before the hub's challenge is mined.
      // The client refuses it before it deposits: no transaction, no record.
      const before = await server.provider.getBalance(server.addresses[2]!);
      const err = await device.openChannel({ deposit: 1_000n, challengeDuration: 60n }).catch((e: unknown) => e);
      expect(isTrickleError(err, 'WRONG_CHANNEL')).toBe(true);
      expect((err as TrickleError).details).toMatchObject({ challengeDuration: 60n, minChallengeSeconds: 600n });
      expect(await server.provider.getBalance(server.addresses[2]!)).toBe(before);
      expect(await fileChannelStore(join(w.dir, 'bin-challenge-device')).list()).toEqual([]);
      // The hub refuses it itself (a client that does not check, or an older one).
      const params = {
        chainId: server.chainId,
        adjudicator: adjudicator as Address,
        device: device.address,
        hub: device.hub.hub,
        token: '0x0000000000000000000000000000000000000000' as Address,
        challengeDuration: 60n,
        salt: `0x${'11'.repeat(32)}` as Bytes32,
      };
      const refused = await device.request((id) => ({ t: 'open', id, params })).catch((e: unknown) => e);
      expect(isTrickleError(refused, 'WRONG_CHANNEL')).toBe(true);
      expect((refused as TrickleError).message).toMatch(/challenge period of at least 600 s/);
      const ch = await device.openChannel({ deposit: 1_000n, challengeDuration: 600n }); // the default floor
      await ch.pay(1n);
      expect(ch.latest.state.paidByDevice).toBe(1n);
    } finally {
      await device.disconnect();
      await hub.stop();
    }
  });

  it('warns when its store is on a temporary filesystem, and not on a persistent one', async () => {
    const run = (store: string) => runBin([...base(), '--adjudicator', adjudicator, '--store', store]);
    const warning = /the store is on a temporary filesystem/;
    const inTmp = await run(join(w.dir, 'bin-tmp-store')); // under os.tmpdir()
    expect(inTmp.lines.some((l) => warning.test(l) && l.includes('"level":40'))).toBe(true);
    expect(inTmp.code, inTmp.why).toBe(0);
    // The funded hub key of base(): no warning about gas.
    expect(inTmp.lines.some((l) => l.includes('no native token for gas'))).toBe(false);
    const persistent = mkdtempSync('/var/tmp/trickle-startup-'); // /var/tmp survives reboots
    try {
      if (statfsSync(persistent).type !== 0x01021994) {
        const onDisk = await run(join(persistent, 'store'));
        expect(onDisk.lines.some((l) => warning.test(l))).toBe(false);
      }
    } finally {
      rmSync(persistent, { recursive: true, force: true });
    }
  });

  it('acts on chain events 2 blocks behind the head by default, except on a development chain; --confirmations sets it', async () => {
    const confirmationsOf = (lines: string[]) =>
      lines
        .filter((l) => l.includes('following the chain'))
        .map((l) => (JSON.parse(l) as { confirmations: number }).confirmations);
    const info = (store: string) => [
      ...base(),
      '--adjudicator',
      adjudicator,
      '--store',
      join(w.dir, store),
      '--log-level',
      'info',
    ];
    const dev = await runBin(info('bin-confirm-dev'));
    expect([dev.code, confirmationsOf(dev.lines)]).toEqual([0, [0]]);
    const set = await runBin([...info('bin-confirm-set'), '--confirmations', '5']);
    expect([set.code, confirmationsOf(set.lines)]).toEqual([0, [5]]);
    // A chain of another id (a real network's, served here by the development node): reorganisations are possible.
    const other = await startChainServer({ accounts: 3, chainId: 100 });
    try {
      const otherAdjudicator = (await deployAdjudicator(other.wallet(0))).address;
      const args = info('bin-confirm-other');
      args[args.indexOf('--rpc') + 1] = other.url;
      args[args.indexOf('--adjudicator') + 1] = otherAdjudicator;
      const real = await runBin(args);
      expect([real.code, confirmationsOf(real.lines)]).toEqual([0, [2]]);
    } finally {
      await other.stop();
    }
  });

  it('warns at start when the hub key has no gas to challenge with', async () => {
    const keyFile = join(w.dir, 'unfunded.key');
    writeFileSync(keyFile, `0x${'42'.repeat(32)}\n`, { mode: 0o600 }); // an account the chain never funded
    const args = [...base(), '--adjudicator', adjudicator, '--store', join(w.dir, 'bin-unfunded')];
    args[args.indexOf('--key-file') + 1] = keyFile;
    const { lines, code, why } = await runBin(args);
    expect(code, why).toBe(0);
    expect(lines.some((l) => l.includes('"level":40') && l.includes('no native token for gas'))).toBe(true);
  });

  it('exits 1 with NO_CONTRACT when the adjudicator address has no code', async () => {
    const err = await spawnHub([...base(), '--adjudicator', NOWHERE, '--store', join(w.dir, 'bin-nowhere')]).catch(
      (e: unknown) => e,
    );
    expect(isTrickleError(err, 'INTERNAL')).toBe(true); // spawnHub: the process exited before listening
    expect(String((err as Error).message)).toMatch(
      /exited with 1: trickle-hub: NO_CONTRACT: .*"adjudicator":"0x000000000000000000000000000000000000dEaD"/,
    );
  });

  it('--max-handshakes-per-address bounds the connections of one address that have not authenticated', async () => {
    const hub = await spawnHub([
      ...base(),
      '--adjudicator',
      adjudicator,
      '--store',
      join(w.dir, 'bin-handshakes'),
      '--max-handshakes-per-address',
      '2',
    ]);
    const open: RawDevice[] = [];
    try {
      for (let i = 0; i < 2; i++) open.push(await RawDevice.connect(hub.url)); // challenged, never authenticating
      const third = await RawDevice.connect(hub.url).catch((e: unknown) => String(e));
      expect(third).toContain('1013');
    } finally {
      for (const d of open) d.close();
      await hub.stop();
    }
  });

  it('serves https and wss with --tls-cert/--tls-key, and the dashboard with --dashboard-token-file', async () => {
    const certFile = join(w.dir, 'cert.pem');
    const keyFile = join(w.dir, 'key.pem');
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:prime256v1',
        '-nodes',
        '-days',
        '1',
        '-subj',
        '/CN=localhost',
        '-addext',
        'subjectAltName=IP:127.0.0.1',
        '-keyout',
        keyFile,
        '-out',
        certFile,
      ],
      { stdio: 'ignore' },
    );
    const tokenFile = join(w.dir, 'dashboard.token');
    writeFileSync(tokenFile, 'a-long-operator-token-from-a-file\n', { mode: 0o600 });
    const hub = await spawnHub([
      ...base(),
      '--adjudicator',
      adjudicator,
      '--store',
      join(w.dir, 'bin-tls'),
      '--tls-cert',
      certFile,
      '--tls-key',
      keyFile,
      '--dashboard-token-file',
      tokenFile,
    ]);
    try {
      expect(hub.url).toMatch(/^wss:\/\/127\.0\.0\.1:\d+\/$/);
      const https = hub.url.replace('wss://', 'https://');
      const ca = readFileSync(certFile, 'utf8');
      const status = (path: string, headers: Record<string, string> = {}) =>
        new Promise<number>((resolve, reject) =>
          get(`${https}${path}`, { ca, headers }, (res) => resolve(res.resume().statusCode ?? 0)).on('error', reject),
        );
      expect(await status('health')).toBe(200);
      expect(await status('api/summary')).toBe(401);
      expect(await status('api/summary', { authorization: 'Bearer a-long-operator-token-from-a-file' })).toBe(200);
    } finally {
      await hub.stop();
    }
    expect(hub.child.exitCode).toBe(0);
  });
});
