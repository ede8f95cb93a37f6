#!/usr/bin/env node
// Where the stream bench's latency tail comes from. The stream bench's setup (one chain server, one trickle-hub
// process, two bench/stream-worker.mjs processes with one channel each, pay(1 wei) coalesced, maxInFlight 8) run
// open loop at a fixed total rate, `--runs` times, with bench/lib/trace-preload.mjs in the hub and the workers: every
// frame, durable write, GC pause and event-loop stall time-stamped. Each measured tick (the payments one 1 ms tick
// issues) is followed through its stages — pay() called → its state sent → hub received → hub's durable write done →
// ack sent → ack received → pay() resolved — and the ticks above the run's p99 are split by stage, with what
// happened meanwhile (GC, stalls, slow writes). Diagnostic only (the tracer costs CPU); the figures to report are
// the stream bench's.
//   node bench/stream-trace.mjs [--rate 400000] [--runs 3] [--measure-ms 2500] [--hub-args "..."] [--node-args "..."]
//     [--hub-node-args "..."]
//     [--hub-bin <copy of packages/hub/dist>/bin.js] [--client <copy of packages/client/dist>/index.js] [--worker <file>]
//     [--strace]  (also strace -f the hub's pwrite64/fdatasync/fsync/msync with times, to .tmp/stream-trace/strace.txt)
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { stringifyJson } from '@trickle/protocol/json';
import { zeroState } from '@trickle/protocol/channel';
import { openChannels, deviceKey, startChain, startHubProcess } from './lib/world.mjs';
import { forkWorker } from './lib/ipc.mjs';

const { values: a } = parseArgs({
  options: {
    rate: { type: 'string', default: '400000' },
    runs: { type: 'string', default: '3' },
    'measure-ms': { type: 'string', default: '2500' },
    'hub-args': { type: 'string', default: '' },
    'node-args': { type: 'string', default: '' },
    // extra node flags for the hub process (e.g. `--cpu-prof --cpu-prof-dir=.tmp/prof`)
    'hub-node-args': { type: 'string', default: '' },
    'in-flight': { type: 'string', default: '8' },
    strace: { type: 'boolean', default: false },
    // another build of the hub (a copy of packages/hub/dist with a change), for an A/B on the same setup
    'hub-bin': { type: 'string', default: '' },
    // another build of the client (e.g. a copy of packages/client/dist from before a change), imported by the workers
    client: { type: 'string', default: '' },
    // another version of bench/stream-worker.mjs (e.g. `git show <commit>:bench/stream-worker.mjs` saved under bench/)
    worker: { type: 'string', default: '' },
    keep: { type: 'boolean', default: false },
  },
});
const BENCH = dirname(fileURLToPath(import.meta.url));
const OUT = join(BENCH, '..', '.tmp', 'stream-trace');
mkdirSync(OUT, { recursive: true });
const PRELOAD = join(BENCH, 'lib', 'trace-preload.mjs');
let WORKER = a.worker ? resolve(a.worker) : join(BENCH, 'stream-worker.mjs');
if (a.client) {
  const copy = join(OUT, `worker-${process.pid}.mjs`);
  const spec = pathToFileURL(resolve(a.client)).href;
  writeFileSync(copy, readFileSync(WORKER, 'utf8').replace("from '@trickle/client'", `from '${spec}'`));
  WORKER = copy;
}
const DEPOSIT = 10n ** 18n;
const measureMs = Number(a['measure-ms']);

