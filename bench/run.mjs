#!/usr/bin/env node
// Trickle benchmark suite.
//   npm run bench                  a table on stdout (progress on stderr)
//   npm run bench -- --json        one JSON object as the last line of stdout (the build step prints a line first)
//   npm run bench -- --profile     also CPU-profile the hub process and the stream client (node --cpu-prof), kept in
//                                  bench/results/profiles/, summarised in the report
//   npm run bench -- --hub-args="--crypto-threads 0"   extra trickle-hub flags, for experiments
//   --verbose                      progress on stderr also with --json
// Every run also writes bench/results/latest.json. Targets are printed as pass/fail marks; the exit code is 0 unless
// a measurement itself failed. Speed is reported as measured figures and ratios against baselines measured in the
// same run on the same machine.
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { HUB_NODE_ARGS } from '@trickle/hub/spawn';
import { openChannels, deviceKey, startChain, startHubProcess } from './lib/world.mjs';
import { runHubLoad } from './lib/hub-load.mjs';
import { runStream } from './lib/stream-load.mjs';
import { summariseProfile } from './lib/profile.mjs';
import { round, runJsonChild } from './lib/util.mjs';
import { renderTable } from './lib/report.mjs';

const { values: args } = parseArgs({
  options: {
    json: { type: 'boolean', default: false },
    profile: { type: 'boolean', default: false },
    verbose: { type: 'boolean', default: false },
    // extra trickle-hub flags for experiments, e.g. --hub-args="--crypto-threads 0"
    'hub-args': { type: 'string', default: '' },
    // extra node flags for the trickle-hub process, e.g. --hub-node-args="--import ./my-heap-sampler.mjs"
    'hub-node-args': { type: 'string', default: '' },
    // for experiments: only these phases (comma-separated: market, gas, memory, hub, stream, device, bundle, fairness, cluster, x402, locks); crypto always runs
    only: { type: 'string', default: '' },
    'stream-devices': { type: 'string', default: '' },
    'hub-settings': { type: 'string', default: '' },
    'stream-inflight': { type: 'string', default: '' },
    'stream-outstanding': { type: 'string', default: '' },
    'stream-load': { type: 'string', default: '0.5' },
    // each latency run's measured window: a run's p99 is its worst 1% of payments, which a few hub stalls decide, so a
    // short window makes the p99 of one run swing (2.5 s windows: max/min 2.6 across five runs on a quiet machine)
    'stream-latency-ms': { type: 'string', default: '6000' },
    // node flags for the stream client processes, e.g. --stream-node-args=--trace-gc (their GC pauses on stdout)
    'stream-node-args': { type: 'string', default: '' },
    'hub-window': { type: 'string', default: '' },
  },
});
const ONLY = new Set(args.only.split(',').filter(Boolean));
const wanted = (name) => ONLY.size === 0 || ONLY.has(name);

const BENCH = dirname(fileURLToPath(import.meta.url));
const ROOT = join(BENCH, '..');
const RESULTS = join(BENCH, 'results');

// ---- settings (every load loop is bounded in time; counts are bounded by the time and the windows) ----
const CRYPTO_SECONDS = 1;
const HUB_DEVICES = 1000;
const HUB_SETTINGS = args['hub-settings'] ? args['hub-settings'].split(',').map(Number) : [1, 100, 1000];
const HUB_WARMUP_MS = 1000;
const HUB_MEASURE_MS = 4000;
// Updates in flight per device. With 2 the next update is already at the hub when it acks the previous one, and a
// channel never has two updates waiting (the hub would fold them: verify and countersign only the newest).
const HUB_WINDOW = Number(args['hub-window'] || 2);
const STREAM_DEVICES = Number(args['stream-devices'] || 2); // one per client process: each process drives its channel flat out
const STREAM_PROCESSES = Math.min(2, STREAM_DEVICES); // a process per device channel, on two cores at most two
const STREAM_IN_FLIGHT = Number(args['stream-inflight'] || 8);
const STREAM_OUTSTANDING = args['stream-outstanding']
  ? args['stream-outstanding'].split(',').map(Number)
  : [1024, 4096]; // pending pay() calls per channel, closed loop; the best is the peak
