#!/usr/bin/env node
// A device's CPU per acked state: ONE real TrickleClient (native signer/verifier, fileChannelStore) in its own process
// (bench/device-cpu-worker.mjs), one ETH channel opened on-chain, paying a real `trickle-hub` process on loopback at
// device rates, where a state carries one or a few payments.
//   node bench/device-cpu.mjs [--json] [--rounds 3] [--warmup-ms 500] [--measure-ms 2000] [--profile DIR] [--trees A,B]
// Cases (each run is that process's CPU, user + system from process.cpuUsage, over the measured window ÷ the states
// acked in it, the channel's version delta):
//   meter1000: a meter calling pay(1 wei) 1,000 times a second, woken by a timer when each payment is due (open loop)
//   meter500:  the same at 500 a second
//   strict:    one pay() per state strictly: the next pay() once the previous resolved, at most 1,000 a second
//   meter10:   the meter at 10 a second, reported beside the headline (every state pays for its own wake-ups)
// The cases alternate for `rounds` rounds (a shared machine drifts); each case's figure is the median of its runs, and
// cpuMsPerState is the highest of the case figures but meter10's. With --profile DIR the device process runs under
// --cpu-prof. With --trees A,B (two repository trees with built packages) a device process from each runs,
// alternating: an A/B. Beside them, the same-run floor: a bare device (bench/device-worker.mjs) doing only a state's
// essential work.
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { stringifyJson } from '@trickle/protocol/json';
import { zeroState } from '@trickle/protocol/channel';
import { deviceKey, openChannels, startChain, startHubProcess } from './lib/world.mjs';
import { forkWorker } from './lib/ipc.mjs';
import { round } from './lib/util.mjs';

const { values: args } = parseArgs({
  options: {
    json: { type: 'boolean', default: false },
    rounds: { type: 'string', default: '3' },
    'warmup-ms': { type: 'string', default: '500' },
    'measure-ms': { type: 'string', default: '2000' },
    cases: { type: 'string', default: 'meter1000,meter500,strict,meter10' },
    profile: { type: 'string', default: '' },
    // A/B: comma-separated repository trees (each with bench/ and built packages); one device process from each,
    // on its own channel, the runs alternating between them
    trees: { type: 'string', default: '' },
  },
});
const DEPOSIT = 10n ** 18n;
const CASES = {
  meter1000: {
    mode: 'meter',
    perSec: 1000,
    what: 'a meter calling pay(1 wei) 1,000 times a second (a timer wakes it when the next payment is due)',
  },
  meter500: { mode: 'meter', perSec: 500, what: 'the same meter at 500 a second' },
  strict: {
    mode: 'strict',
    perSec: 1000,
    what: 'one pay() per state strictly (the next once the previous resolved, at most 1,000 a second)',
  },
  meter10: { mode: 'meter', perSec: 10, slow: true, what: 'the same meter at 10 a second (not in the headline)' },
};
const log = (line) => process.stderr.write(`[device] ${line}\n`);
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