const tmp = mkdtempSync(join(tmpdir(), 'stream-trace-'));
const traceDir = join(tmp, 'trace');
mkdirSync(traceDir);
process.env.TRICKLE_TRACE_DIR = traceDir;
const { server, adjudicator } = await startChain();
const devices = await openChannels(
  server,
  adjudicator,
  [0, 1].map((i) => deviceKey('stream-trace', i)),
  {
    deposit: DEPOSIT,
    group: 'stream-trace',
  },
);
const hub = await (a['hub-bin'] ? startOtherHub : startHubProcess)({
  rpc: server.url,
  adjudicator: adjudicator.address,
  hubKey: server.accounts[1],
  dir: tmp,
  nodeArgs: ['--import', PRELOAD, ...a['hub-node-args'].split(' ').filter(Boolean)],
  hubArgs: a['hub-args'].split(' ').filter(Boolean),
});
let strace;
if (a.strace) {
  strace = spawn(
    'strace',
    [
      '-f',
      '-tt',
      '-T',
      '--seccomp-bpf',
      '-e',
      'trace=pwrite64,fdatasync,fsync,msync',
      '-o',
      join(OUT, 'strace.txt'),
      '-p',
      String(hub.child.pid),
    ],
    { stdio: 'ignore' },
  );
  await new Promise((r) => setTimeout(r, 500));
}
const workers = [0, 1].map(() =>
  forkWorker(WORKER, ['--import', PRELOAD, ...a['node-args'].split(' ').filter(Boolean)]),
);
const rows = [];
try {
  await Promise.all(
    workers.map((w, k) =>
      w.call(
        {
          t: 'init',
          url: hub.url,
          dir: join(tmp, 'devices'),
          maxInFlight: Number(a['in-flight']),
          devices: [
            {
              key: devices[k].key,
              record: stringifyJson({
                params: devices[k].params,
                channelId: devices[k].channelId,
                funding: { device: DEPOSIT, hub: 0n },
                latest: { state: zeroState(devices[k].channelId) },
                signedVersion: 0n,
              }),
            },
          ],
        },
        60_000,
      ),
    ),
  );
  for (let r = 0; r < Number(a.runs); r++) {
    const load1 = loadavg()[0];
    const rs = await Promise.all(
      workers.map((w) =>
        w.call({ t: 'rate', perSec: Number(a.rate) / 2, warmupMs: 500, measureMs, maxPayments: 1e9 }, 60_000),
      ),
    );
    const hist = new Array(rs[0].hist.length).fill(0);
    for (const x of rs) x.hist.forEach((c, i) => (hist[i] += c));
    const n = rs.reduce((s, x) => s + x.samples, 0);
    const pct = (p) => {
      const rank = Math.ceil((p / 100) * n);
      let seen = 0;
      for (let i = 0; i < hist.length; i++) if ((seen += hist[i]) >= rank) return +(1.01 ** (i + 1) / 1000).toFixed(2);
    };
    const row = {
      run: r + 1,
      load1: +load1.toFixed(2),
      achieved: Math.round(n / (measureMs / 1000)),
      saturated: rs.some((x) => x.saturated),
      p50: pct(50),
      p99: pct(99),
      max: +Math.max(...rs.map((x) => x.max)).toFixed(2),
      statesPerSec: Math.round(rs.reduce((s, x) => s + x.states, 0) / (measureMs / 1000)),
      clientCores: +(rs.reduce((s, x) => s + x.cpuSeconds, 0) / (measureMs / 1000)).toFixed(2),
    };
    rows.push(row);
    process.stdout.write(`${JSON.stringify(row)}\n`);
  }
} finally {
  await Promise.all(workers.map((w) => w.stop()));
  await hub.stop();
  strace?.kill('SIGINT');
  await server.stop();
}
analyse(traceDir);
if (strace) {
  await new Promise((r) => setTimeout(r, 500));
  straceSummary(join(OUT, 'strace.txt'));
}
if (!a.keep) rmSync(tmp, { recursive: true, force: true });
else process.stdout.write(`trace kept in ${traceDir}\n`);

