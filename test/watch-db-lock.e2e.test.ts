import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Wallet } from 'ethers';
import { startChainServer, type ChainServer } from '@trickle/devchain/chainServer';
import { createWatchtower, type Watchtower } from '@trickle/cli/watch/watchtower';
import { isTrickleError } from '@trickle/protocol/errors';
import { spawnTrickle } from './helpers/trickle-bin.js';
import { openWatchedChannel } from './helpers/watched-channel.js';

/**
 * One watchtower database, one watchtower. Each keeps the held states in memory and writes them over the database's,
 * so a second watchtower on the same `--db` (a restart script that did not wait, two supervisors) overwrote the newest
 * state the first had accepted with an older one it was handed: restarted, the watchtower held the older state and let
 * a force close with it stand. Both also sent from one account and wrote each other's stuck copies. A second opener is
 * now refused (`STORE_FAILURE`, exit 1 for `trickle watch`) while the first runs; a dead holder's lock is taken over.
 */
const DEVICE = 1;
const HUB = 2;
const TOWER = 3;

describe('watchtower database: one watchtower at a time', () => {
  let server: ChainServer;
  let dir: string;
  const towers: Watchtower[] = [];

  beforeAll(async () => {
    server = await startChainServer({ accounts: 5 });
    dir = mkdtempSync(join(tmpdir(), 'trickle-watch-db-lock-'));
  });
  afterAll(async () => {
    for (const t of towers) await t.stop();
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('refuses a second watchtower on a database in use, in-process and as `trickle watch`; takes a dead holder’s over', async () => {
    const { adj, params, sign } = await openWatchedChannel(server, { device: DEVICE, hub: HUB, salt: 'd1' });
    const dbPath = join(dir, 'db');
    const tower = () => {
      const t = createWatchtower({
        provider: server.provider,
        adjudicator: adj.address,
        sender: new Wallet(server.accounts[TOWER]!, server.provider),
        dbPath,
        confirmations: 0,
        pollMs: 50,
        log: () => undefined,
      });
      towers.push(t);
      return t;
    };

    const first = tower();
    await first.start();
    await first.addState({ params, latest: sign(2n, 300n) });

    // A second one in this process: refused, and it wrote nothing (an older state handed to it would have replaced v2).
    const second = tower();
    const refused = await second.start().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(isTrickleError(refused, 'STORE_FAILURE')).toBe(true);
    expect((refused as Error).message).toContain(`in use by process ${process.pid}`);
    await expect(second.addState({ params, latest: sign(1n, 100n) })).rejects.toThrow(/not running/);

    // `trickle watch` on the same database, from another process: exit 1, naming the holder.
    writeFileSync(join(dir, 'key'), `${server.accounts[4]}\n`, { mode: 0o600 });
    const watch = spawnTrickle(['watch', '--db', dbPath, '--key-file', join(dir, 'key'), '--poll-ms', '100'], {
      rpcUrl: server.url,
      adjudicator: adj.address,
    });
    const timer = setTimeout(() => watch.child.kill('SIGTERM'), 15_000);
    const code = await watch.exited;
    clearTimeout(timer);
    expect(code).toBe(1);
    expect(watch.stderr).toContain(`in use by process ${process.pid}`);
    expect(watch.lines.some((l) => l['event'] === 'started')).toBe(false);

    // Once the first stops, the next one opens it and holds v2.
    await first.stop();
    const third = tower();
    await third.start();
    expect(third.channels().map((c) => c.version)).toEqual([2n]);
    await third.stop();

    // A lock left by a process that is gone (SIGKILLed) does not stop the next start.
    const dead = Number(spawnSync(process.execPath, ['-e', 'console.log(process.pid)'], { encoding: 'utf8' }).stdout);
    writeFileSync(join(dbPath, 'watchtower.pid'), `${dead}\n`);
    const fourth = tower();
    await fourth.start();
    expect(fourth.channels().map((c) => c.version)).toEqual([2n]);
  });
});
