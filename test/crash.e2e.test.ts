import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startChainServer, type ChainServer } from '@trickle/devchain/chainServer';
import { deployAdjudicator, deployToken } from '@trickle/chain/deploy';
import { mintTestToken } from '@trickle/chain/erc20';
import { nobleSigner } from '@trickle/protocol/signer';
import { openLmdbStore } from '@trickle/hub/store/lmdb';
import { TrickleClient } from '@trickle/client/client';
import { fileChannelStore } from '@trickle/client/store';
import { adjudicatorClientChain } from '@trickle/client/chain';
import type { ClientChannel } from '@trickle/client/channel';
import { freePort, startHubProcess, type HubProcess } from './helpers/hub-process.js';
import { waitFor } from './helpers/wait.js';

/**
 * The hub runs as its own process on a JSON-RPC chain server process. It is SIGKILLed in the middle of streams
 * from several devices and restarted on the same LMDB store: every state a device saw acked is in the store,
 * and the streams finish with exactly the right totals (nothing lost, nothing applied twice).
 */
describe('hub crash: SIGKILL mid-stream and restart on the same store', () => {
  let server: ChainServer;
  let dir: string;
  let hub: HubProcess | undefined;
  const clients: TrickleClient[] = [];

  beforeAll(async () => {
    server = await startChainServer({ accounts: 8 });
    dir = mkdtempSync(join(tmpdir(), 'trickle-crash-'));
  });
  afterAll(async () => {
    for (const c of clients) c.disconnect();
    await hub?.kill();
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('recovers every acked state and finishes every stream to the right total', async () => {
    const deployer = server.wallet(0);
    const adj = await deployAdjudicator(deployer);
    const usdt = await deployToken(deployer, 'usdt');
    const devices = [2, 3, 4];
    for (const i of devices) await mintTestToken(deployer, usdt.address, server.addresses[i]!, 10n ** 12n);
    const keyFile = join(dir, 'hub.key');
    writeFileSync(keyFile, `${server.accounts[1]}\n`, { mode: 0o600 });
    const port = await freePort();
    const storePath = join(dir, 'hub-store');
    const startHub = () =>
      startHubProcess({ rpc: server.url, adjudicator: adj.address, keyFile, store: storePath, port });
    hub = await startHub();

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

    const perDevice = 3_000;
    let killed = false;
    const ackedAtKill: bigint[] = [];
    /** Payments each stream has made so far, and how many streams have finished. */
    const made = channels.map(() => 0);
    let finished = 0;
    const streams = channels.map(async (ch, d) => {
      let total = 0n;
      const inFlight: Promise<unknown>[] = [];
      for (let k = 0; k < perDevice; k++) {
        const amount = BigInt(1 + ((k + d) % 5));
        total += amount;
        inFlight.push(ch.pay(amount));
        made[d] = k + 1;
        if (inFlight.length >= 50) await Promise.all(inFlight.splice(0, 25));
        if (!killed && k % 50 === 0) await new Promise((r) => setTimeout(r, 1));
      }
      await Promise.all(inFlight);
      finished++;
      return total;
    });

    // Once every stream is a third of the way through, kill the hub without warning. This waits on progress, not
    // on a fixed delay: on a fast machine 3 × 3,000 payments finished within the 400 ms the test used to wait.
    await waitFor(() => made.every((n) => n >= perDevice / 3), 30_000);
    const pendingAtKill = channels.reduce((n, ch) => n + ch.pendingPayments, 0);
    await hub.kill('SIGKILL');
    killed = true;
    expect(finished).toBe(0); // the kill lands mid-stream: every stream still has payments to make
    expect(pendingAtKill).toBeGreaterThan(0); // and some it made are not yet acked
    for (const ch of channels) ackedAtKill.push(ch.latest.state.version);

    // Every state a device holds fully signed (it saw it acked) is in the hub's store.
    const store = openLmdbStore({ path: storePath });
    const records = await store.loadChannels();
    await store.close();
    for (const [d, ch] of channels.entries()) {
      const r = records.find((x) => x.channelId === ch.channelId)!;
      expect(r).toBeDefined();
      expect(r.latest.state.version).toBeGreaterThanOrEqual(ackedAtKill[d]!);
      expect(r.latest.state.version).toBeGreaterThan(0n);
    }

    hub = await startHub();
    const totals = await Promise.all(streams);
    for (const [d, ch] of channels.entries()) {
      expect(ch.latest.state.paidByDevice).toBe(totals[d]);
    }
    // The restarted hub agrees (read through a fresh sync from a new client connection of each device).
    for (const [d, c] of clients.slice(0, devices.length).entries()) {
      c.disconnect();
      const again = await TrickleClient.connect({
        url: hub.url,
        signer: nobleSigner(server.accounts[devices[d]!]!),
        store: fileChannelStore(join(dir, `device-${devices[d]}`)),
      });
      clients.push(again);
      const ch = again.channel(channels[d]!.channelId)!;
      await new Promise((r) => setTimeout(r, 100));
      expect(ch.latest.state.paidByDevice).toBe(totals[d]);
    }
  });
});