/** startHubProcess's hub from `--hub-bin` instead of packages/hub/dist/bin.js. */
async function startOtherHub({ rpc, adjudicator, hubKey, dir, nodeArgs, hubArgs }) {
  const keyFile = join(dir, 'hub.key');
  writeFileSync(keyFile, `${hubKey}\n`, { mode: 0o600 });
  const flags = ['--rpc', rpc, '--adjudicator', adjudicator, '--key-file', keyFile, '--store', join(dir, 'hub-store')];
  const child = spawn(
    process.execPath,
    [...nodeArgs, a['hub-bin'], ...flags, '--port', '0', '--poll-ms', '1000', '--log-level', 'warn', ...hubArgs],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const url = await new Promise((resolve, reject) => {
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (s) => {
      out += s;
      const line = out.split('\n').find((l) => l.includes('"listening"'));
      if (line) resolve(JSON.parse(line).url);
    });
    child.once('exit', (code) => reject(new Error(`hub exited with ${code}`)));
  });
  child.stdout.resume();
  return {
    child,
    url,
    stop: () =>
      new Promise((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.once('exit', resolve);
        child.kill('SIGTERM');
      }),
  };
}

/** How long the durable write in flight at `at` (if any) still ran, ms. */
function inFlightWait(writes, at) {
  let wait = 0;
  for (const w of writes) {
    if (w[0] > at) break;
    if (w[1] > at) wait = Math.max(wait, w[1] - at);
  }
  return wait;
}