const STREAM_WARMUP_MS = 500;
// The client processes run with the hub's node flags (HUB_NODE_ARGS, packages/hub/src/spawn.ts): a scavenge of
// V8's default 16 MiB held a process ~2-4 ms, and a payment due meanwhile waited that long (p99 lower by 12-28% in each
// of six alternating pairs of runs with both sides at 2 MiB). A device that cares about its tail latency runs so too.
const STREAM_NODE_ARGS = HUB_NODE_ARGS;
const STREAM_MEASURE_MS = 2500;
const STREAM_LATENCY_RUNS = 5;
const STREAM_LATENCY_MS = Number(args['stream-latency-ms']);
const DEPOSIT = 10n ** 18n; // 1 ETH per channel; payments are 1 wei
const MEMORY_CHANNELS = 10_000;
const WATCHDOG_MS = 800_000; // a normal run takes ~150 s, ~70 s more for the cluster phase, ~3–4 min for x402, ~40 s for device

const TARGETS = {
  clusterPg1OverLmdb1: 0.7,
  clusterPg3OverPg1: 0.9,
  hubRatio: 0.8,
  streamPaymentsPerSec: 1_000_000,
  // stream.p99Ms against the same run's floor (one loopback round trip + one durable write), and absolute when the
  // floor was not measured
  streamP99OverFloor: 1.25,
  streamP99Ms: 2,
  deviceCpuMsPerState: 0.2,
  clear100kMs: 100,
  bytesPerChannel: 1024,
  clientBundleGzipBytes: 40 * 1024,
  p99RatioUnderFlood: 2,
};
const PEERS = [
  { name: 'Celer', paymentsPerSec: 4000, note: 'published, one node' },
  { name: 'Lightning (LND)', paymentsPerSec: 'a few hundred', note: 'published' },
];

const quiet = args.json && !args.verbose;
const t0 = performance.now();
const log = (line) => {
  if (!quiet) process.stderr.write(`[${((performance.now() - t0) / 1000).toFixed(1).padStart(5)}s] ${line}\n`);
};

// ---- cleanup: every process and directory this run creates ----
const cleanups = [];
const children = new Set(); // pids to SIGKILL if we exit abruptly
let cleaning;
function cleanup() {
  cleaning ??= (async () => {
    for (const fn of cleanups.splice(0).reverse()) {
      try {
        await fn();
      } catch (e) {
        log(`cleanup: ${e?.message ?? e}`);
      }
    }
  })();
  return cleaning;
}
process.on('exit', () => {
  for (const pid of children) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* already gone */
    }
  }
});
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.once(sig, () => {
    log(`${sig}: cleaning up`);
    void cleanup().finally(() => process.exit(130));
  });
}
const watchdog = setTimeout(() => {
  log(`watchdog: the suite ran over ${WATCHDOG_MS / 1000} s, stopping`);
  void cleanup().finally(() => process.exit(1));
}, WATCHDOG_MS);
watchdog.unref();

const machine = {
  cpu: os.cpus()[0]?.model ?? 'unknown',
  cores: os.availableParallelism?.() ?? os.cpus().length,
  node: process.version,
  platform: `${os.platform()} ${os.release()}`,
  memoryGiB: round(os.totalmem() / 2 ** 30, 1),
  loadavg1AtStart: round(os.loadavg()[0], 2),
};
const result = { machine, startedAt: new Date().toISOString(), errors: [] };
const phase = async (name, fn) => {
  const started = performance.now();
  log(`${name}…`);
  try {
    return await fn();
  } catch (e) {
    result.errors.push({ phase: name, message: String(e?.stack ?? e).slice(0, 2000) });
    log(`${name} FAILED: ${e?.message ?? e}`);
    return undefined;
  } finally {
    log(`${name} done in ${((performance.now() - started) / 1000).toFixed(1)} s`);
  }
};

const tmp = mkdtempSync(join(os.tmpdir(), 'trickle-bench-'));
cleanups.push(() => rmSync(tmp, { recursive: true, force: true }));

