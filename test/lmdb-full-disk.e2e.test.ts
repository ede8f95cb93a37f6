import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startChainServer, type ChainServer } from '@trickle/devchain/chainServer';
import { deployAdjudicator, deployToken } from '@trickle/chain/deploy';
import { approve, mintTestToken } from '@trickle/chain/erc20';
import { Adjudicator } from '@trickle/chain/adjudicator';
import { nobleSigner } from '@trickle/protocol/signer';
import { isTrickleError } from '@trickle/protocol/errors';
import { openLmdbStore } from '@trickle/hub/store/lmdb';
import { spawnHub, type HubProcess } from '@trickle/hub/spawn';
import { TrickleClient } from '@trickle/client/client';
import { fileChannelStore } from '@trickle/client/store';
import { adjudicatorClientChain } from '@trickle/client/chain';
import type { ClientChannel } from '@trickle/client/channel';
import { freePort } from './helpers/hub-process.js';
import { waitFor } from './helpers/wait.js';

/**
 * A full disk under a `trickle-hub` process's LMDB store: the store lives on its own small tmpfs, which the test
 * fills to the last byte. Routed payments make the database grow; the hub keeps taking them while its write-ahead
 * log (allocated up front) has room, then the paying device gets STORE_FAILURE. The process stays up (lmdb-js's
 * unreachable second rejection of each failed commit is recognised by the bin; nothing else is swallowed) and its
 * /health answers. Once space is freed the hub drains and stops cleanly (its store takes the logged writes), every
 * state a device holds signed by both is on disk, and on the hub started again payments resume and every routed
 * payment ends delivered or refunded. The second test resumes on the running hub without a restart, with a device
 * that reconnected while the disk was full.
 *
 * Needs root (mount). Skipped, with the reason, where the tmpfs cannot be mounted.
 */
const mountPoint = mkdtempSync(join(tmpdir(), 'trickle-full-disk-'));
const skipReason = (() => {
  if (process.getuid?.() !== 0) return 'not root: cannot mount a small tmpfs to fill';
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', mountPoint], { stdio: 'pipe' });
    return undefined;
  } catch (e) {
    return `mount -t tmpfs failed: ${(e as Error).message.split('\n')[0]}`;
  }
})();
if (skipReason) console.warn(`lmdb-full-disk.e2e skipped: ${skipReason}`);

/** Fill the file system under `dir` to the last byte; returns the filler's path. */
function fill(dir: string): string {
  const path = join(dir, 'filler');
  const fd = openSync(path, 'w');
  const chunk = Buffer.alloc(1 << 16, 7);
  try {
    for (;;) writeSync(fd, chunk);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOSPC') throw e;
  }
  try {
    for (;;) writeSync(fd, chunk, 0, 512); // the last partial blocks
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOSPC') throw e;
  } finally {
    closeSync(fd);
  }
  return path;
}