function analyse(dir) {
  const files = readdirSync(dir).filter((f) => f.endsWith('.json'));
  const traces = files.map((f) => JSON.parse(readFileSync(join(dir, f), 'utf8')));
  const hubT = traces.find((t) => t.role === 'hub');
  const clients = traces.filter((t) => t.ticks);
  if (!hubT || clients.length === 0) {
    process.stdout.write(`no trace (files: ${files.join(', ')})\n`);
    return;
  }
  // Hub: updates received per version (per channel: versions are per channel, so keyed by the client's send time
  // order below), acks sent, WAL writes.
  const hubWrites = hubT.writes.filter((w) => w[3] === 'fs.write').sort((x, y) => x[0] - y[0]);
  const stages = [];
  for (const c of clients) {
    const sent = c.frames.filter((f) => f[1] === 1 && f[2] === 'update').sort((x, y) => x[0] - y[0]);
    const acks = c.frames.filter((f) => f[1] === 0 && f[2] === 'ack').sort((x, y) => x[0] - y[0]);
    // The hub's frames of this channel: the hub sees both channels; versions are close to each other across the
    // two channels, so match on version and nearest time.
    const byVersion = (list) => {
      const m = new Map();
      for (const f of list) {
        const l = m.get(f[3]) ?? [];
        l.push(f);
        m.set(f[3], l);
      }
      return m;
    };
    const channel = sent[0]?.[4];
    const hubIn = byVersion(hubT.frames.filter((f) => f[1] === 0 && f[2] === 'update' && f[4] === channel));
    const hubAck = byVersion(hubT.frames.filter((f) => f[1] === 1 && f[2] === 'ack' && f[4] === channel));
    const nearestAfter = (list, at) => {
      let best;
      for (const f of list ?? []) if (f[0] >= at - 0.05 && (best === undefined || f[0] < best[0])) best = f;
      return best;
    };
    const firstAfter = (list, at) => {
      let lo = 0;
      let hi = list.length;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (list[mid][0] < at) lo = mid + 1;
        else hi = mid;
      }
      return list[lo];
    };
    for (const [start, end, count] of c.ticks) {
      if (end === 0) continue;
      const s = firstAfter(sent, start - 0.001);
      if (!s) continue;
      const v = s[3];
      const hin = nearestAfter(hubIn.get(v), s[0]);
      let hack;
      for (let w = v; w < v + 64 && !hack; w++) hack = nearestAfter(hubAck.get(w), hin?.[0] ?? s[0]);
      const ackIn = firstAfter(acks, hack?.[0] ?? s[0]);
      // The hub's last durable write to end before its ack left.
      let wal;
      if (hack) {
        for (const w of hubWrites) {
          if (w[1] > hack[0]) break;
          wal = w;
        }
      }
      stages.push({
        pid: c.pid,
        start,
        total: end - start,
        count,
        queued: s[0] - start, // pay() called → its state sent (coalescing, maxInFlight window)
        toHub: hin ? hin[0] - s[0] : NaN,
        hubToWalStart: hin && wal ? wal[0] - hin[0] : NaN, // received → its durable write began (crypto, queue)
        // of which: waiting for the durable write in flight when it arrived to end, and writes that began between its
        // arrival and its own (groups it missed)
        writeInFlight: hin ? inFlightWait(hubWrites, hin[0]) : NaN,
        missedGroups: hin && wal ? hubWrites.filter((w) => w[0] > hin[0] && w[0] < wal[0]).length : NaN,
        wal: wal ? wal[1] - wal[0] : NaN,
        walToAck: hack && wal ? hack[0] - wal[1] : NaN,
        toClient: hack && ackIn ? ackIn[0] - hack[0] : NaN,
        resolve: ackIn ? end - ackIn[0] : NaN,
        ackVersionGap: hack ? hack[3] - v : NaN,
      });
    }
  }
  stages.sort((x, y) => x.total - y.total);
  const p99 = stages[Math.floor(stages.length * 0.99)]?.total ?? 0;
  const keys = [
    'total',
    'queued',
    'toHub',
    'hubToWalStart',
    'writeInFlight',
    'missedGroups',
    'wal',
    'walToAck',
    'toClient',
    'resolve',
  ];
  const med = (xs) => {
    const s = xs.filter((x) => Number.isFinite(x)).sort((p, q) => p - q);
    return s.length ? +s[Math.floor(s.length / 2)].toFixed(2) : null;
  };
  const summary = (label, list) =>
    process.stdout.write(
      `${label} (${list.length} ticks): ${keys.map((k) => `${k} ${med(list.map((x) => x[k]))}`).join(', ')}\n`,
    );
  summary('all ticks, median per stage', stages);
  const tail = stages.filter((x) => x.total >= p99);
  summary(`ticks ≥ p99 ${p99.toFixed(2)} ms, median per stage`, tail);
  // What happened around the tail ticks: GC pauses / stalls / slow writes overlapping [start, end].
  const overl = (list, s, e, at = (x) => x[0], dur = (x) => x[1]) =>
    list.filter((x) => at(x) < e && at(x) + dur(x) > s);
  const allGc = traces.flatMap((t) => t.gcs.map((g) => [g[0], g[1], g[2], t.role, t.pid]));
  const allStalls = traces.flatMap((t) => t.stalls.map((g) => [g[0], g[1], t.role, t.pid]));
  const slowWrites = traces.flatMap((t) =>
    t.writes.filter((w) => w[1] - w[0] > 2).map((w) => [w[0], w[1] - w[0], w[3], t.role, t.pid]),
  );
  let withGc = 0;
  let withStall = 0;
  let withSlowWrite = 0;
  for (const x of tail) {
    const e = x.start + x.total;
    if (overl(allGc, x.start, e).length) withGc++;
    if (
      overl(
        allStalls,
        x.start,
        e,
        (s) => s[0] - s[1],
        (s) => s[1],
      ).length
    )
      withStall++;
    if (overl(slowWrites, x.start, e).length) withSlowWrite++;
  }
  process.stdout.write(
    `tail ticks overlapping: a GC pause ${withGc}, an event-loop stall > 2 ms ${withStall}, a durable write > 2 ms ${withSlowWrite} (of ${tail.length})\n`,
  );
  // Per payer process: its ticks at or above its p99 that overlap one of its own GC pauses, against all its ticks.
  for (const c of clients) {
    const ticks = c.ticks.filter((x) => x[1] > 0);
    const lat = ticks.map((x) => x[1] - x[0]).sort((x, y) => x - y);
    const cut = lat[Math.floor(lat.length * 0.99)] ?? 0;
    const inGc = (x) => c.gcs.some((g) => g[0] < x[1] && g[0] + g[1] > x[0]);
    const tailOwn = ticks.filter((x) => x[1] - x[0] >= cut);
    process.stdout.write(
      `payer ${c.pid}: ${tailOwn.filter(inGc).length} of its ${tailOwn.length} ticks ≥ its p99 (${cut.toFixed(2)} ms) overlap its own GC pauses; of all its ticks ${((100 * ticks.filter(inGc).length) / Math.max(1, ticks.length)).toFixed(1)}%\n`,
    );
  }
  for (const t of traces) {
    const g = t.gcs.map((x) => x[1]).sort((p, q) => p - q);
    const s = t.stalls.map((x) => x[1]).sort((p, q) => p - q);
    const w = t.writes.map((x) => x[1] - x[0]).sort((p, q) => p - q);
    const q = (xs, p) => (xs.length ? +xs[Math.min(xs.length - 1, Math.floor(xs.length * p))].toFixed(2) : null);
    // A stall during which the process used at least 70% of a core was work; the others, mostly waiting for a core.
    const busy = t.stalls.filter((x) => x[2] !== undefined && x[2] >= 0.7 * x[3]).length;
    process.stdout.write(
      `${t.role}-${t.pid}: gc ${g.length} (p99 ${q(g, 0.99)}, max ${q(g, 1)} ms), stalls>2ms ${s.length} (max ${q(s, 1)} ms; ${busy} with the process busy ≥ 70% of it), writes ${w.length} (p50 ${q(w, 0.5)}, p99 ${q(w, 0.99)}, max ${q(w, 1)} ms)\n`,
    );
  }
  // The 8 slowest ticks in full.
  for (const x of stages.slice(-8))
    process.stdout.write(
      `  slow tick ${keys.map((k) => `${k} ${Number.isFinite(x[k]) ? x[k].toFixed(2) : '-'}`).join(' ')} gap ${x.ackVersionGap}\n`,
    );
}