export async function runDeviceCpu({
  rounds = Number(args.rounds),
  warmupMs = Number(args['warmup-ms']),
  measureMs = Number(args['measure-ms']),
  cases = args.cases.split(',').filter(Boolean),
  profileDir = args.profile,
  trees = args.trees.split(',').filter(Boolean),
} = {}) {
  const tmp = mkdtempSync(join(os.tmpdir(), 'trickle-device-cpu-'));
  const stops = [];
  try {
    const { server, adjudicator } = await startChain();
    stops.push(() => server.stop());
    const roots = trees.length > 0 ? trees : [fileURLToPath(new URL('..', import.meta.url))];
    const ds = await openChannels(
      server,
      adjudicator,
      [...roots, 'bare'].map((_, i) => deviceKey('device-cpu', i)),
      { deposit: DEPOSIT, group: 'device-cpu' },
    );
    const hub = await startHubProcess({
      rpc: server.url,
      adjudicator: adjudicator.address,
      hubKey: server.accounts[1],
      dir: tmp,
    });
    stops.push(() => hub.stop());
    const workers = [];
    for (const [i, root] of roots.entries()) {
      const d = ds[i];
      const worker = forkWorker(
        join(root, 'bench', 'device-cpu-worker.mjs'),
        profileDir ? ['--cpu-prof', '--cpu-prof-dir', join(profileDir, String(i))] : [],
      );
      stops.push(() => worker.stop());
      await worker.call(
        {
          t: 'init',
          url: hub.url,
          dir: join(tmp, `device-${i}`),
          key: d.key,
          record: stringifyJson({
            params: d.params,
            channelId: d.channelId,
            funding: { device: DEPOSIT, hub: 0n },
            latest: { state: zeroState(d.channelId) },
            signedVersion: 0n,
          }),
        },
        60_000,
      );
      // Warm-up, not counted: the process's code compiled and its file written a few times.
      await worker.call({ t: 'run', ...CASES.strict, warmupMs: 1500, measureMs: 100 }, 30_000);
      workers.push(worker);
    }
    // The floor: a bare device (bench/device-worker.mjs: raw WebSocket, the protocol codec, native signer/verifier,
    // no client library) doing a state's essential work: digest, sign, send, verify the ack's countersignature.
    const bare = forkWorker(fileURLToPath(new URL('./device-worker.mjs', import.meta.url)));
    stops.push(() => bare.stop());
    const b = ds[roots.length];
    await bare.call({ t: 'init', url: hub.url, devices: [{ key: b.key, params: stringifyJson(b.params) }] }, 60_000);
    const BARE = { bareStrict: undefined, bare500: 2, bare10: 100 }; // closed loop, window 1; paced: one per 2 ms, per 100 ms
    const bareRuns = Object.fromEntries(Object.keys(BARE).map((c) => [c, []]));
    const perTree = workers.map(() => Object.fromEntries(cases.map((c) => [c, []])));
    for (let k = 0; k < rounds; k++) {
      for (const c of cases) {
        for (const [i, worker] of workers.entries()) {
          const r = await worker.call({ t: 'run', ...CASES[c], warmupMs, measureMs }, warmupMs + measureMs + 20_000);
          if (r.failed > 0) throw new Error(`${c}: ${r.failed} payments failed (${r.firstError})`);
          const cpuMs = (r.cpuUs.user + r.cpuUs.system) / 1000;
          const run = {
            cpuMsPerState: round(cpuMs / Math.max(1, r.states), 4),
            statesPerSec: round(r.states / (r.spanMs / 1000), 0),
            paymentsPerState: round(r.payments / Math.max(1, r.states), 2),
            cores: round(cpuMs / r.spanMs, 3),
            systemShare: round(r.cpuUs.system / Math.max(1, r.cpuUs.user + r.cpuUs.system), 2),
          };
          perTree[i][c].push(run);
          log(
            `round ${k + 1} ${c}${roots.length > 1 ? ` [${roots[i]}]` : ''}: ${run.cpuMsPerState} ms CPU per state (${run.statesPerSec} states/s, ${run.paymentsPerState} payments each, ${run.cores} cores, ${Math.round(run.systemShare * 100)}% system)`,
          );
        }
      }
      for (const [c, intervalMs] of Object.entries(BARE)) {
        const r = await bare.call(
          { t: 'run', count: 1, warmupMs, measureMs, window: 1, drainMs: 2000, maxUpdates: 1e9, intervalMs },
          warmupMs + measureMs + 20_000,
        );
        bareRuns[c].push({
          cpuMsPerState: round((r.cpuSeconds * 1000) / Math.max(1, r.covered), 4),
          statesPerSec: round(r.covered / (measureMs / 1000), 0),
        });
        log(
          `round ${k + 1} ${c}: ${bareRuns[c].at(-1).cpuMsPerState} ms CPU per state (${bareRuns[c].at(-1).statesPerSec} states/s)`,
        );
      }
    }
    const floor = Object.fromEntries(
      Object.entries(bareRuns).map(([c, rs]) => [
        c,
        {
          cpuMsPerState: median(rs.map((r) => r.cpuMsPerState)),
          statesPerSec: median(rs.map((r) => r.statesPerSec)),
          runs: rs,
        },
      ]),
    );
    const summarise = (runs) => {
      const byCase = Object.fromEntries(
        cases.map((c) => [
          c,
          {
            cpuMsPerState: median(runs[c].map((r) => r.cpuMsPerState)),
            statesPerSec: median(runs[c].map((r) => r.statesPerSec)),
            paymentsPerState: median(runs[c].map((r) => r.paymentsPerState)),
            runs: runs[c],
          },
        ]),
      );
      // The headline is over the device rates (500–1,000 pay() a second); a slow meter is reported beside it.
      const rated = cases.filter((c) => !CASES[c].slow);
      const worst = (rated.length > 0 ? rated : cases).reduce((a, b) =>
        byCase[b].cpuMsPerState > byCase[a].cpuMsPerState ? b : a,
      );
      return { cpuMsPerState: byCase[worst].cpuMsPerState, worstCase: worst, cases: byCase };
    };
    const results = perTree.map(summarise);
    const method = `one TrickleClient (native signer/verifier, fileChannelStore, default options) in its own process on one ETH channel opened on-chain, paying a trickle-hub process on loopback; cpuMsPerState = that process's CPU (process.cpuUsage, user + system) over ${measureMs / 1000} s after ${warmupMs / 1000} s warm-up (and one uncounted 1.5 s run first) ÷ the states acked in it (version delta), the device's own generator included; cases: ${cases.map((c) => `${c} = ${CASES[c].what}`).join('; ')}; the cases alternate ${rounds} times, each case's median kept, the highest of them reported (${results[0].worstCase} here) except meter10's, shown beside it (at 10 a second every state pays for its own wake-ups); floor: a bare device in its own process (bench/device-worker.mjs: raw WebSocket, protocol codec, native signer/verifier, no client library) on its own channel, one update per state, each ack's countersignature verified: bareStrict = the next update once the previous is acked, bare500 = one update every 2 ms, bare10 = one every 100 ms; the same CPU per acked state, median of runs alternating with the cases`;
    if (roots.length === 1) return { ...results[0], floor, method };
    return { trees: Object.fromEntries(roots.map((r, i) => [r, results[i]])), floor, method };
  } finally {
    for (const stop of stops.reverse()) await stop().catch((e) => log(`cleanup: ${e?.message ?? e}`));
    rmSync(tmp, { recursive: true, force: true });
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const r = await runDeviceCpu();
  if (args.json) process.stdout.write(`${JSON.stringify(r)}\n`);
  else process.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
  process.exit(0);
}
