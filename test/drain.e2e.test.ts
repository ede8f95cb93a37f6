import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WebSocket } from 'ws';
import { startChainServer, type ChainServer } from '@trickle/devchain/chainServer';
import { deployAdjudicator, deployToken } from '@trickle/chain/deploy';
import { mintTestToken } from '@trickle/chain/erc20';
import { nobleSigner } from '@trickle/protocol/signer';
import { openLmdbStore } from '@trickle/hub/store/lmdb';
import { spawnHub, type HubProcess } from '@trickle/hub/spawn';
import { TrickleClient } from '@trickle/client/client';
import { fileChannelStore } from '@trickle/client/store';
import { adjudicatorClientChain } from '@trickle/client/chain';
import type { ClientChannel } from '@trickle/client/channel';
import { freePort } from './helpers/hub-process.js';
import { waitFor } from './helpers/wait.js';

/**
 * SIGTERM drains a `trickle-hub` process while devices stream: it stops accepting, commits and acks what it took
 * in, closes every socket with 1001 and exits 0. Every state a device holds acked is the one on disk, and the
 * devices finish their streams on the restarted hub with exact totals.
 */
describe('hub SIGTERM: drain, exit 0, nothing lost', () => {
  let server: ChainServer;
  let dir: string;
  let hub: HubProcess | undefined;
  const clients: TrickleClient[] = [];

  beforeAll(async () => {
    server = await startChainServer({ accounts: 6 });
    dir = mkdtempSync(join(tmpdir(), 'trickle-drain-'));
  });
  afterAll(async () => {
    for (const c of clients) await c.disconnect();
    await hub?.kill();
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('acks what it committed, closes with 1001, exits 0; devices resume on the restarted hub with nothing lost', async () => {
    const deployer = server.wallet(0);
    const adj = await deployAdjudicator(deployer);
    const usdt = await deployToken(deployer, 'usdt');
    const devices = [2, 3, 4];
    for (const i of devices) await mintTestToken(deployer, usdt.address, server.addresses[i]!, 10n ** 12n);
    const keyFile = join(dir, 'hub.key');
    writeFileSync(keyFile, `${server.accounts[1]}\n`, { mode: 0o600 });
    const port = await freePort();
    const storePath = join(dir, 'hub-store');
    const start = () =>
      spawnHub([
        '--rpc',
        server.url,
        '--adjudicator',
        adj.address,
        '--key-file',
        keyFile,
        '--store',
        storePath,
        '--port',
        String(port),
        '--poll-ms',
        '200',
        '--log-level',
        'info',
      ]);
    hub = await start();

    const channels: ClientChannel[] = [];
    for (const i of devices) {
      const c = await TrickleClient.connect({
        url: hub.url,
        signer: nobleSigner(server.accounts[i]!),
        store: fileChannelStore(join(dir, `device-${i}`)),
        chain: adjudicatorClientChain({ wallet: server.wallet(i), chainId: server.chainId, adjudicator: adj.address }),
        reconnect: { initialDelayMs: 50, maxDelayMs: 200 },
        requestTimeoutMs: 5_000,
      });
      clients.push(c);
      channels.push(await c.openChannel({ token: usdt.address, deposit: 100_000_000n }));
    }
    // An extra, unauthenticated socket: it sees how the hub closes connections.
    const watcher = new WebSocket(hub.url);
    await new Promise((r) => watcher.once('open', r));
    const closeCode = new Promise<number>((r) => watcher.once('close', (code) => r(code)));

    const perDevice = 2_000;
    let stopped = false;
    const streams = channels.map(async (ch, d) => {
      let total = 0n;
      const inFlight: Promise<unknown>[] = [];
      for (let k = 0; k < perDevice; k++) {
        const amount = BigInt(1 + ((k + d) % 7));
        total += amount;
        inFlight.push(ch.pay(amount));
        if (inFlight.length >= 40) await Promise.all(inFlight.splice(0, 20));
        if (!stopped && k % 100 === 0) await new Promise((r) => setTimeout(r, 1));
      }
      await Promise.all(inFlight);
      return total;
    });

    // Mid-stream: the signal goes out in the same turn as a check that payments are acked and others pending (after a
    // fixed 400 ms, a fast run had sometimes finished every stream already).
    const pending = () => channels.reduce((n, ch) => n + ch.pendingPayments, 0);
    await waitFor(() => channels.some((ch) => ch.latest.state.paidByDevice > 0n) && pending() > 0, 10_000);
    const pendingAtStop = pending();
    const exit = new Promise<number | null>((r) => hub!.child.once('exit', (code) => r(code)));
    hub.child.kill('SIGTERM');
    const code = await exit;
    stopped = true;
    expect(pendingAtStop).toBeGreaterThan(0); // the signal lands mid-stream
    expect(code).toBe(0);
    expect(await closeCode).toBe(1001);

    // Every device's newest acked state is exactly the one on disk: what was committed was acked before the close.
    const store = openLmdbStore({ path: storePath });
    const records = await store.loadChannels();
    await store.close();
    for (const ch of channels) {
      const r = records.find((x) => x.channelId === ch.channelId)!;
      expect(ch.latest.state.version).toBeGreaterThan(0n);
      expect(r.latest.state.version).toBe(ch.latest.state.version);
      expect(r.latest.state.paidByDevice).toBe(ch.latest.state.paidByDevice);
      expect(r.latest.hubSig).toBe(ch.latest.hubSig);
    }

    // The devices reconnect to the restarted hub by themselves and finish; totals are exact on both sides.
    hub = await start();
    const totals = await Promise.all(streams);
    for (const [d, ch] of channels.entries()) expect(ch.latest.state.paidByDevice).toBe(totals[d]);
    await hub.stop();
    expect(hub.child.exitCode).toBe(0);
    const after = openLmdbStore({ path: storePath });
    const final = await after.loadChannels();
    await after.close();
    for (const [d, ch] of channels.entries())
      expect(final.find((x) => x.channelId === ch.channelId)!.latest.state.paidByDevice).toBe(totals[d]);
  });
});