try {
  // 1. Crypto, single core, in a fresh process before anything else of ours runs; measured again after the hub
  // phase, and the faster of the two kept per figure (a shared machine only ever makes crypto look slower, which
  // would flatter the hub's ratio against it).
  const cryptoRuns = [];
  const measureCrypto = async (when) => {
    const c = await phase(`crypto (${when})`, () =>
      runJsonChild([join(BENCH, 'crypto.mjs'), String(CRYPTO_SECONDS)], { timeoutMs: 60_000 }),
    );
    if (c) cryptoRuns.push({ when, loadavg1: round(os.loadavg()[0], 2), ...c });
  };
  await measureCrypto('first');

  // 1b. What the machine allows before any Trickle code runs (bench/floor.mjs): a bare WebSocket round trip per update
  // (the CPU under hub.ratio that no hub on WebSockets avoids), and two durable writes in series (under stream.p99Ms):
  // bare, and as the latency run makes them with no CPU work (the lowest payment p99 this disk allows).
  const floor = !(wanted('hub') || wanted('stream') || wanted('floor'))
    ? undefined
    : await phase('machine floors (bare sockets, bare durable writes)', () =>
        runJsonChild(
          [
            join(BENCH, 'floor.mjs'),
            '--json',
            '--devices',
            String(HUB_DEVICES),
            '--window',
            String(HUB_WINDOW),
            '--writers',
            String(STREAM_PROCESSES),
            '--in-flight',
            String(STREAM_IN_FLIGHT),
          ],
          { timeoutMs: 60_000 },
        ),
      );
  if (floor) result.floor = floor;

  // 2. Market clearing: the package's own bench (100k validated orders; median of 5 after 3 warm-ups).
  const market = !wanted('market')
    ? undefined
    : await phase('market', () =>
        runJsonChild([join(ROOT, 'packages/market/bench/clear.mjs')], { timeoutMs: 60_000, cwd: ROOT }),
      );
  if (market) {
    result.market = {
      clear100kMs: market.clear100kMs,
      updatesPerRound: market.updatesPerRound,
      tradesPerRound: market.tradesPerRound,
      orders: market.orders,
      participants: market.participants,
      runsMs: market.runsMs,
      clear100kRevalidatingMs: market.clear100kRevalidatingMs,
      method:
        'packages/market/bench/clear.mjs: clearRound on 100,000 seeded orders, 2,000 participants, 4 markets, validated on receipt; median of 5 runs after 3 warm-ups',
    };
  }

  // 3. The world for the hub and stream phases, built while gas and memory (no timing involved) run beside it.
  const worldPromise = !(wanted('hub') || wanted('stream'))
    ? Promise.resolve(undefined)
    : phase('chain: start, deploy, open channels on-chain', async () => {
        const { server, adjudicator } = await startChain();
        children.add(server.pid);
        cleanups.push(async () => {
          await server.stop();
          children.delete(server.pid);
        });
        const started = performance.now();
        const hubDevices = await openChannels(
          server,
          adjudicator,
          Array.from({ length: HUB_DEVICES }, (_, i) => deviceKey('hub', i)),
          { deposit: DEPOSIT, group: 'hub' },
        );
        const streamDevices = await openChannels(
          server,
          adjudicator,
          Array.from({ length: STREAM_DEVICES }, (_, i) => deviceKey('stream', i)),
          { deposit: DEPOSIT, group: 'stream' },
        );
        log(
          `  ${hubDevices.length + streamDevices.length} ETH channels opened on-chain in ${((performance.now() - started) / 1000).toFixed(1)} s`,
        );
        return { server, adjudicator, hubDevices, streamDevices };
      });
  const gasPromise = !wanted('gas')
    ? Promise.resolve(undefined)
    : phase('gas', async () => {
        // scripts/gas.mjs also regenerates contracts/GAS.md; the bench leaves the tree as it found it.
        const docPath = join(ROOT, 'contracts', 'GAS.md');
        const doc = readFileSync(docPath, 'utf8');
        try {
          const gas = await runJsonChild([join(ROOT, 'scripts/gas.mjs'), '--json'], { timeoutMs: 120_000, cwd: ROOT });
          return { ...gas, docStale: readFileSync(docPath, 'utf8') !== doc };
        } finally {
          if (readFileSync(docPath, 'utf8') !== doc) writeFileSync(docPath, doc);
        }
      });
  const memoryPromise = !wanted('memory')
    ? Promise.resolve(undefined)
    : phase('memory', () =>
        runJsonChild(['--expose-gc', join(BENCH, 'memory.mjs'), String(MEMORY_CHANNELS)], { timeoutMs: 60_000 }),
      );
  const [world, gas, memory] = await Promise.all([worldPromise, gasPromise, memoryPromise]);
  if (gas) {
    result.gas = {
      ...gas.gas,
      compiler: gas.compiler,
      method:
        'node scripts/gas.mjs --json: gasUsed per adjudicator operation on the compiled bytecode (in-process EDR chain)',
    };
    if (gas.docStale) result.gas.note = 'contracts/GAS.md differs from these figures: run npm run gas';
  }
  if (memory) {
    result.memory = {
      bytesPerChannel: memory.bytesPerChannel,
      channels: memory.channels,
      recordBytesPerChannel: memory.recordBytesPerChannel,
      tableOverheadBytesPerChannel: memory.tableOverheadBytesPerChannel,
      liveBytesPerChannel: memory.liveBytesPerChannel,
      encodedRecordBytes: memory.encodedRecordBytes,
      method: `fresh node --expose-gc process: ${MEMORY_CHANNELS.toLocaleString('en-US')} synthetic ChannelRecords (both signatures over the latest state) encoded and decoded as the LMDB store does, ChannelTable.restore(records) as a restarted hub does (devices offline: idle channels kept packed); heapUsed delta after full GCs / channels. liveBytesPerChannel: the same channels with their devices connected, each woken into its engine value`,
    };
  }

  // 4. Hub: individually signed updates, real hub process, two device-worker processes.
  let hub;
  if (world) {
    hub = await phase('hub: start trickle-hub process', async () => {
      const profileDir = join(tmp, 'profile');
      const h = await startHubProcess({
        rpc: world.server.url,
        adjudicator: world.adjudicator.address,
        hubKey: world.server.accounts[1],
        dir: tmp,
        nodeArgs: [
          ...(args.profile ? ['--cpu-prof', '--cpu-prof-dir', profileDir] : []),
          ...args['hub-node-args'].split(' ').filter(Boolean),
        ],
        hubArgs: args['hub-args'].split(' ').filter(Boolean),
      });
      children.add(h.child.pid);
      cleanups.push(async () => {
        await h.stop();
        children.delete(h.child.pid);
      });
      h.profileDir = profileDir;
      return h;
    });
  }
  if (hub) {
    const byDevices = !wanted('hub')
      ? undefined
      : await phase(`hub: signed updates from ${HUB_SETTINGS.join(', ')} devices`, () =>
          runHubLoad({
            hub,
            execArgv: args.profile ? ['--cpu-prof', '--cpu-prof-dir', join(tmp, 'profile-devices')] : [],
            devices: world.hubDevices,
            settings: HUB_SETTINGS,
            warmupMs: HUB_WARMUP_MS,
            measureMs: HUB_MEASURE_MS,
            window: HUB_WINDOW,
            chainPid: world.server.pid,
            log,
          }),
        );
    if (byDevices) {
      const best = Math.max(...Object.values(byDevices).map((r) => r.signedUpdatesPerSec));
      result.hub = {
        signedUpdatesPerSec: best,
        byDevices: Object.fromEntries(Object.entries(byDevices).map(([n, r]) => [n, r.signedUpdatesPerSec])),
        details: byDevices,
        hubFlags: args['hub-args'] || '(defaults)',
        method: `trickle-hub process${args['hub-args'] ? ` (${args['hub-args']})` : ' with its default flags'} (write-ahead log + LMDB store, durable commits) on loopback; ${HUB_DEVICES} devices with ETH channels opened on-chain, split over 2 worker processes on raw WebSockets (protocol codec, native signer/verifier); each update is its own state (version +1, 1 wei), signed by its device, verified, made durable and countersigned by the hub, the ack signature verified by the device; ${HUB_WINDOW} updates in flight per device; acks counted over ${HUB_MEASURE_MS / 1000} s after ${HUB_WARMUP_MS / 1000} s warm-up`,
      };
    }
    // 5. Stream: pay() with coalescing through the client library, against the same hub process.
    const stream = !wanted('stream')
      ? undefined
      : await phase('stream: client pay() throughput and latency', () =>
          runStream({
            hub,
            devices: world.streamDevices,
            deposit: DEPOSIT,
            dir: join(tmp, 'devices'),
            processes: STREAM_PROCESSES,
            maxInFlight: STREAM_IN_FLIGHT,
            outstanding: STREAM_OUTSTANDING,
            latencyLoad: Number(args['stream-load']),
            latencyRuns: STREAM_LATENCY_RUNS,
            latencyMeasureMs: STREAM_LATENCY_MS,
            warmupMs: STREAM_WARMUP_MS,
            measureMs: STREAM_MEASURE_MS,
            log,
            execArgv: [
              ...STREAM_NODE_ARGS,
              ...(args.profile ? ['--cpu-prof', '--cpu-prof-dir', join(tmp, 'profile-stream')] : []),
              ...args['stream-node-args'].split(' ').filter(Boolean),
            ],
          }),
        );
    if (stream) {
      result.stream = {
        paymentsPerSec: stream.best.paymentsPerSec,
        p50Ms: stream.latency.p50Ms,
        // the median of the latency runs' p99s, and the runs
        p99Ms: stream.latency.p99Ms,
        p99RunsMs: stream.latency.p99RunsMs,
        floorP99Ms: result.floor?.payment?.p99Ms,
        sustainedPerSec: stream.latency.sustainedPerSec,
        peak: stream.best,
        peakSettings: stream.peaks,
        latency: stream.latency,
        method: `${STREAM_DEVICES} devices (TrickleClient, native signer/verifier, fileChannelStore: two-slot file, one O_DSYNC write per save; own payments' states written behind at most once a second) in ${STREAM_PROCESSES} client processes (node ${STREAM_NODE_ARGS.join(' ')}, as the hub), one channel each, pay(1 wei) coalesced by the client (maxInFlight ${STREAM_IN_FLIGHT}); peak: closed loop keeping N pay() calls pending per channel (N in ${STREAM_OUTSTANDING.join(', ')}; best kept), payments resolved in ${STREAM_MEASURE_MS / 1000} s after ${STREAM_WARMUP_MS / 1000} s warm-up; sustained: the first open-loop rate from 80% of that peak down (80, 60, 45, 30, 20, 10, 5%; 1 s each) that keeps up with per-payment latency measured (nothing skipped, ≥ 95% resolved, nothing failed); latency: ${STREAM_LATENCY_RUNS} open-loop runs of ${STREAM_LATENCY_MS / 1000} s (after ${STREAM_WARMUP_MS / 1000} s warm-up) at ${Number(args['stream-load']) === 0.5 ? 'half the sustained rate' : `${Number(args['stream-load']) * 100}% of the sustained rate`}, 1 ms ticks round robin, every pay() from call to resolve in a 1% log histogram; p99Ms = median of the runs' p99s; floorP99Ms = bench/floor.mjs 'payment' (a loopback WebSocket round trip then one 4 KiB pwrite + fdatasync, in series)`,
      };
      // The stream client processes at half load: a state there carries hundreds of coalesced pay() calls, so this is
      // mostly the generator's per-payment cost; kept beside the device phase's figure (device.cpuMsPerState).
      const perPaymentUs = stream.latency.runs.map((r) =>
        r.achievedPerSec > 0 ? round((r.clientCpuCores * 1e6) / r.achievedPerSec, 2) : null,
      );
      result.device = {
        ...result.device,
        cpuMsPerStateAtHalfLoad: stream.latency.deviceCpuMsPerState,
        cpuMsPerStateAtHalfLoadRuns: stream.latency.runs.map((r) => r.deviceCpuMsPerState),
        cpuUsPerPaymentAtHalfLoad: [...perPaymentUs].sort((a, b) => a - b)[Math.floor(perPaymentUs.length / 2)],
        paymentsPerStateAtHalfLoad: round(
          stream.latency.runs.map((r) => r.achievedPerSec / Math.max(1, r.statesPerSec)).sort((a, b) => a - b)[
            Math.floor(stream.latency.runs.length / 2)
          ],
          1,
        ),
        methodAtHalfLoad:
          "cpuMsPerStateAtHalfLoad: CPU (user + system) of the stream client processes over each stream latency run's measured window (half load), divided by the states their channels had acked in it (version delta), median of the runs; a state there carries hundreds of coalesced pay() calls, so it is mostly the load generator's per-payment cost. cpuUsPerPaymentAtHalfLoad: the same CPU per payment resolved, median of the runs",
      };
    }
    if (args.profile) {
      await phase('CPU profiles', async () => {
        await hub.stop();
        // One profile per thread: <pid>.0 is the main thread, the others are the hub's crypto worker threads.
        const files = readdirSync(hub.profileDir)
          .filter((f) => f.endsWith('.cpuprofile'))
          .sort();
        if (files.length === 0) throw new Error('the hub wrote no CPU profile');
        mkdirSync(join(RESULTS, 'profiles'), { recursive: true });
        // Only the samples taken during the hub phase's measurement windows (not start-up, channel admission or the
        // stream phase); the files themselves hold the whole lifetime.
        const windows = Object.values(result.hub?.details ?? {}).map((d) => d.windowUs);
        result.hubProfile = {
          note: `hub process, self time during the ${windows.length} measurement windows of the hub phase`,
          threads: [],
        };
        for (const [k, f] of files.entries()) {
          const name = k === 0 ? 'main' : `worker-${k}`;
          const kept = join(RESULTS, 'profiles', `hub-${name}.cpuprofile`);
          writeFileSync(kept, readFileSync(join(hub.profileDir, f)));
          result.hubProfile.threads.push({
            thread: name,
            file: `bench/results/profiles/hub-${name}.cpuprofile`,
            ...summariseProfile(kept, 20, windows.length ? windows : undefined),
          });
        }
        // The hub phase's device processes (load generators), same windows.
        const devicesDir = join(tmp, 'profile-devices');
        const deviceFiles = existsSync(devicesDir)
          ? readdirSync(devicesDir)
              .filter((f) => f.endsWith('.cpuprofile'))
              .sort()
          : [];
        for (const [k, f] of deviceFiles.entries()) {
          const kept = join(RESULTS, 'profiles', `hub-devices-${k}.cpuprofile`);
          writeFileSync(kept, readFileSync(join(devicesDir, f)));
          result.hubProfile.threads.push({
            thread: `hub-phase device process ${k}`,
            file: `bench/results/profiles/hub-devices-${k}.cpuprofile`,
            ...summariseProfile(kept, 20, windows.length ? windows : undefined),
          });
        }
        // The stream phase's client process (whole lifetime: connecting, peak settings, latency run).
        const streamDir = join(tmp, 'profile-stream');
        const clientFiles = !existsSync(streamDir)
          ? []
          : readdirSync(streamDir)
              .filter((f) => f.endsWith('.cpuprofile'))
              .sort();
        for (const [k, f] of clientFiles.entries()) {
          const kept = join(RESULTS, 'profiles', `stream-client-${k}.cpuprofile`);
          writeFileSync(kept, readFileSync(join(streamDir, f)));
          result.hubProfile.threads.push({
            thread: `stream client process ${k}`,
            file: `bench/results/profiles/stream-client-${k}.cpuprofile`,
            ...summariseProfile(kept, 20),
          });
        }
      });
    }
  }

  // 5b. A device's CPU per acked state at device rates (bench/device-cpu.mjs: its own chain server and hub process,
  // ONE TrickleClient in its own process paying a few times per state).
  const device = !wanted('device')
    ? undefined
    : await phase('device: CPU per acked state, one client process', () =>
        runJsonChild([join(BENCH, 'device-cpu.mjs'), '--json'], { timeoutMs: 180_000, cwd: ROOT }),
      );
  if (device) result.device = { ...device, ...result.device, method: device.method };
  if (result.device?.methodAtHalfLoad) {
    const { methodAtHalfLoad, ...rest } = result.device;
    result.device = {
      ...rest,
      method: [rest.method && `cpuMsPerState: ${rest.method}`, methodAtHalfLoad].filter(Boolean).join('. '),
    };
  }

  // 6. Crypto again, then the derived figures: the crypto bound of the hub's work and the ratio against it.
  await measureCrypto('after the load phases');

  // 7. The device client bundled for a browser, and fairness under a flood (its own chain and hub process; after
  // the crypto re-measure, so its abusive load does not touch that).
  const bundle = !wanted('bundle')
    ? undefined
    : await phase('client bundle for a browser', () =>
        runJsonChild([join(BENCH, 'bundle.mjs'), '--json'], { timeoutMs: 60_000, cwd: ROOT }),
      );
  if (bundle) result.clientBundle = bundle;
  const fairness = !wanted('fairness')
    ? undefined
    : await phase('fairness under a flood', () =>
        runJsonChild([join(BENCH, 'fairness.mjs'), '--json'], { timeoutMs: 180_000, cwd: ROOT }),
      );
  if (fairness) result.fairness = fairness;
  // 8. A hub cluster on PostgreSQL (bench/cluster.mjs): signed updates/s on LMDB with one process and on
  // PostgreSQL with 1, 2, 3 processes (the same devices spread over them), and the failover time after a SIGKILL.
  const cluster = !wanted('cluster')
    ? undefined
    : await phase('cluster on PostgreSQL: 1 process on LMDB, 1/2/3 on PostgreSQL, failover', () =>
        runJsonChild([join(BENCH, 'cluster.mjs'), '--json'], { timeoutMs: 240_000, cwd: ROOT }),
      );
  if (cluster) result.cluster = cluster;
  // 9. x402 over channels against `exact`-style settlement, and concurrent payment streams (bench/x402.mjs: its own
  // chain server and hub process).
  const x402 = !wanted('x402')
    ? undefined
    : await phase('x402 over channels vs exact; concurrent payment streams', () =>
        runJsonChild([join(BENCH, 'x402.mjs'), '--json'], { timeoutMs: 600_000, cwd: ROOT }),
      );
  if (x402) {
    result.x402 = x402.x402;
    result.streams = x402.streams;
  }
  // 10. Conditional (hashlocked) routed payments against plain routed payments, one at a time through one hub
  // (bench/locks.mjs: its own chain server and an in-process hub): locks.conditionalPerSec, plainRoutedPerSec, ratio.
  const locks = !wanted('locks')
    ? undefined
    : await phase('conditional vs plain routed payments', () =>
        runJsonChild([join(BENCH, 'locks.mjs'), '--json'], { timeoutMs: 180_000, cwd: ROOT }),
      );
  if (locks) result.locks = locks.locks;
  if (cryptoRuns.length > 0) {
    const best = (f) => Math.max(...cryptoRuns.map(f).filter((x) => typeof x === 'number'));
    const native = cryptoRuns[0].native !== undefined;
    const pick = (c) => (native ? c.native : c.noble);
    result.crypto = {
      backend: native
        ? 'native (libsecp256k1 via @trickle/protocol/native), as the hub uses'
        : 'noble (native binding missing)',
      signPerSec: round(
        best((c) => pick(c).signPerSec),
        0,
      ),
      verifyPerSec: round(
        best((c) => pick(c).verifyPerSec),
        0,
      ),
      noble: {
        signPerSec: round(
          best((c) => c.noble.signPerSec),
          0,
        ),
        verifyPerSec: round(
          best((c) => c.noble.verifyPerSec),
          0,
        ),
      },
      nativeRaw:
        native && cryptoRuns[0].nativeRaw
          ? Object.fromEntries(
              Object.keys(cryptoRuns[0].nativeRaw).map((k) => [
                k,
                round(
                  best((c) => c.nativeRaw?.[k]),
                  0,
                ),
              ]),
            )
          : undefined,
      stateDigestPerSec: round(
        best((c) => c.stateDigestPerSec),
        0,
      ),
      codec: {
        updateFrameBytes: cryptoRuns[0].updateFrameBytes,
        encodeUpdatePerSec: round(
          best((c) => c.encodeUpdatePerSec),
          0,
        ),
        decodeUpdatePerSec: round(
          best((c) => c.decodeUpdatePerSec),
          0,
        ),
        encodeStoreRecordPerSec: round(
          best((c) => c.encodeRecordPerSec),
          0,
        ),
      },
      runs: cryptoRuns.map((c) => ({
        when: c.when,
        loadavg1: c.loadavg1,
        signPerSec: round(pick(c).signPerSec, 0),
        verifyPerSec: round(pick(c).verifyPerSec, 0),
        stateDigestPerSec: round(c.stateDigestPerSec, 0),
      })),
      method: `fresh process, one core, ~${CRYPTO_SECONDS} s per figure (noble ${CRYPTO_SECONDS / 2} s) after a warm-up, 1,024 distinct 32-byte state digests; verify = Verifier.recoverAddress (recover the key, derive the address, compare), what hub and devices call; measured before and after the load phases, the faster kept`,
    };
  }
  if (result.crypto && result.hub) {
    const c = result.crypto;
    const perOp = {
      deviceSignUs: 1e6 / c.signPerSec,
      hubVerifyUs: 1e6 / c.verifyPerSec,
      hubSignUs: 1e6 / c.signPerSec,
      deviceVerifyUs: 1e6 / c.verifyPerSec,
      twoDigestsUs: 2e6 / c.stateDigestPerSec,
    };
    const perUpdateUs = Object.values(perOp).reduce((a, b) => a + b, 0);
    result.hub.cryptoBoundPerSec = round((machine.cores * 1e6) / perUpdateUs, 0);
    result.hub.cryptoPerUpdateUs = Object.fromEntries(
      Object.entries({ ...perOp, total: perUpdateUs }).map(([k, v]) => [k, round(v, 1)]),
    );
    result.hub.ratio = round(result.hub.signedUpdatesPerSec / result.hub.cryptoBoundPerSec, 3);
    // Why: at the best setting, CPU spent per update by the hub and by the devices against the crypto it contains.
    // When the cores are saturated the ratio can be no better than this share.
    const [bestDevices, b] = Object.entries(result.hub.details).reduce((x, y) =>
      y[1].signedUpdatesPerSec > x[1].signedUpdatesPerSec ? y : x,
    );
    const cpuUs = b.cpuUsPerUpdate.hub + b.cpuUsPerUpdate.devices;
    result.hub.analysis = {
      atDevices: Number(bestDevices),
      cpuUsPerUpdate: { hub: b.cpuUsPerUpdate.hub, devices: b.cpuUsPerUpdate.devices, total: cpuUs },
      cryptoUsPerUpdate: round(perUpdateUs, 1),
      cryptoShareOfCpu: round(perUpdateUs / cpuUs, 3),
      busyCores: round(b.hub.cpuCores + b.workersCpuCores, 2),
    };
    // The best ratio a hub on WebSockets could reach here: crypto over crypto plus a bare socket round trip.
    if (result.floor?.socket) {
      result.hub.ratioCeiling = round(perUpdateUs / (perUpdateUs + result.floor.socket.cpuUsPerRoundTrip), 3);
    }
  }
  result.targets = [
    {
      name: 'hub.ratio',
      target: `≥ ${TARGETS.hubRatio}`,
      value: result.hub?.ratio,
      pass: result.hub?.ratio >= TARGETS.hubRatio,
    },
    {
      name: 'stream.paymentsPerSec',
      target: `≥ ${TARGETS.streamPaymentsPerSec.toLocaleString('en-US')}`,
      value: result.stream?.paymentsPerSec,
      pass: result.stream?.paymentsPerSec >= TARGETS.streamPaymentsPerSec,
    },
    streamP99Target(),
    {
      // The device phase's figure (one client process at device rates), with the same run's bare-device floor beside
      // it: no client library can go below that on this machine.
      name: 'device.cpuMsPerState',
      target: `≤ ${TARGETS.deviceCpuMsPerState}`,
      value: result.device?.cpuMsPerState,
      floor: result.device?.floor?.bareStrict?.cpuMsPerState,
      pass: result.device?.cpuMsPerState != null && result.device.cpuMsPerState <= TARGETS.deviceCpuMsPerState,
    },
    {
      name: 'market.clear100kMs',
      target: `≤ ${TARGETS.clear100kMs}`,
      value: result.market?.clear100kMs,
      pass: result.market?.clear100kMs <= TARGETS.clear100kMs,
    },
    {
      name: 'memory.bytesPerChannel',
      target: `≤ ${TARGETS.bytesPerChannel.toLocaleString('en-US')}`,
      value: result.memory?.bytesPerChannel,
      pass: result.memory?.bytesPerChannel <= TARGETS.bytesPerChannel,
    },
    {
      name: 'clientBundle.gzipBytes',
      target: `≤ ${TARGETS.clientBundleGzipBytes.toLocaleString('en-US')}`,
      value: result.clientBundle?.gzipBytes,
      pass: result.clientBundle?.gzipBytes <= TARGETS.clientBundleGzipBytes,
    },
    {
      name: 'fairness.p99RatioUnderFlood',
      target: `≤ ${TARGETS.p99RatioUnderFlood}`,
      value: result.fairness?.p99RatioUnderFlood,
      pass: result.fairness?.p99RatioUnderFlood <= TARGETS.p99RatioUnderFlood,
    },
    {
      name: 'cluster.pg1OverLmdb1',
      target: `≥ ${TARGETS.clusterPg1OverLmdb1}`,
      value: result.cluster?.ratios?.pg1OverLmdb1,
      pass: result.cluster?.ratios?.pg1OverLmdb1 >= TARGETS.clusterPg1OverLmdb1,
    },
    {
      name: 'cluster.pg3OverPg1',
      target: `≥ ${TARGETS.clusterPg3OverPg1}`,
      value: result.cluster?.ratios?.pg3OverPg1,
      pass: result.cluster?.ratios?.pg3OverPg1 >= TARGETS.clusterPg3OverPg1,
    },
    {
      name: 'cluster.failoverMs',
      target: `≤ 2 × leaseMs + 1000`,
      value: result.cluster?.failoverMs,
      pass: result.cluster?.failoverMs <= 2 * result.cluster?.leaseMs + 1000,
    },
  ];
  result.peers = PEERS;
} finally {
  await cleanup();
  clearTimeout(watchdog);
}