describe.skipIf(skipReason !== undefined)('LMDB on a full disk: the hub stays up, freezes, and resumes', () => {
  let server: ChainServer;
  let dir: string;
  let hub: HubProcess | undefined;
  const clients: TrickleClient[] = [];

  beforeAll(async () => {
    server = await startChainServer({ accounts: 5 });
    dir = mkdtempSync(join(tmpdir(), 'trickle-full-disk-devices-'));
  });
  afterAll(async () => {
    for (const c of clients) await c.disconnect();
    await hub?.kill();
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
    if (!skipReason) execFileSync('umount', [mountPoint]);
    rmSync(mountPoint, { recursive: true, force: true });
  });

  it(
    'the paying device gets STORE_FAILURE, the process stays up; with space freed it stops cleanly, nothing acked is lost, payments resume after a restart',
    { timeout: 180_000 },
    async () => {
      const deployer = server.wallet(0);
      const adj = await deployAdjudicator(deployer);
      const usdt = await deployToken(deployer, 'usdt');
      for (const i of [1, 2, 3]) await mintTestToken(deployer, usdt.address, server.addresses[i]!, 10n ** 12n);
      const keyFile = join(dir, 'hub.key');
      writeFileSync(keyFile, `${server.accounts[1]}\n`, { mode: 0o600 });
      const storePath = join(mountPoint, 'hub-store');
      // Two 64 KiB log files: the log fills after some dozens of payments on the full disk.
      const port = String(await freePort());
      const start = () =>
        spawnHub([
          ...['--rpc', server.url, '--adjudicator', adj.address, '--key-file', keyFile],
          ...['--store', storePath, '--store-log-bytes', String(64 << 10), '--port', port],
          ...['--poll-ms', '200', '--crypto-threads', '0', '--log-level', 'warn'],
        ]);
      hub = await start();
      const httpUrl = hub.url.replace(/^ws/, 'http');
      const connect = async (i: number) => {
        const c = await TrickleClient.connect({
          url: hub!.url,
          signer: nobleSigner(server.accounts[i]!),
          store: fileChannelStore(join(dir, `device-${i}`)),
          chain: adjudicatorClientChain({
            wallet: server.wallet(i),
            chainId: server.chainId,
            adjudicator: adj.address,
          }),
          reconnect: { initialDelayMs: 50, maxDelayMs: 200 },
          requestTimeoutMs: 5_000,
          routeTimeoutMs: 3_000, // a routed payment caught by the full disk has no receipt: TIMEOUT, soon
        });
        clients.push(c);
        return c;
      };
      let a = await connect(2);
      let b = await connect(3);
      let cha: ClientChannel = await a.openChannel({ token: usdt.address, deposit: 100_000_000n });
      let chb: ClientChannel = await b.openChannel({ token: usdt.address, deposit: 100_000_000n });
      // The hub's money in B's channel, so that A's payments can be routed to B.
      await approve(server.wallet(1), usdt.address, adj.address, 100_000_000n);
      await new Adjudicator(adj.address, server.wallet(1)).deposit(chb.channelId, 100_000_000n);
      for (let k = 0; k < 20; k++) await Promise.all([cha.pay(10n), chb.pay(10n)]);
      await waitFor(() => cha.latest.state.paidByDevice === 200n);

      const filler = fill(mountPoint);
      const ackedB = chb.latest;
      // Routed payments make the database grow (a route record each): LMDB's commits fail, the store keeps the writes in
      // its log while it has room (allocated up front), then commits fail with STORE_FAILURE and reach the payer.
      const outcomes = new Map<string, number>();
      let failure: unknown;
      for (let k = 0; k < 5_000 && failure === undefined; k++) {
        try {
          await cha.pay(1n, { to: b.address });
          outcomes.set('delivered', (outcomes.get('delivered') ?? 0) + 1);
        } catch (e) {
          if (isTrickleError(e, 'STORE_FAILURE')) failure = e;
          else outcomes.set(isTrickleError(e) ? e.code : String(e), (outcomes.get(String(e)) ?? 0) + 1);
        }
      }
      expect(isTrickleError(failure, 'STORE_FAILURE')).toBe(true);
      expect(outcomes.get('delivered')).toBeGreaterThan(0);
      expect([...outcomes.keys()].filter((o) => o !== 'delivered' && o !== 'TIMEOUT')).toEqual([]);
      expect(await cha.pay(1n).catch((e: unknown) => e)).toMatchObject({ code: 'STORE_FAILURE' }); // still full

      // The process is up and answers; the other channel's acked state is unchanged. /health answers 503 for load
      // balancers all along (the store fails its commits: no payment can be taken), through the hub's store probes (one
      // a second): a probe's write is small enough to fit what is left of the log, and it took that for a working store.
      for (const until = Date.now() + 3_000; Date.now() < until;) {
        const health = await fetch(`${httpUrl}health`);
        expect(health.status).toBe(503);
        expect(await health.json()).toMatchObject({ status: 'degraded', store: 'failing' });
        await new Promise((r) => setTimeout(r, 200));
      }
      expect(await chb.pay(1n).catch((e: unknown) => e)).toMatchObject({ code: 'STORE_FAILURE' });
      expect(hub.child.exitCode).toBeNull();
      expect(hub.child.signalCode).toBeNull();
      expect(chb.latest.state.version).toBeGreaterThanOrEqual(ackedB.state.version);

      // Space freed: payments resume on both channels (a frozen one thaws with its next successful commit).
      // Space freed: the store takes its logged writes again, so the hub drains and stops cleanly (exit 0, which needs
      // LMDB to hold everything the log held), and every state a device holds signed by both is on disk, exactly.
      rmSync(filler);
      await hub.stop();
      // The hub's log goes with a failed stop, so that a failure says why.
      const exit = hub.child.exitCode;
      expect({ exit, log: exit === 0 ? '' : hub.stderr().slice(-4000) }).toEqual({ exit: 0, log: '' });
      expect(hub.stderr()).not.toMatch(/Unhandled|uncaught/i);
      const store = openLmdbStore({ path: storePath, logBytes: 64 << 10 });
      const records = await store.loadChannels();
      await store.close();
      // (A hub credit the device countersigned while the hub's commit of that answer failed is on disk as the hub's
      // stored proposal, with the same hub signature; the device's resync brings it in.)
      for (const ch of [cha, chb]) {
        const r = records.find((x) => x.channelId === ch.channelId)!;
        const onDisk =
          r.outgoing && r.outgoing.state.version === ch.latest.state.version
            ? { state: r.outgoing.state, hubSig: r.outgoing.hubSig }
            : r.latest;
        expect(onDisk.state).toEqual(ch.latest.state);
        expect(onDisk.hubSig).toBe(ch.latest.hubSig);
      }

      // The hub started again on the same store: the devices reconnect and pay; every routed payment ends delivered
      // to B or refunded to A (what A paid net, less its 200 + 10 in plain payments, is what B received).
      hub = await start();
      await Promise.all([a.disconnect(), b.disconnect()]);
      [a, b] = [await connect(2), await connect(3)];
      [cha, chb] = [a.channel(cha.channelId)!, b.channel(chb.channelId)!];
      for (let k = 0; k < 10; k++) {
        await cha.pay(1n);
        await chb.pay(1n);
        await cha.pay(1n, { to: b.address });
      }
      await waitFor(
        () => cha.latest.state.paidByDevice - cha.latest.state.paidByHub - 210n === chb.latest.state.paidByHub,
        30_000,
      );
      expect(chb.latest.state.paidByHub).toBeGreaterThanOrEqual(BigInt(outcomes.get('delivered')! + 10));
    },
  );

  it(
    'on the running hub, once space is freed: a device that reconnected while the disk was full got STORE_FAILURE from pay(), and both devices pay again without a restart',
    { timeout: 180_000 },
    async () => {
      // The first test's hub and devices leave; its store leaves the file system.
      for (const c of clients.splice(0)) await c.disconnect();
      await hub?.stop();
      rmSync(join(mountPoint, 'hub-store'), { recursive: true, force: true });
      const deployer = server.wallet(0);
      const adj = await deployAdjudicator(deployer);
      const usdt = await deployToken(deployer, 'usdt');
      for (const i of [1, 2, 3]) await mintTestToken(deployer, usdt.address, server.addresses[i]!, 10n ** 12n);
      const keyFile = join(dir, 'hub.key');
      writeFileSync(keyFile, `${server.accounts[1]}\n`, { mode: 0o600 });
      hub = await spawnHub([
        ...['--rpc', server.url, '--adjudicator', adj.address, '--key-file', keyFile],
        ...['--store', join(mountPoint, 'hub-store-2'), '--store-log-bytes', String(64 << 10)],
        ...['--port', String(await freePort()), '--poll-ms', '200', '--crypto-threads', '0', '--log-level', 'warn'],
      ]);
      const connect = async (i: number) => {
        const c = await TrickleClient.connect({
          url: hub!.url,
          signer: nobleSigner(server.accounts[i]!),
          store: fileChannelStore(join(dir, `running-${i}`)),
          chain: adjudicatorClientChain({
            wallet: server.wallet(i),
            chainId: server.chainId,
            adjudicator: adj.address,
          }),
          reconnect: { initialDelayMs: 50, maxDelayMs: 200 },
          requestTimeoutMs: 5_000,
          routeTimeoutMs: 3_000, // a routed payment caught by the full disk has no receipt: TIMEOUT, soon
        });
        clients.push(c);
        return c;
      };
      const [a, b] = [await connect(2), await connect(3)];
      const cha = await a.openChannel({ token: usdt.address, deposit: 100_000_000n });
      const chb = await b.openChannel({ token: usdt.address, deposit: 100_000_000n });
      await approve(server.wallet(1), usdt.address, adj.address, 100_000_000n);
      await new Adjudicator(adj.address, server.wallet(1)).deposit(chb.channelId, 100_000_000n);
      for (let k = 0; k < 10; k++) await Promise.all([cha.pay(10n), chb.pay(10n)]);

      // Routed payments until the full disk refuses A's channel (B's credits fail or land meanwhile, acks included).
      const filler = fill(mountPoint);
      let delivered = 0;
      let failure: unknown;
      for (let k = 0; k < 5_000 && failure === undefined; k++) {
        try {
          await cha.pay(1n, { to: b.address });
          delivered++;
        } catch (e) {
          if (isTrickleError(e, 'STORE_FAILURE')) failure = e;
          else if (!isTrickleError(e, 'TIMEOUT')) throw e;
        }
      }
      expect(isTrickleError(failure, 'STORE_FAILURE')).toBe(true);

      // A reconnects while the disk is still full: its sync is refused, and its pay() is answered.
      a.dropConnectionForTest();
      await waitFor(() => !a.connected, 5_000);
      await waitFor(() => a.connected, 10_000);
      const outcome = (p: Promise<unknown>) =>
        Promise.race([
          p.then(
            () => 'resolved',
            (e: unknown) => (isTrickleError(e) ? e.code : String(e)),
          ),
          new Promise((r) => setTimeout(() => r('unsettled'), 15_000)),
        ]);
      expect(await outcome(cha.pay(1n))).toBe('STORE_FAILURE');

      // Space freed, same process: the frozen channels thaw with their next successful write, and both devices pay
      // again without reconnecting or restarting anything (B also on top of any credit it countersigned meanwhile).
      rmSync(filler);
      const payAgain = async (ch: ClientChannel, amount: bigint, to?: typeof b.address) => {
        let last = '';
        for (const until = Date.now() + 30_000; Date.now() < until;) {
          last = String(await outcome(to ? ch.pay(amount, { to }) : ch.pay(amount)));
          if (last === 'resolved') return;
          expect(['STORE_FAILURE', 'TIMEOUT']).toContain(last);
          await new Promise((r) => setTimeout(r, 250));
        }
        throw new Error(`no payment after the space was freed: ${last}`);
      };
      await payAgain(cha, 1n);
      await payAgain(chb, 1n);
      for (let k = 0; k < 5; k++) {
        await payAgain(cha, 1n, b.address);
        await chb.pay(1n);
      }
      expect(hub.child.exitCode).toBeNull();
      // Every routed payment ended delivered to B or refunded to A: what A paid net, less its 100 + 1 in plain
      // payments, is what B received.
      await waitFor(
        () => cha.latest.state.paidByDevice - cha.latest.state.paidByHub - 101n === chb.latest.state.paidByHub,
        30_000,
      );
      expect(chb.latest.state.paidByHub).toBeGreaterThanOrEqual(BigInt(delivered + 5));
      expect(hub.stderr()).not.toMatch(/Unhandled|uncaught/i);
    },
  );
});
