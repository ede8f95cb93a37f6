/**
 * A new operator's common mistakes with `trickle-hub` and `trickle deploy`, run as the bins: each is refused with one
 * line on stderr that names the flag and the file at fault, exit 1 (or the CLI's network exit), no stack trace, and no
 * secret (a private key, the password of an `--rpc` URL) in what is printed.
 */
import { execFileSync, spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HUB_BIN } from '@trickle/hub/spawn';
import type { ChainServer } from '@trickle/devchain/chainServer';
import { redactUrl } from '@trickle/chain/rpc';
import { rpcRelay } from './helpers/rpc-relay.js';
import { closeHubKeyChain, hubKeyChain } from './helpers/hub-key-chain.js';

const CLI_BIN = fileURLToPath(new URL('../packages/cli/dist/bin.js', import.meta.url));

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Run a bin until it exits (a hub that starts listening is killed and reported with code null). */
function run(bin: string, args: readonly string[]): Promise<Run> {
  return new Promise((resolve, reject) => {
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('TRICKLE_')));
    const child = spawn(process.execPath, [bin, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => {
      stdout += String(d);
      if (stdout.includes('"event":"listening"')) child.kill('SIGKILL');
    });
    child.stderr.on('data', (d) => (stderr += String(d)));
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.once('error', reject);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** One line on stderr, no stack trace. */
function oneLine(r: Run): string {
  expect(r.stderr).not.toMatch(/^\s+at /m);
  const lines = r.stderr.trimEnd().split('\n');
  expect(lines, r.stderr).toHaveLength(1);
  return lines[0]!;
}

describe('trickle-hub: a first start gone wrong', () => {
  let server: ChainServer, adjudicator: string, dir: string, hubKey: string;
  beforeAll(async () => {
    ({ server, adjudicator, dir, hubKey } = await hubKeyChain('operator-audit-'));
  });
  afterAll(() => closeHubKeyChain({ server, dir }));
  const hub = (args: string[], store = 'store') =>
    run(HUB_BIN, [
      ...['--rpc', server.url, '--adjudicator', adjudicator, '--port', '0', '--log-level', 'warn'],
      ...['--store', join(dir, store), ...args],
    ]);

  it('a --key-file readable by other users: the hub starts and warns once, naming the file (the key never printed)', async () => {
    const open = join(dir, 'open.key');
    writeFileSync(open, `${server.accounts[1]}\n`, { mode: 0o644 });
    const r = await hub(['--key-file', open], 'store-open-key');
    expect(r.code).toBeNull(); // it started listening
    const warned = r.stdout.split('\n').filter((l) => l.includes('readable by other users'));
    expect(warned).toHaveLength(1);
    expect(JSON.parse(warned[0]!)).toMatchObject({ level: 40, keyFile: open });
    expect(r.stdout + r.stderr).not.toContain(server.accounts[1]!.slice(2));
    const closed = await hub(['--key-file', hubKey], 'store-closed-key');
    expect(closed.code).toBeNull();
    expect(closed.stdout).not.toContain('readable by other users');
  });

  it('a --key-file that is missing or holds no private key: one line naming --key-file and the file, exit 1', async () => {
    const missing = await hub(['--key-file', join(dir, 'nope.key')]);
    expect(missing.code).toBe(1);
    expect(oneLine(missing)).toMatch(/^trickle-hub: INVALID_ARGUMENT: cannot read --key-file .*nope\.key: ENOENT/);

    // An address pasted instead of a key, a key cut short, a key of zero: each said only "not 0x-prefixed hex" or
    // "private key must be 32 bytes in [1, n-1]", naming neither the flag nor the file.
    const address = server.addresses[1]!;
    for (const [name, text] of [
      ['address.key', address],
      ['short.key', String(server.accounts[1]).slice(0, -2)],
      ['zero.key', `0x${'00'.repeat(32)}`],
      ['words.key', 'my hub key'],
    ] as const) {
      const file = join(dir, name);
      writeFileSync(file, `${text}\n`, { mode: 0o600 });
      const r = await hub(['--key-file', file]);
      expect(r.code, name).toBe(1);
      const line = oneLine(r);
      expect(line, name).toBe(
        `trickle-hub: INVALID_ARGUMENT: --key-file ${file} must hold one 0x-prefixed 32-byte hex private key`,
      );
    }
  });

  it('--tls-cert and --tls-key that do not belong together, or a missing one: one line naming both flags, exit 1', async () => {
    const make = (name: string) => {
      execFileSync(
        'openssl',
        [
          ...['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'],
          ...['-keyout', join(dir, `${name}.key.pem`), '-out', join(dir, `${name}.cert.pem`)],
          ...['-subj', '/CN=localhost', '-days', '1'],
        ],
        { stdio: 'ignore' },
      );
      return { cert: join(dir, `${name}.cert.pem`), key: join(dir, `${name}.key.pem`) };
    };
    const a = make('a');
    const b = make('b');
    const mismatch = await hub(['--key-file', hubKey, '--tls-cert', a.cert, '--tls-key', b.key]);
    expect(mismatch.code).toBe(1);
    // Was OpenSSL's "error:05800074:x509 certificate routines::key values mismatch", naming no flag nor file.
    expect(oneLine(mismatch)).toMatch(
      /^trickle-hub: INVALID_ARGUMENT: --tls-cert .*a\.cert\.pem and --tls-key .*b\.key\.pem cannot serve TLS: .*key values mismatch/,
    );
    const swapped = await hub(['--key-file', hubKey, '--tls-cert', a.key, '--tls-key', a.cert]);
    expect(swapped.code).toBe(1);
    expect(oneLine(swapped)).toMatch(
      /^trickle-hub: INVALID_ARGUMENT: --tls-cert .*a\.key\.pem and --tls-key .* cannot/,
    );
    const missing = await hub(['--key-file', hubKey, '--tls-cert', a.cert, '--tls-key', join(dir, 'none.pem')]);
    expect(missing.code).toBe(1);
    expect(oneLine(missing)).toMatch(/^trickle-hub: INVALID_ARGUMENT: cannot read --tls-key .*none\.pem: ENOENT/);
    const token = await hub(['--key-file', hubKey, '--dashboard-token-file', join(dir, 'none.token')]);
    expect(token.code).toBe(1);
    expect(oneLine(token)).toMatch(
      /^trickle-hub: INVALID_ARGUMENT: cannot read --dashboard-token-file .*none\.token: ENOENT/,
    );
    const good = await hub(['--key-file', hubKey, '--tls-cert', a.cert, '--tls-key', a.key]);
    expect(good.stdout).toContain('"url":"wss://');
  });

  it('an address flag that holds no address, or an unknown --log-level: one line naming the flag, exit 1', async () => {
    // Were "MALFORMED: not a 20-byte address" (which flag?) and pino's "default level:loud must be included in
    // custom levels".
    const cases: [string[], RegExp][] = [
      [['--adjudicator', '0x1234'], /^trickle-hub: INVALID_ARGUMENT: --adjudicator must be a 20-byte 0x-hex address/],
      [
        ['--market-round-ms', '1000', '--market-token', 'usdt'],
        /^trickle-hub: INVALID_ARGUMENT: --market-token must be a 20-byte 0x-hex address/,
      ],
      [
        ['--log-level', 'loud'],
        /^trickle-hub: INVALID_ARGUMENT: --log-level must be one of trace, debug, info, warn, error, fatal, silent/,
      ],
    ];
    for (const [args, expected] of cases) {
      const r = await hub(['--key-file', hubKey, ...args]);
      expect(r.code, args.join(' ')).toBe(1);
      expect(oneLine(r), args.join(' ')).toMatch(expected);
    }
  });

  it('an --rpc URL with a password: the password is printed nowhere', async () => {
    expect(redactUrl('https://me:secret@rpc.example/')).toBe('https://me:***@rpc.example/'); // its doc example
    // A hosted endpoint's API key is in its path: hidden too (test/operator-surface.e2e.test.ts).
    expect(redactUrl('https://rpc.example/v3/key')).toBe('https://rpc.example/***');
    // Nothing listens there (https on a closed port): refused DISCONNECTED, the URL shown without its password.
    const url = 'https://operator:rpc-S3CRET@127.0.0.1:1/';
    const r = await hub(['--key-file', hubKey, '--rpc', url]);
    expect(r.code).toBe(1);
    const line = oneLine(r);
    expect(line).toMatch(
      /^trickle-hub: DISCONNECTED: cannot reach the chain at https:\/\/operator:\*\*\*@127\.0\.0\.1/,
    );
    expect(r.stdout + r.stderr).not.toContain('rpc-S3CRET');

    const deployerKey = join(dir, 'deployer.key');
    writeFileSync(deployerKey, `${server.accounts[0]}\n`, { mode: 0o600 });
    const d = await run(CLI_BIN, ['deploy', '--rpc', url, '--key-file', deployerKey, '--chain-id', '31337']);
    expect(d.code).not.toBe(0);
    expect(d.stderr).toMatch(/cannot reach the chain at https:\/\/operator:\*\*\*@127\.0\.0\.1/);
    expect(d.stdout + d.stderr).not.toContain('rpc-S3CRET');

    // A password over plain http to another host is refused before anything is sent.
    const clear = await hub(['--key-file', hubKey, '--rpc', 'http://operator:rpc-S3CRET@rpc.example:8545/']);
    expect(clear.code).toBe(1);
    expect(oneLine(clear)).toMatch(
      /^trickle-hub: INVALID_ARGUMENT: http:\/\/operator:\*\*\*@rpc\.example:8545\/: a user name or password goes only over https/,
    );
    expect(clear.stdout + clear.stderr).not.toContain('rpc-S3CRET');
  });

  it('an --rpc endpoint behind basic auth (user and password in the URL): the hub and trickle deploy reach it', async () => {
    const expected = `Basic ${Buffer.from('operator:p@ss word').toString('base64')}`;
    let refused = 0;
    const relay = await rpcRelay(server.url, (body, res, req) => {
      if (req.headers.authorization === expected) return body;
      refused++;
      res.writeHead(401).end();
      return undefined;
    });
    try {
      const port = new URL(relay.url).port;
      const url = `http://operator:p%40ss%20word@127.0.0.1:${port}/`;
      const deployerKey = join(dir, 'deployer-auth.key');
      writeFileSync(deployerKey, `${server.accounts[0]}\n`, { mode: 0o600 });
      const deploy = (chainId: string) =>
        run(CLI_BIN, ['deploy', '--rpc', url, '--key-file', deployerKey, '--chain-id', chainId, '--json']);
      const d = await deploy('31337');
      expect(d.code, d.stderr).toBe(0);
      const deployed = (JSON.parse(d.stdout.trim().split('\n').at(-1)!) as { adjudicator: string }).adjudicator;
      expect(deployed).toMatch(/^0x[0-9a-fA-F]{40}$/);
      // Refusals that name the endpoint (another chain id; no contract at --adjudicator) show it without its password.
      const shown = `http://operator:***@127.0.0.1:${port}/`;
      const wrongChain = await deploy('1');
      const noContract = await run(CLI_BIN, [
        ...[
          'show',
          `0x${'ab'.repeat(32)}`,
          '--rpc',
          url,
          '--adjudicator',
          '0x000000000000000000000000000000000000dEaD',
          '--json',
        ],
      ]);
      for (const refused of [wrongChain, noContract]) {
        expect(refused.code).toBe(1);
        expect(`${refused.stdout}${refused.stderr}`).not.toMatch(/p%40ss|p@ss/);
        expect(JSON.parse(refused.stdout.trim().split('\n').at(-1)!)).toMatchObject({
          error: { details: { url: shown } },
        });
      }
      const r = await run(HUB_BIN, [
        ...['--rpc', url, '--adjudicator', deployed, '--port', '0', '--log-level', 'warn'],
        ...['--store', join(dir, 'store-auth'), '--key-file', hubKey],
      ]);
      expect(r.code, r.stderr).toBeNull(); // it started listening
      expect(refused).toBe(0);
      // Without the password the endpoint refuses, and the hub says it cannot reach it.
      const without = await hub(['--key-file', hubKey, '--rpc', relay.url]);
      expect(without.code).toBe(1);
      expect(oneLine(without)).toMatch(/DISCONNECTED: cannot reach the chain .*HTTP 401/);
    } finally {
      relay.server.closeAllConnections();
      await new Promise((r) => relay.server.close(r));
    }
  });
});