/** stream.p99Ms ≤ 1.25 × the same run's floor when it was measured (the issue's target), else the absolute limit. */
function streamP99Target() {
  const value = result.stream?.p99Ms;
  const floor = result.stream?.floorP99Ms;
  const limit = floor != null ? round(TARGETS.streamP99OverFloor * floor, 3) : TARGETS.streamP99Ms;
  const target = floor != null ? `≤ ${TARGETS.streamP99OverFloor} × floor ${floor} = ${limit}` : `≤ ${limit}`;
  return { name: 'stream.p99Ms', target, limit, value, pass: value != null && value <= limit };
}

result.machine.loadavg1AtEnd = round(os.loadavg()[0], 2);
result.durationSec = round((performance.now() - t0) / 1000, 1);
// A stable, readable key order.
const ORDER = [
  'machine',
  'startedAt',
  'durationSec',
  'crypto',
  'floor',
  'hub',
  'stream',
  'device',
  'market',
  'memory',
  'clientBundle',
  'fairness',
  'cluster',
  'x402',
  'streams',
  'locks',
  'gas',
  'targets',
  'peers',
  'hubProfile',
  'errors',
];
const ordered = Object.fromEntries([
  ...ORDER.filter((k) => k in result).map((k) => [k, result[k]]),
  ...Object.entries(result).filter(([k]) => !ORDER.includes(k)),
]);
mkdirSync(RESULTS, { recursive: true });
writeFileSync(join(RESULTS, ONLY.size ? 'partial.json' : 'latest.json'), `${JSON.stringify(ordered, null, 2)}\n`);
if (args.json) process.stdout.write(`${JSON.stringify(ordered)}\n`);
else process.stdout.write(renderTable(ordered));
process.exitCode = result.errors.length > 0 ? 1 : 0;
