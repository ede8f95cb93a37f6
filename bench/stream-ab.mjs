#!/usr/bin/env node
// A/B of the device client on the stream bench's setup, for a shared machine: one chain server and one trickle-hub
// process; the variants take turns (A B A B …), each run forking two bench/stream-worker.mjs processes (one fresh
// channel each) that import the variant's client instead of @trickle/client. Each run: an open-loop rate at a FIXED
// total rate (the same for every variant, so CPU per state compares like with like), then a closed-loop peak.
// Reports the device processes' CPU (user + system, and the main thread's share from /proc) per acked state and per
// payment. Build a variant by copying packages/client/dist somewhere under the repository (e.g. .tmp/) before the
// change. Writes the workers' copies to .tmp/stream-ab/.
//   node bench/stream-ab.mjs --variants A=./.tmp/client-before/index.js,B=@trickle/client --rounds 3 --rate 150000
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { stringifyJson } from '@trickle/protocol/json';
import { zeroState } from '@trickle/protocol/channel';
import { openChannels, deviceKey, startChain, startHubProcess } from './lib/world.mjs';
import { forkWorker } from './lib/ipc.mjs';
import { cpuSecondsOf } from './lib/util.mjs';

const { values: a } = parseArgs({
  options: {
    variants: { type: 'string' },
    rounds: { type: 'string', default: '3' },
    rate: { type: 'string', default: '150000' },
    'measure-ms': { type: 'string', default: '4000' },
    outstanding: { type: 'string', default: '4096' },
    'node-args': { type: 'string', default: '' },
  },
});
if (!a.variants) {
  process.stderr.write('usage: node bench/stream-ab.mjs --variants A=<client module>,B=@trickle/client [--rounds 3]\n');
  process.exit(2);
}
const BENCH = dirname(fileURLToPath(import.meta.url));
const OUT = join(BENCH, '..', '.tmp', 'stream-ab');
mkdirSync(OUT, { recursive: true });
const DEPOSIT = 10n ** 18n;
const rounds = Number(a.rounds);
const measureMs = Number(a['measure-ms']);
const source = readFileSync(join(BENCH, 'stream-worker.mjs'), 'utf8');
const variants = a.variants.split(',').map((v) => {
  const [name, mod] = v.split('=');
  const spec = mod.startsWith('.') || mod.startsWith('/') ? pathToFileURL(resolve(mod)).href : mod;
  const file = join(OUT, `worker-${name}.mjs`);
  writeFileSync(file, source.replace("from '@trickle/client'", `from '${spec}'`));
  return { name, file };
});

/** CPU milliseconds of each thread of a process, by thread name (/proc/<pid>/task/<tid>/stat utime + stime). */
function threadCpuMs(pid) {
  const out = {};
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const name = readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim();
      out[name] = (out[name] ?? 0) + (Number(f[11]) + Number(f[12])) * 10; // clock ticks of 10 ms
    } catch {
      // the thread ended meanwhile
    }
  }
  return out;
}

const tmp = mkdtempSync(join(tmpdir(), 'stream-ab-'));
const { server, adjudicator } = await startChain();
const keys = Array.from({ length: 2 * rounds * variants.length }, (_, i) => deviceKey('stream-ab', i));
const devices = await openChannels(server, adjudicator, keys, { deposit: DEPOSIT, group: 'stream-ab' });
const hub = await startHubProcess({
  rpc: server.url,
  adjudicator: adjudicator.address,
  hubKey: server.accounts[1],
  dir: tmp,
});
const results = new Map(variants.map((v) => [v.name, []]));
let next = 0;
try {
  for (let r = 0; r < rounds; r++) {
    for (const v of variants) {
      const workers = [0, 1].map(() => forkWorker(v.file, a['node-args'].split(' ').filter(Boolean)));
      try {
        const mine = [devices[next++], devices[next++]];
        await Promise.all(
          workers.map((w, k) =>
            w.call(
              {
                t: 'init',
                url: hub.url,
                dir: join(tmp, 'devices'),
                maxInFlight: 8,
                devices: [
                  {
                    key: mine[k].key,
                    record: stringifyJson({
                      params: mine[k].params,
                      channelId: mine[k].channelId,
                      funding: { device: DEPOSIT, hub: 0n },
                      latest: { state: zeroState(mine[k].channelId) },
                      signedVersion: 0n,
                    }),
                  },
                ],
              },
              60_000,
            ),
          ),
        );
        const load1 = loadavg()[0];
        const t0 = workers.map((w) => threadCpuMs(w.child.pid));
        const rate = await Promise.all(
          workers.map((w) =>
            w.call({ t: 'rate', perSec: Number(a.rate) / 2, warmupMs: 1000, measureMs, maxPayments: 1e9 }, 60_000),
          ),
        );
        const t1 = workers.map((w) => threadCpuMs(w.child.pid));
        const hub0 = cpuSecondsOf(hub.child.pid);
        const peak = await Promise.all(
          workers.map((w) =>
            w.call(
              { t: 'peak', outstanding: Number(a.outstanding), warmupMs: 500, measureMs: 2500, maxPayments: 1e9 },
              60_000,
            ),
          ),
        );
        const hub1 = cpuSecondsOf(hub.child.pid);
        const states = rate.reduce((s, x) => s + x.states, 0);
        const cpu = rate.reduce((s, x) => s + x.cpuSeconds, 0);
        const payments = rate.reduce((s, x) => s + x.samples, 0);
        // The main thread's CPU over the whole rate call (warm-up included), per state of the measured window.
        const main = [0, 1].reduce((s, k) => s + (t1[k].node ?? 0) - (t0[k].node ?? 0), 0);
        const row = {
          variant: v.name,
          round: r,
          load1: +load1.toFixed(2),
          saturated: rate.some((x) => x.saturated),
          statesPerSec: Math.round(states / (measureMs / 1000)),
          cpuMsPerState: +((cpu * 1000) / states).toFixed(3),
          mainThreadMsPerStateInclWarmup: +(main / states).toFixed(3),
          cpuUsPerPayment: +((cpu * 1e6) / payments).toFixed(2),
          peakPaymentsPerSec: Math.round(peak.reduce((s, x) => s + x.payments, 0) / 2.5),
          peakStatesPerSec: Math.round(peak.reduce((s, x) => s + x.states, 0) / 2.5),
          peakClientCores: +(peak.reduce((s, x) => s + x.cpuSeconds, 0) / 2.5).toFixed(2),
          peakHubCores: +((hub1 - hub0) / 3).toFixed(2),
        };
        process.stdout.write(`${JSON.stringify(row)}\n`);
        results.get(v.name).push(row);
      } finally {
        await Promise.all(workers.map((w) => w.stop()));
      }
    }
  }
} finally {
  await hub.stop();
  await server.stop();
  rmSync(tmp, { recursive: true, force: true });
}
const median = (xs) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)];
for (const [name, rows] of results) {
  const m = Object.fromEntries(
    ['statesPerSec', 'cpuMsPerState', 'cpuUsPerPayment', 'peakPaymentsPerSec'].map((k) => [
      k,
      median(rows.map((x) => x[k])),
    ]),
  );
  process.stdout.write(
    `${name} median ${JSON.stringify(m)} (saturated in ${rows.filter((x) => x.saturated).length} of ${rows.length})\n`,
  );
}
