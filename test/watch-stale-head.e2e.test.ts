import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Wallet } from 'ethers';
import { startChainServer, type ChainServer } from '@trickle/devchain/chainServer';
import { createWatchtower, type Watchtower } from '@trickle/cli/watch/watchtower';
import { openWatchedChannel } from './helpers/watched-channel.js';

/**
 * A watchtower whose node stopped following the chain (stuck syncing, a backend cut off from its peers) answers every
 * read without an error, from an old head: the follower is "caught up", every channel reads open, a force close on the
 * real chain is never seen — and `GET /health` said `ok`. The watchtower now notes when the confirmed head last moved:
 * `headIdleMs` in the status and `/health`, `degraded` (and a `head-stale` warning) once it stood still longer than
 * `maxHeadAgeMs` (`--max-head-age-seconds`), `ok` again once it moves.
 */
describe('watchtower: a node whose head stands still', () => {
  let server: ChainServer;
  let dir: string;
  let tower: Watchtower | undefined;

  beforeAll(async () => {
    server = await startChainServer({ accounts: 4 });
    dir = mkdtempSync(join(tmpdir(), 'trickle-watch-stale-head-'));
  });
  afterAll(async () => {
    await tower?.stop();
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('is degraded while the head stands still past maxHeadAgeMs, ok once it moves', async () => {
    const { adj } = await openWatchedChannel(server, { device: 1, hub: 2, salt: '5e' });
    const events: string[] = [];
    tower = createWatchtower({
      provider: server.provider,
      adjudicator: adj.address,
      sender: new Wallet(server.accounts[3]!, server.provider),
      dbPath: join(dir, 'db'),
      confirmations: 0,
      pollMs: 100,
      maxHeadAgeMs: 1_500,
      listen: { port: 0 },
      log: (_level, event) => void events.push(event),
    });
    await tower.start();
    const health = async () => (await (await fetch(`${tower!.apiUrl}/health`)).json()) as Record<string, unknown>;
    expect(await health()).toMatchObject({ status: 'ok' });

    // No block for 2.5 s (the development chain mines only on transactions): the node reads as stuck.
    await new Promise((r) => setTimeout(r, 2_500));
    const stale = await health();
    expect(stale).toMatchObject({ status: 'degraded', caughtUp: true });
    expect(stale['headIdleMs']).toBeGreaterThanOrEqual(1_500);
    expect(events.filter((e) => e === 'head-stale')).toHaveLength(1);

    await server.mine(1);
    const end = Date.now() + 5_000;
    while ((await health())['status'] !== 'ok' && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
    expect(await health()).toMatchObject({ status: 'ok' });
    expect(events).toContain('head-moving');
  });
});
