#!/usr/bin/env node
// Cluster bench: what a hub cluster on PostgreSQL costs on this machine, and how fast it fails over.
//   node bench/cluster.mjs [--json] [--devices 100] [--measure-ms 4000]
// Signed updates per second from the same devices (raw WebSocket workers, bench/device-worker.mjs, 2 updates in
// flight each) against: one trickle-hub process on its default LMDB store (lmdb1), and 1, 2 and 3 processes sharing
// one PostgreSQL database with channel leases (pg1, pg2, pg3; devices spread evenly over the processes). On a
// 2-core machine the processes share the cores, so the cluster cannot add throughput here: the ratios say what the
// database and the coordination cost. Then the failover time: a TrickleClient device paying through a TCP balancer
// in front of 3 processes, SIGKILL of the process serving it, time until its next payment is acked (by the process
// that took its channel over when the lease lapsed). The PostgreSQL server is Debian's (as in the tests).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Wallet } from 'ethers';
import { stringifyJson } from '@trickle/protocol/json';
import { ETH_TOKEN } from '@trickle/protocol/types';
import { nativeSigner } from '@trickle/protocol/native';
import { TrickleClient } from '@trickle/client/client';
import { fileChannelStore } from '@trickle/client/store';
import { adjudicatorClientChain } from '@trickle/client/chain';
import { deviceKey, openChannels, startChain, startHubProcess } from './lib/world.mjs';
import { forkWorker } from './lib/ipc.mjs';
import { round, sleep } from './lib/util.mjs';
import { startPostgres } from '../test/helpers/postgres.mjs';
import { startBalancer } from '../test/helpers/balancer.mjs';

const { values: args } = parseArgs({
  options: {
    json: { type: 'boolean', default: false },
    devices: { type: 'string', default: '100' },
    'measure-ms': { type: 'string', default: '4000' },
    'lease-ms': { type: 'string', default: '2000' },
  },
});
const DEVICES = Number(args.devices);
const WARMUP_MS = 1000;
const MEASURE_MS = Number(args['measure-ms']);
const LEASE_MS = Number(args['lease-ms']);
const WINDOW = 2;
const DEPOSIT = 10n ** 18n;
const WORKER = new URL('./device-worker.mjs', import.meta.url).pathname;
const log = (s) => process.stderr.write(`${s}\n`);

