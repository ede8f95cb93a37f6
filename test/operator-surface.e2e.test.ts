/**
 * The hub operator's surface, run as the `trickle-hub` bin: what it prints about its chain endpoint, and the URL it says
 * it listens at.
 */
import { execFileSync, spawn } from 'node:child_process';
import { chmodSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HUB_BIN, HUB_NODE_ARGS } from '@trickle/hub/spawn';
import type { ChainServer } from '@trickle/devchain/chainServer';
import { redactUrl } from '@trickle/chain/rpc';
import { rpcRelay } from './helpers/rpc-relay.js';
import { waitFor } from './helpers/wait.js';
import { closeHubKeyChain, hubKeyChain } from './helpers/hub-key-chain.js';

/** A `trickle-hub` child with everything it prints (pino logs go to stdout). */
function startBin(args: readonly string[]) {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('TRICKLE_')));
  const child = spawn(process.execPath, [...HUB_NODE_ARGS, HUB_BIN, ...args], {
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.on('data', (d) => (out += String(d)));
  child.stderr.on('data', (d) => (out += String(d)));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  return {
    output: () => out,
    exited,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
  };
}

describe('trickle-hub: the chain endpoint’s credentials', () => {
  let server: ChainServer, adjudicator: string, dir: string, hubKey: string;
  beforeAll(async () => {
    ({ server, adjudicator, dir, hubKey } = await hubKeyChain('operator-surface-'));
  });
  afterAll(() => closeHubKeyChain({ server, dir }));

  it('an API key in the --rpc path (https://host/v2/<key>, as hosted endpoints take it) is printed nowhere: not at start, not in the chain-poll warnings', async () => {
    const KEY = 'alchemy-KEY-5ecret-0123456789';
    expect(redactUrl(`https://eth-mainnet.example/v2/${KEY}`)).toBe('https://eth-mainnet.example/***');
    expect(redactUrl(`https://me:pw@rpc.example/?apikey=${KEY}`)).toBe('https://me:***@rpc.example/***');
    expect(redactUrl('http://127.0.0.1:8545/')).toBe('http://127.0.0.1:8545/');
    expect(redactUrl('http://127.0.0.1:8545')).toBe('http://127.0.0.1:8545');

    // Unreachable: refused at start, the endpoint named without its key.
    const down = startBin([
      ...['--rpc', `https://127.0.0.1:1/v2/${KEY}`, '--adjudicator', adjudicator, '--key-file', hubKey],
      ...['--store', join(dir, 'store-down'), '--port', '0'],
    ]);
    expect(await down.exited).toBe(1);
    expect(down.output()).toMatch(/cannot reach the chain at https:\/\/127\.0\.0\.1:1\/\*\*\*/);
    expect(down.output()).not.toContain(KEY);

    // Reachable at start, then the endpoint fails every request (a quota spent, an outage): the hub warns at each
    // poll — without the key.
    let failing = false;
    const relay = await rpcRelay(server.url, (body, res) => {
      if (!failing) return body;
      res.writeHead(500, { 'content-type': 'text/plain' }).end('upstream quota exceeded');
      return undefined;
    });
    const hub = startBin([
      ...['--rpc', `${relay.url}/v2/${KEY}`, '--adjudicator', adjudicator, '--key-file', hubKey],
      ...['--store', join(dir, 'store-up'), '--port', '0', '--poll-ms', '100', '--log-level', 'warn'],
    ]);
    try {
      await waitFor(() => hub.output().includes('"event":"listening"'), 20_000);
      failing = true;
      await waitFor(() => hub.output().includes('chain poll failed'), 20_000);
      expect(hub.output()).toContain('500 Internal Server Error'); // what went wrong is still said
      expect(hub.output()).toContain(`${relay.url}/***`); // and where
      expect(hub.output()).not.toContain(KEY);
    } finally {
      await hub.stop();
      relay.server.close();
    }
  });

  it('--host on an IPv6 address: the listening line names URLs that parse and reach the hub', async () => {
    const hub = startBin([
      ...['--rpc', server.url, '--adjudicator', adjudicator, '--key-file', hubKey],
      ...['--store', join(dir, 'store-v6'), '--port', '0', '--host', '::1', '--log-level', 'warn'],
    ]);
    try {
      await waitFor(() => hub.output().includes('"event":"listening"'), 20_000);
      const line = hub
        .output()
        .split('\n')
        .find((l) => l.includes('"event":"listening"'))!;
      const { url, httpUrl, port } = JSON.parse(line) as { url: string; httpUrl: string; port: number };
      expect(url).toBe(`ws://[::1]:${port}/`);
      expect(httpUrl).toBe(`http://[::1]:${port}/`);
      const health = await fetch(new URL('health', httpUrl));
      expect(health.status).toBe(200);
      expect(hub.output()).not.toContain('serving without TLS on a non-loopback interface'); // ::1 is loopback
    } finally {
      await hub.stop();
    }
  });

  it.each([
    ['--poll-ms', '2147483648'],
    ['--market-round-ms', '2147483648'],
    ['--cluster-lease-ms', '9999999999'],
  ])(
    '%s %s, longer than a Node timer waits (it would fire after 1 ms: the chain polled without pause): exit 1 naming the flag',
    async (flag, value) => {
      const hub = startBin([
        ...['--rpc', server.url, '--adjudicator', adjudicator, '--key-file', hubKey],
        ...['--store', join(dir, 'store-timer'), '--port', '0', '--log-level', 'warn', flag, value],
      ]);
      const code = await Promise.race([hub.exited, new Promise((r) => setTimeout(() => r('still running'), 15_000))]);
      await hub.stop();
      expect(code, hub.output()).toBe(1);
      expect(hub.output()).toMatch(
        new RegExp(`^trickle-hub: INVALID_ARGUMENT: ${flag} must be a whole number from 1 to 2147483647`, 'm'),
      );
    },
  );

  it('a --tls-key or --dashboard-token-file readable by other users: the hub starts and warns for each, naming the flag and file (never its content)', async () => {
    const certFile = join(dir, 'cert.pem');
    const keyFile = join(dir, 'tls-key.pem');
    execFileSync(
      'openssl',
      [
        ...['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1'],
        ...['-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', keyFile, '-out', certFile],
      ],
      { stdio: 'ignore' },
    );
    const tokenFile = join(dir, 'dashboard.token');
    const token = 'op-token-0123456789abcdef';
    writeFileSync(tokenFile, `${token}\n`);
    const started = async (store: string) => {
      const hub = startBin([
        ...['--rpc', server.url, '--adjudicator', adjudicator, '--key-file', hubKey, '--log-level', 'warn'],
        ...['--store', join(dir, store), '--port', '0', '--tls-cert', certFile, '--tls-key', keyFile],
        ...['--dashboard-token-file', tokenFile],
      ]);
      try {
        await waitFor(() => hub.output().includes('"event":"listening"'), 20_000);
      } finally {
        await hub.stop();
      }
      return hub.output();
    };
    chmodSync(keyFile, 0o644);
    chmodSync(tokenFile, 0o644);
    const open = await started('store-open-files');
    const warned = open.split('\n').filter((l) => l.includes('readable by other users'));
    expect(warned.map((l) => JSON.parse(l) as Record<string, unknown>)).toEqual([
      expect.objectContaining({ level: 40, tlsKey: keyFile }),
      expect.objectContaining({ level: 40, dashboardTokenFile: tokenFile }),
    ]);
    expect(open).not.toContain(token);
    expect(open).not.toContain('PRIVATE KEY');

    chmodSync(keyFile, 0o600);
    chmodSync(tokenFile, 0o600);
    expect(await started('store-closed-files')).not.toContain('readable by other users');
  });

  it('an empty --dashboard-token-file (a token generation that failed) is refused naming the flag and file, not a hub without its dashboard', async () => {
    const empty = join(dir, 'empty.token');
    writeFileSync(empty, '\n', { mode: 0o600 });
    const hub = startBin([
      ...['--rpc', server.url, '--adjudicator', adjudicator, '--key-file', hubKey, '--log-level', 'warn'],
      ...['--store', join(dir, 'store-empty-token'), '--port', '0', '--dashboard-token-file', empty],
    ]);
    const code = await Promise.race([hub.exited, new Promise((r) => setTimeout(() => r('still running'), 15_000))]);
    await hub.stop();
    expect(code, hub.output()).toBe(1);
    expect(hub.output()).toContain(`trickle-hub: INVALID_ARGUMENT: --dashboard-token-file ${empty}`);
  });
});
