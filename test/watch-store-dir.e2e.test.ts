import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startChainServer, type ChainServer } from '@trickle/devchain/chainServer';
import { deployAdjudicator } from '@trickle/chain/deploy';
import type { Address } from '@trickle/protocol/types';
import { createWatchtower } from '@trickle/cli/watch/watchtower';
import { fileChannelStore } from '@trickle/client/store';
import type { Bytes32 } from '@trickle/protocol/types';
import { openWatchedChannel } from './helpers/watched-channel.js';
import { runTrickle, spawnTrickle, watchTestFlags } from './helpers/trickle-bin.js';

/** Poll `cond` (sync or async) until it holds, bounded in time. */
async function until(cond: () => boolean | Promise<boolean>, timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** The watchtower API's `GET /health` answer at `api`. */
const healthAt = async (api: string | undefined): Promise<Record<string, unknown>> =>
  (await (await fetch(`${api}/health`)).json()) as Record<string, unknown>;

/**
 * `trickle watch --store <dir>` with a directory that is not there: a mistyped path used to be logged once
 * (`store-unreadable`) while the watchtower ran on, guarding nothing from it. It is refused at start (exit 1,
 * INVALID_ARGUMENT naming the path) unless `--allow-missing-store`; a directory that goes away while the watchtower
 * runs is a warning and `storeError` in `/health` (degraded), and the watchtower keeps running.
 */
describe('watchtower: a --store directory that does not exist', () => {
  let server: ChainServer;
  let dir: string;
  let adjudicator: Address;

  beforeAll(async () => {
    server = await startChainServer({ accounts: 3 });
    dir = mkdtempSync(join(tmpdir(), 'trickle-watch-store-dir-'));
    adjudicator = (await deployAdjudicator(server.wallet(0))).address;
    writeFileSync(join(dir, 'gas.key'), `${server.accounts[2]}\n`, { mode: 0o600 });
  });
  afterAll(async () => {
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const watchArgs = (db: string, store: string) => [
    'watch',
    '--db',
    join(dir, db),
    '--key-file',
    join(dir, 'gas.key'),
    '--store',
    store,
    '--json',
  ];

  it('is refused at start: INVALID_ARGUMENT naming the path, exit 1 (also a file, and TRICKLE_STORE)', async () => {
    const missing = join(dir, 'no-such-store');
    const typo = await runTrickle(watchArgs('db-missing', missing), { rpcUrl: server.url, adjudicator });
    expect(typo.code).toBe(1);
    expect(JSON.parse(typo.stdout.trim().split('\n').at(-1)!)).toMatchObject({
      ok: false,
      error: { code: 'INVALID_ARGUMENT', exitCode: 1, message: expect.stringContaining(missing) },
    });
    const file = join(dir, 'a-file');
    writeFileSync(file, 'not a directory');
    const notDir = await runTrickle(watchArgs('db-file', file), { rpcUrl: server.url, adjudicator });
    expect(notDir.code).toBe(1);
    expect(JSON.parse(notDir.stdout.trim().split('\n').at(-1)!)).toMatchObject({
      error: { code: 'INVALID_ARGUMENT', message: expect.stringContaining(file) },
    });
    const fromEnv = await runTrickle(
      watchArgs('db-env', missing).filter((a) => a !== '--store' && a !== missing),
      { rpcUrl: server.url, adjudicator },
      { TRICKLE_STORE: missing },
    );
    expect(fromEnv.code).toBe(1);
    expect(fromEnv.stdout).toContain(missing);
    // In-process: start() refuses the same, with nothing opened (the database is free for the next start).
    const tower = (storeDir: string, allowMissingStore?: boolean) =>
      createWatchtower({
        provider: server.provider,
        adjudicator,
        sender: server.wallet(2),
        dbPath: join(dir, 'db-lib'),
        storeDir,
        allowMissingStore,
        confirmations: 0,
        log: () => undefined,
      });
    await expect(tower(missing).start()).rejects.toMatchObject({
      code: 'INVALID_ARGUMENT',
      details: { storeDir: missing, reason: 'ENOENT' },
    });
    const allowed = tower(missing, true);
    await allowed.start();
    expect(allowed.status()).toMatchObject({ running: true, storeError: 'ENOENT' });
    await allowed.stop();
  });

  it('with --allow-missing-store it starts, /health is degraded until the directory appears; one removed while running is a warning, not an exit', async () => {
    const store = join(dir, 'later-store');
    const watch = spawnTrickle(
      [...watchArgs('db-later', store).filter((a) => a !== '--json'), '--allow-missing-store', ...watchTestFlags(50)],
      { rpcUrl: server.url, adjudicator },
    );
    const { child, lines, exited } = watch;
    try {
      await until(() => lines.some((l) => l['event'] === 'started') || child.exitCode !== null, 20_000);
      expect(child.exitCode, watch.stderr).toBeNull();
      const api = lines.find((l) => l['event'] === 'started')!['api'] as string;
      const health = () => healthAt(api);
      expect(await health()).toMatchObject({ status: 'degraded', storeError: 'ENOENT' });
      expect(lines.filter((l) => l['event'] === 'store-unreadable')).toHaveLength(1);

      mkdirSync(store);
      await until(async () => (await health())['status'] === 'ok', 10_000);
      expect((await health())['storeError']).toBeUndefined();
      expect(lines.some((l) => l['event'] === 'store-readable')).toBe(true);

      rmSync(store, { recursive: true });
      await until(async () => (await health())['storeError'] === 'ENOENT', 10_000);
      expect(lines.filter((l) => l['event'] === 'store-unreadable')).toHaveLength(2);
      expect(child.exitCode).toBeNull();
    } finally {
      child.kill('SIGTERM');
    }
    expect(await exited).toBe(0);
  });

  it('/health is degraded while a record of the store is refused (corrupt, a lock list that does not match), ok once each is taken or gone', async () => {
    const {
      adj,
      channelId,
      sign,
      record: recordOf,
    } = await openWatchedChannel(server, { device: 1, hub: 2, salt: 'e6' });
    const store = join(dir, 'refused-store');
    mkdirSync(store);
    const corrupt = join(store, `0x${'cd'.repeat(32)}.channel`);
    writeFileSync(corrupt, Buffer.alloc(8192));
    const latest = sign(2n, 300n);
    const lock = { amount: 1n, hash: `0x${'77'.repeat(32)}` as Bytes32, expiry: 1n << 40n, payer: 'hub' as const };
    const record = recordOf(latest);
    const device = fileChannelStore(store);
    await device.save({ ...record, locks: [lock] }); // the state commits to no lock
    const tower = createWatchtower({
      provider: server.provider,
      adjudicator: adj.address,
      sender: server.wallet(2),
      dbPath: join(dir, 'db-refused'),
      storeDir: store,
      storePollMs: 50,
      listen: { port: 0 },
      confirmations: 0,
      pollMs: 50,
      log: () => undefined,
    });
    await tower.start();
    try {
      const health = () => healthAt(tower.apiUrl);
      expect(await health()).toMatchObject({
        status: 'degraded',
        storeRefused: 2,
        storeRefusedFiles: expect.arrayContaining([
          { file: corrupt, code: expect.any(String) },
          { file: join(store, `${channelId}.channel`), code: 'MALFORMED' },
        ]),
      });
      expect(tower.channels()).toEqual([]);
      await device.save(record); // the device writes its record right
      await until(async () => (await health())['storeRefused'] === 1, 10_000);
      expect(tower.channels().map((c) => c.version)).toEqual([2n]);
      rmSync(corrupt);
      await until(async () => (await health())['status'] === 'ok', 10_000);
      expect(await health()).toMatchObject({ storeRefused: 0, storeRefusedFiles: [] });
    } finally {
      await device.close?.();
      await tower.stop();
    }
  });

  it("/health is degraded when every record of the store is another adjudicator's (a watchtower started with the wrong --adjudicator), ok on the right one", async () => {
    const { adj, channelId, sign, record } = await openWatchedChannel(server, { device: 1, hub: 2, salt: 'e7' });
    const other = (await deployAdjudicator(server.wallet(0))).address; // a second deployment on the same chain
    const store = join(dir, 'foreign-store');
    mkdirSync(store);
    const device = fileChannelStore(store);
    await device.save(record(sign(2n, 300n)));
    await device.close?.();
    const tower = (
      adjudicator: Address,
      db: string,
      log: (level: string, event: string, f?: Record<string, unknown>) => void,
    ) =>
      createWatchtower({
        provider: server.provider,
        adjudicator,
        sender: server.wallet(2),
        dbPath: join(dir, db),
        storeDir: store,
        storePollMs: 50,
        listen: { port: 0 },
        confirmations: 0,
        pollMs: 50,
        log,
      });
    const logged: { level: string; event: string; fields?: Record<string, unknown> }[] = [];
    const wrong = tower(other, 'db-foreign-wrong', (level, event, fields) => logged.push({ level, event, fields }));
    await wrong.start();
    try {
      const health = () => healthAt(wrong.apiUrl);
      expect(await health()).toMatchObject({
        status: 'degraded',
        foreignRecords: 1,
        watching: "none of the store's records",
        storeRefused: 0,
      });
      expect(wrong.channels()).toEqual([]);
      await new Promise((r) => setTimeout(r, 300)); // several passes: still one warning
      const warned = logged.filter((l) => l.event === 'store-records-foreign');
      expect(warned).toHaveLength(1);
      expect(warned[0]).toMatchObject({
        level: 'warn',
        fields: { watched: { adjudicator: other }, record: { adjudicator: adj.address } },
      });
    } finally {
      await wrong.stop();
    }
    const right = tower(adj.address, 'db-foreign-right', () => undefined);
    await right.start();
    try {
      const health = () => healthAt(right.apiUrl);
      await until(async () => (await health())['status'] === 'ok', 10_000);
      expect(await health()).toMatchObject({ foreignRecords: 0 });
      expect((await health())['watching']).toBeUndefined();
      expect(right.channels().map((c) => c.version)).toEqual([2n]);
    } finally {
      await right.stop();
    }
  });
});