/**
 * The hub's durable writes from strace: the log's (pwrite64 of a "TWL1" entry) against LMDB's (its data file's
 * pwrite64 and fdatasync, flushed in the background): how long a log write takes when it overlaps LMDB's I/O and when not.
 */
function straceSummary(file) {
  const ms = (s) => {
    const [h, m, sec] = s.split(':');
    return (Number(h) * 3600 + Number(m) * 60 + Number(sec)) * 1000;
  };
  const unfinished = new Map();
  const calls = [];
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    const m = line.match(/^(\d+)\s+(\S+) (.*)$/);
    if (!m) continue;
    const [, pid, ts, rest] = m;
    if (rest.includes('<unfinished ...>')) {
      unfinished.set(pid, { at: ms(ts), text: rest });
      continue;
    }
    let start = ms(ts);
    let text = rest;
    if (rest.startsWith('<... ')) {
      const u = unfinished.get(pid);
      if (!u) continue;
      unfinished.delete(pid);
      ({ at: start, text } = u);
    }
    const d = rest.match(/<([\d.]+)>$/);
    const call = text.match(/^(\w+)\((\d+)/);
    if (d && call) calls.push({ start, dur: Number(d[1]) * 1000, name: call[1], wal: text.includes('TWL1') });
  }
  const wal = calls.filter((c) => c.wal);
  const lmdb = calls.filter((c) => !c.wal);
  const overlaps = (a) => lmdb.some((b) => a.start < b.start + b.dur && b.start < a.start + a.dur);
  const stat = (xs) => {
    const s = xs.map((c) => c.dur).sort((x, y) => x - y);
    const q = (p) => (s.length ? s[Math.min(s.length - 1, Math.floor(s.length * p))].toFixed(2) : '-');
    return `${s.length}: p50 ${q(0.5)} p90 ${q(0.9)} p99 ${q(0.99)} max ${q(1)} ms`;
  };
  process.stdout.write(
    `strace, hub: log writes ${stat(wal)}; overlapping LMDB I/O ${stat(wal.filter(overlaps))}; not ${stat(wal.filter((c) => !overlaps(c)))}; LMDB syncs ${stat(lmdb.filter((c) => c.name !== 'pwrite64'))}\n`,
  );
}