const tmp = mkdtempSync(join(tmpdir(), 'trickle-bench-cluster-'));
const { server, adjudicator } = await startChain();
const pg = await startPostgres();
const hubKey = server.accounts[1];
const result = { leaseMs: LEASE_MS, devices: DEVICES, updatesPerSec: {}, details: {} };
try {
  const keys = Array.from({ length: DEVICES }, (_, i) => deviceKey('cluster', i));
  const devices = await openChannels(server, adjudicator, keys, { deposit: DEPOSIT, group: 'cluster' });
  log(`cluster bench: ${DEVICES} channels open on-chain`);

  /** Start `n` hub processes on `store` (an LMDB directory per process is not a cluster: lmdb runs n = 1 only). */
  const startHubs = async (n, store) => {
    const hubs = [];
    for (let k = 0; k < n; k++) {
      const dir = mkdtempSync(join(tmp, 'hub-'));
      const hubArgs = store === 'lmdb' ? [] : ['--store', store, '--cluster-lease-ms', String(LEASE_MS)];
      hubs.push(await startHubProcess({ rpc: server.url, adjudicator: adjudicator.address, hubKey, dir, hubArgs }));
    }
    return hubs;
  };

  for (const [name, n] of [
    ['lmdb1', 1],
    ['pg1', 1],
    ['pg2', 2],
    ['pg3', 3],
  ]) {
    const store = name.startsWith('lmdb') ? 'lmdb' : await pg.createDatabase();
    const hubs = await startHubs(n, store);
    // The same six worker processes for every configuration (six divides among 1, 2 and 3 hubs evenly), so the load
    // generator is the same and only the hub side changes. Worker k drives the devices k, k + 6, … and talks to hub
    // k mod n.
    const w = 6;
    const workers = Array.from({ length: w }, () => forkWorker(WORKER));
    try {
      const shares = workers.map((_, k) => devices.filter((_, i) => i % w === k));
      await Promise.all(
        workers.map((wk, k) =>
          wk.call(
            {
              t: 'init',
              url: hubs[k % n].url,
              devices: shares[k].map((d) => ({ key: d.key, params: stringifyJson(d.params) })),
            },
            120_000,
          ),
        ),
      );
      const rs = await Promise.all(
        workers.map((wk, k) =>
          wk.call(
            {
              t: 'run',
              count: shares[k].length,
              warmupMs: WARMUP_MS,
              measureMs: MEASURE_MS,
              window: WINDOW,
              drainMs: 3000,
              maxUpdates: 10_000_000,
            },
            WARMUP_MS + MEASURE_MS + 20_000,
          ),
        ),
      );
      const acks = rs.reduce((a, r) => a + r.acks, 0);
      result.updatesPerSec[name] = round(acks / (MEASURE_MS / 1000), 0);
      result.details[name] = {
        processes: n,
        rejects: rs.reduce((a, r) => a + r.rejects, 0),
        unanswered: rs.reduce((a, r) => a + r.unanswered, 0),
        errors: rs.flatMap((r) => r.errors).slice(0, 3),
        ackRttP50Ms: round(rs[0].rttMs.p50, 2),
      };
      log(`  ${name}: ${result.updatesPerSec[name].toLocaleString('en-US')} signed updates/s`);
    } finally {
      await Promise.all(workers.map((wk) => wk.stop()));
      await Promise.all(hubs.map((h) => h.stop()));
    }
  }
  result.ratios = {
    pg1OverLmdb1: round(result.updatesPerSec.pg1 / result.updatesPerSec.lmdb1, 2),
    pg3OverPg1: round(result.updatesPerSec.pg3 / result.updatesPerSec.pg1, 2),
  };

  // Failover: SIGKILL the process serving a paying device; time to its next acked payment.
  const url = await pg.createDatabase();
  const hubs = await startHubs(3, url);
  const ports = hubs.map((h) => Number(new URL(h.url).port));
  const balancer = await startBalancer(ports);
  const key = deviceKey('cluster-failover', 0);
  await server.provider.send('hardhat_setBalance', [new Wallet(key).address, `0x${(10n ** 20n).toString(16)}`]);
  const client = await TrickleClient.connect({
    url: balancer.url,
    signer: nativeSigner(key),
    store: fileChannelStore(join(tmp, 'failover-device')),
    chain: adjudicatorClientChain({
      wallet: new Wallet(key, server.provider),
      chainId: server.chainId,
      adjudicator: adjudicator.address,
    }),
    reconnect: { initialDelayMs: 50, maxDelayMs: 200 },
    requestTimeoutMs: 2_000,
  });
  try {
    const ch = await client.openChannel({ token: ETH_TOKEN, deposit: DEPOSIT });
    let lastAck = 0;
    let paying = true;
    const payer = (async () => {
      while (paying) {
        try {
          await ch.pay(1n);
          lastAck = performance.now();
        } catch {
          await sleep(20); // refused or disconnected during the failover: paid again
        }
      }
    })();
    await sleep(1000);
    const serving = hubs[ports.indexOf(balancer.placed[0])];
    const killedAt = performance.now();
    serving.child.kill('SIGKILL');
    const until = killedAt + 10 * LEASE_MS;
    while (lastAck <= killedAt && performance.now() < until) await sleep(5);
    paying = false;
    await payer;
    if (lastAck <= killedAt) throw new Error(`no payment acked within ${10 * LEASE_MS} ms of the kill`);
    result.failoverMs = round(lastAck - killedAt, 0);
    log(`  failover: first acked payment ${result.failoverMs} ms after SIGKILL (lease ${LEASE_MS} ms)`);
  } finally {
    await client.disconnect();
    await balancer.close();
    await Promise.all(hubs.map((h) => h.stop()));
  }
  result.method = `${DEVICES} devices (2 updates in flight each, raw WebSocket workers with native signing) (six worker processes in every configuration) against trickle-hub processes with default flags; lmdb1: one process on LMDB; pgN: N processes on one PostgreSQL database with --cluster-lease-ms ${LEASE_MS}, devices spread evenly; signed updates acked over ${MEASURE_MS / 1000} s after ${WARMUP_MS / 1000} s warm-up; failover: a TrickleClient paying 1 wei at a time through a TCP balancer over 3 processes, SIGKILL of its process, time to its next acked payment`;
} finally {
  await pg.close();
  await server.stop();
  rmSync(tmp, { recursive: true, force: true });
}
if (args.json) process.stdout.write(`${JSON.stringify(result)}\n`);
else {
  const u = result.updatesPerSec;
  process.stdout.write(`signed updates/s  lmdb1 ${u.lmdb1}  pg1 ${u.pg1}  pg2 ${u.pg2}  pg3 ${u.pg3}\n`);
  process.stdout.write(
    `pg1/lmdb1 ${result.ratios.pg1OverLmdb1} (goal >= 0.7)  pg3/pg1 ${result.ratios.pg3OverPg1} (goal >= 0.9)\n`,
  );
  process.stdout.write(`failover ${result.failoverMs} ms (lease ${LEASE_MS} ms; goal <= ${2 * LEASE_MS + 1000})\n`);
}
