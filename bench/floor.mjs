// What this machine allows before any Trickle code runs: the two floors under the hub.ratio and stream.p99Ms targets.
//
//   node bench/floor.mjs [--json] [--only socket,fsync,payment,wakeup,overlap] [--devices 1000] [--window 2] [--seconds 3] [--pairs 2000]
//
// socket: the hub bench's traffic with nothing in it. An echo server (`ws`, as the hub uses) in one process, the same
//   number of WebSocket connections as the hub bench's devices in another, each keeping `window` 138-byte binary
//   frames in flight and answering every echo with the next frame. No codec, no crypto, no store. It reports round
//   trips per second and the CPU (user + system, both processes) per round trip: every hub update costs at least
//   this much besides its crypto, so crypto / (crypto + this) is the highest hub.ratio a WebSocket hub can reach here.
// fsync: the two durable writes a payment waits for, in series as a payment meets them (the hub's, then the
//   device's): 4 KiB pwrite + fdatasync on one preallocated file, then on a second one. It reports p50 / p99 of
//   the pair on an otherwise idle process: a p99 above the latency target means no design that makes both parties
//   durable before a payment is done can meet it on this disk.
// fsync under load: the stream bench's latency run with everything but the disk taken out. `--writers` processes
//   (default 2, one per stream device channel), each an open loop of one payment tick per ms for 3 s: a tick's
//   payments go out as one state while fewer than `--in-flight` (8) are in flight; the "hub" writes the state
//   durably (1.2 KiB O_DSYNC pwrite, states arriving meanwhile share its next write, as in its group commit), then
//   the payments resolve, while the "device" saves the acked state behind on its own file (acks arriving meanwhile
//   share its next save; nothing waits for it, but it shares the disk). It reports each state's latency (the hub's
//   write, queue included), and each tick's payment latency: a stalled write delays every
//   tick queued behind it, so this p99 is the lowest stream.p99Ms any hub and client that keep the same durability
//   can reach on this disk, with no signing, verifying, network or event loop at all.
// payment: the floor under stream.p99Ms once a payment waits for the hub's durable write only (the device writes
//   behind): a loopback WebSocket round trip, then one 4 KiB pwrite + fdatasync, in series; p50 / p99 / max.
// overlap: whether durable writes in flight together finish sooner (what pipelining the hub's log writes would buy):
//   for 1, 2 and 4 writes kept in flight on one preallocated O_DSYNC file (4 KiB each, distinct offsets, the libuv
//   thread pool), writes/s and each write's p50 / p99. Not in the default set: `--only overlap`.
// wakeup: what waking up costs here, the part of a state's CPU that is neither crypto nor JavaScript: CPU per 1 ms
//   timer tick of an idle event loop, and per 1.2 KiB O_DSYNC write done synchronously against through fs/promises.
//
// Every loop is bounded in time (and the fsync loop also in count); the server and client are child processes of
// this one and are killed when it exits.
import { fork } from 'node:child_process';
import { closeSync, constants, fdatasyncSync, mkdtempSync, openSync, rmSync, write, writeSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { WebSocket, WebSocketServer } from 'ws';
import { percentile, round } from './lib/util.mjs';

const FRAME_BYTES = 138; // the hub bench's update frame (bench table: "update frame 138 B")

const role = process.env.TRICKLE_FLOOR_ROLE;
if (role === 'server') await server();
else if (role === 'client') await client();
else if (role === 'writer') await pacedPipeline();
else await main();

async function main() {
  const { values: args } = parseArgs({
    options: {
      json: { type: 'boolean', default: false },
      devices: { type: 'string', default: '1000' },
      window: { type: 'string', default: '2' },
      seconds: { type: 'string', default: '3' },
      pairs: { type: 'string', default: '2000' },
      writers: { type: 'string', default: '2' },
      'in-flight': { type: 'string', default: '8' },
      only: { type: 'string', default: 'socket,fsync,payment,wakeup' },
    },
  });
  const only = new Set(args.only.split(','));
  const out = {};
  if (only.has('socket'))
    out.socket = await socketFloor(Number(args.devices), Number(args.window), Number(args.seconds));
  if (only.has('fsync')) {
    out.fsync = fsyncFloor(Number(args.pairs), 10_000);
    out.fsync.underLoad = await pipelinesUnderLoad(Number(args.writers), 3000, Number(args['in-flight']));
  }
  if (only.has('payment')) out.payment = await paymentFloor(Number(args.pairs), 10_000);
  if (only.has('wakeup')) out.wakeup = await wakeupCost(1000);
  if (only.has('overlap')) out.overlap = await overlappingWrites([1, 2, 4], 2000);
  if (args.json) process.stdout.write(`${JSON.stringify(out)}\n`);
  else {
    if (out.socket) {
      const s = out.socket;
      process.stdout.write(
        `socket floor: ${s.roundTripsPerSec.toLocaleString('en-US')} round trips/s over ${s.devices} WebSockets (window ${s.window}); ` +
          `CPU per round trip ${s.cpuUsPerRoundTrip} µs (server ${s.cpuUs.server}, client ${s.cpuUs.client})\n`,
      );
    }
    if (out.fsync) {
      const f = out.fsync;
      process.stdout.write(
        `fsync floor: two durable 4 KiB writes in series, ${f.pairs} pairs: p50 ${f.p50Ms} ms, p99 ${f.p99Ms} ms, max ${f.maxMs} ms\n`,
      );
      const u = f.underLoad;
      process.stdout.write(
        `fsync floor under load: ${u.writers} processes, a payment tick each per ms, ${u.pairs} states: p50 ${u.p50Ms} ms, p99 ${u.p99Ms} ms, max ${u.maxMs} ms\n`,
      );
      const q = u.payments;
      process.stdout.write(
        `payments on bare disk: ${q.ticks} ticks: p50 ${q.p50Ms} ms, p99 ${q.p99Ms} ms, p99.9 ${q.p999Ms} ms, max ${q.maxMs} ms\n`,
      );
    }
    if (out.payment) {
      const q = out.payment;
      process.stdout.write(
        `payment floor: a loopback round trip then one durable 4 KiB write, ${q.samples} in series: p50 ${q.p50Ms} ms, p99 ${q.p99Ms} ms, max ${q.maxMs} ms\n`,
      );
    }
    if (out.overlap)
      for (const o of out.overlap.runs)
        process.stdout.write(
          `durable writes ${o.inFlight} in flight: ${o.writesPerSec.toLocaleString('en-US')}/s, p50 ${o.p50Ms} ms, p99 ${o.p99Ms} ms\n`,
        );
    if (out.wakeup) {
      const k = out.wakeup;
      process.stdout.write(
        `wakeups: a 1 ms timer tick ${k.timerTickCpuUs} µs of CPU; a 1.2 KiB O_DSYNC write ${k.dsyncWriteCpuUs.sync} µs of CPU done synchronously, ${k.dsyncWriteCpuUs.promises} µs through fs/promises\n`,
      );
    }
  }
}

/** Starts the echo server and the client processes, returns the measured floor. */
async function socketFloor(devices, window, seconds) {
  const self = fileURLToPath(import.meta.url);
  const spawn = (r, extra = {}) =>
    fork(self, [], {
      env: { ...process.env, TRICKLE_FLOOR_ROLE: r, ...extra },
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
  const kids = [];
  const killAll = () => kids.forEach((k) => k.exitCode === null && k.kill('SIGKILL'));
  process.once('exit', killAll);
  const next = (child) =>
    new Promise((resolve, reject) => {
      child.once('message', resolve);
      child.once('exit', (code) => reject(new Error(`floor ${child.spawnargs.join(' ')} exited ${code}`)));
    });
  try {
    const srv = spawn('server');
    kids.push(srv);
    const { port } = await next(srv);
    const cli = spawn('client');
    kids.push(cli);
    cli.send({ port, devices, window, warmupMs: 1000, measureMs: seconds * 1000 });
    const started = await next(cli); // { t: 'measuring' } after the warm-up
    if (started.t !== 'measuring') throw new Error(`client: ${JSON.stringify(started)}`);
    srv.send({ t: 'mark' });
    const s0 = await next(srv);
    const c = await next(cli); // { t: 'done', roundTrips, cpuUs, ms }
    srv.send({ t: 'mark' });
    const s1 = await next(srv);
    const serverCpuUs = s1.cpuUs - s0.cpuUs;
    return {
      devices,
      window,
      frameBytes: FRAME_BYTES,
      roundTripsPerSec: Math.round((c.roundTrips * 1000) / c.ms),
      cpuUsPerRoundTrip: round((serverCpuUs + c.cpuUs) / c.roundTrips),
      cpuUs: { server: round(serverCpuUs / c.roundTrips), client: round(c.cpuUs / c.roundTrips) },
      method: `ws echo server process + client process with ${devices} WebSocket connections on loopback, ${window} binary frames of ${FRAME_BYTES} B in flight per connection; round trips and CPU (user + system) of both processes over ${seconds} s after a 1 s warm-up`,
    };
  } finally {
    killAll();
  }
}

function cpuNowUs() {
  const u = process.cpuUsage();
  return u.user + u.system;
}

async function server() {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false, maxPayload: 64 * 1024 });
  wss.on('connection', (ws) => {
    ws.on('message', (data) => ws.send(data, { binary: true }));
  });
  await new Promise((resolve) => wss.once('listening', resolve));
  process.send({ port: wss.address().port });
  process.on('message', () => process.send({ cpuUs: cpuNowUs() }));
  process.on('disconnect', () => process.exit(0));
}

async function client() {
  const { port, devices, window, warmupMs, measureMs } = await new Promise((resolve) =>
    process.once('message', resolve),
  );
  const frame = Buffer.alloc(FRAME_BYTES, 7);
  const sockets = [];
  for (let i = 0; i < devices; i++) {
    const ws = new WebSocket(`ws://127.0.0.1:${port}`, { perMessageDeflate: false, maxPayload: 64 * 1024 });
    ws.binaryType = 'nodebuffer';
    sockets.push(
      new Promise((resolve, reject) => {
        ws.once('open', () => resolve(ws));
        ws.once('error', reject);
      }),
    );
  }
  const open = await Promise.all(sockets);
  let counting = false;
  let roundTrips = 0;
  let stop = false;
  for (const ws of open) {
    ws.on('message', () => {
      if (counting) roundTrips++;
      if (!stop) ws.send(frame, { binary: true });
    });
    for (let k = 0; k < window; k++) ws.send(frame, { binary: true });
  }
  await new Promise((r) => setTimeout(r, warmupMs));
  process.send({ t: 'measuring' });
  const cpu0 = cpuNowUs();
  const t0 = performance.now();
  counting = true;
  await new Promise((r) => setTimeout(r, measureMs));
  counting = false;
  const ms = performance.now() - t0;
  const cpuUs = cpuNowUs() - cpu0;
  stop = true;
  process.send({ t: 'done', roundTrips, cpuUs, ms });
  for (const ws of open) ws.terminate();
  process.on('disconnect', () => process.exit(0));
}

/**
 * The floor under stream.p99Ms once a payment waits for the hub's durable write only: a WebSocket round trip to an
 * echo server process on loopback, then one 4 KiB pwrite + fdatasync (the hub's group commit), in series, at most
 * `count` times and at most `maxMs` long.
 */
async function paymentFloor(count, maxMs) {
  const self = fileURLToPath(import.meta.url);
  const srv = fork(self, [], {
    env: { ...process.env, TRICKLE_FLOOR_ROLE: 'server' },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const dir = mkdtempSync(join(tmpdir(), 'trickle-floor-'));
  const fd = openSync(join(dir, 'log'), 'w+');
  try {
    const { port } = await new Promise((resolve, reject) => {
      srv.once('message', resolve);
      srv.once('exit', (code) => reject(new Error(`floor echo server exited ${code}`)));
    });
    writeSync(fd, Buffer.alloc(1 << 20), 0, 1 << 20, 0); // preallocated, as the hub's log is
    fdatasyncSync(fd);
    const ws = new WebSocket(`ws://127.0.0.1:${port}`, { perMessageDeflate: false, maxPayload: 64 * 1024 });
    await new Promise((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('error', reject);
    });
    const frame = Buffer.alloc(FRAME_BYTES, 7);
    const block = Buffer.alloc(4096, 1);
    const echo = () =>
      new Promise((resolve) => {
        ws.once('message', resolve);
        ws.send(frame, { binary: true });
      });
    for (let i = 0; i < 50; i++) await echo(); // warm-up
    const ms = [];
    const deadline = performance.now() + maxMs;
    for (let i = 0; i < count && performance.now() < deadline; i++) {
      const t = performance.now();
      await echo();
      writeSync(fd, block, 0, block.length, (i % 256) * 4096);
      fdatasyncSync(fd);
      ms.push(performance.now() - t);
    }
    ws.terminate();
    return {
      samples: ms.length,
      ...pairStats(ms),
      method: `${ms.length} times in series: a ${FRAME_BYTES}-byte WebSocket round trip to an echo server process on loopback, then 4 KiB pwrite + fdatasync on a preallocated file in ${tmpdir()}`,
    };
  } finally {
    closeSync(fd);
    rmSync(dir, { recursive: true, force: true });
    srv.kill('SIGKILL');
  }
}

/**
 * Durable 4 KiB writes kept `n` in flight at once on one preallocated O_DSYNC file, for each `n` of `inFlight`, `ms`
 * each: writes per second and each write's latency. If the disk overlapped them, writes/s would grow with `n` at the
 * same latency; if it serialises them, latency grows instead.
 */
async function overlappingWrites(inFlight, ms) {
  const dir = mkdtempSync(join(tmpdir(), 'trickle-floor-'));
  const size = 16 << 20;
  const block = Buffer.alloc(4096, 1);
  const fd = openSync(join(dir, 'log'), constants.O_RDWR | constants.O_CREAT | constants.O_DSYNC);
  const runs = [];
  try {
    for (let at = 0; at < size; at += 1 << 20) writeSync(fd, Buffer.alloc(1 << 20), 0, 1 << 20, at);
    for (const n of inFlight) {
      const lat = [];
      let next = 0;
      const end = performance.now() + ms;
      const one = () =>
        new Promise((resolve, reject) => {
          const at = next;
          next = (next + block.length) % size;
          const t = performance.now();
          write(fd, block, 0, block.length, at, (e) => (e ? reject(e) : (lat.push(performance.now() - t), resolve())));
        });
      const lane = async () => {
        while (performance.now() < end) await one();
      };
      const t0 = performance.now();
      await Promise.all(Array.from({ length: n }, lane));
      const p = pairStats(lat);
      runs.push({ inFlight: n, writesPerSec: round((lat.length * 1000) / (performance.now() - t0), 0), ...p });
    }
  } finally {
    closeSync(fd);
    rmSync(dir, { recursive: true, force: true });
  }
  return {
    runs,
    method: `4 KiB pwrite on one preallocated O_DSYNC file in ${tmpdir()}, ${inFlight.join(' / ')} kept in flight (fs.write, the libuv thread pool), ${ms / 1000} s each`,
  };
}

/** Pairs of durable 4 KiB writes (file A, then file B), at most `pairs` of them and at most `maxMs` long. */
function fsyncFloor(pairs, maxMs) {
  const dir = mkdtempSync(join(tmpdir(), 'trickle-floor-'));
  const block = Buffer.alloc(4096, 1);
  const fds = ['a', 'b'].map((n) => {
    const fd = openSync(join(dir, n), 'w+');
    writeSync(fd, Buffer.alloc(1 << 20), 0, 1 << 20, 0); // preallocated, as a log or the device's slot file is
    fdatasyncSync(fd);
    return fd;
  });
  const ms = [];
  const deadline = performance.now() + maxMs;
  try {
    for (let i = 0; i < pairs && performance.now() < deadline; i++) {
      const t = performance.now();
      for (const fd of fds) {
        writeSync(fd, block, 0, block.length, (i % 256) * 4096);
        fdatasyncSync(fd);
      }
      ms.push(performance.now() - t);
    }
  } finally {
    fds.forEach((fd) => closeSync(fd));
    rmSync(dir, { recursive: true, force: true });
  }
  return {
    pairs: ms.length,
    ...pairStats(ms),
    method: `${ms.length} pairs of (4 KiB pwrite + fdatasync on file A, then the same on file B), both files preallocated, in ${tmpdir()}, one process, nothing else of this benchmark running`,
  };
}

/** `writers` processes running the paced payment pipeline at once; their latencies merged. */
async function pipelinesUnderLoad(writers, ms, inFlight) {
  const self = fileURLToPath(import.meta.url);
  const runs = await Promise.all(
    Array.from({ length: writers }, () => {
      const child = fork(self, [String(ms), String(inFlight)], {
        env: { ...process.env, TRICKLE_FLOOR_ROLE: 'writer' },
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      });
      const killer = setTimeout(() => child.kill('SIGKILL'), ms + 20_000);
      return new Promise((resolve, reject) => {
        child.once('message', (m) => {
          clearTimeout(killer);
          resolve(m);
        });
        child.once('exit', (code) => code !== 0 && reject(new Error(`floor writer exited ${code}`)));
      });
    }),
  );
  const states = runs.flatMap((r) => r.states);
  const ticks = runs.flatMap((r) => r.ticks);
  const p = pairStats(ticks);
  return {
    writers,
    pairs: states.length,
    ...pairStats(states),
    payments: {
      ticks: ticks.length,
      p50Ms: p.p50Ms,
      p99Ms: p.p99Ms,
      p999Ms: round(
        percentile(
          [...ticks].sort((x, y) => x - y),
          99.9,
        ),
        3,
      ),
      maxMs: p.maxMs,
    },
    method:
      `${writers} processes at once (one per stream channel), each an open loop of one payment tick per ms for ${ms / 1000} s with no CPU work at all: ` +
      `a tick's payments go out as one state while fewer than ${inFlight} are in flight; the state is written by the "hub" (1.2 KiB pwrite on an O_DSYNC preallocated file; ` +
      `states arriving meanwhile share its next write, like the hub's group commit) and its payments resolve, while the "device" saves acked states behind on a second file (the same writes, coalesced; nothing waits for them); ` +
      `in ${tmpdir()}. State = its hub write queued to done; payment = a tick to its state's hub write end, every tick counted (a stalled write delays every tick behind it)`,
  };
}

/**
 * Child: the stream bench's latency run with everything but the disk taken out. Payments arrive once per ms; they go
 * out as one state when fewer than `inFlight` states are in flight (the client's coalescing); the "hub" writes each
 * state durably, one write at a time with everything that arrived meanwhile in the next one (its group commit), and
 * the payments resolve; the "device" saves acked states behind on its own file, which nothing waits for.
 * Sends the latency of every state (hub write queued to done) and of every tick to the parent.
 */
async function pacedPipeline() {
  const ms = Number(process.argv[2]);
  const inFlight = Number(process.argv[3]);
  const dir = mkdtempSync(join(tmpdir(), 'trickle-floor-'));
  const block = Buffer.alloc(1200, 1);
  const fds = ['hub', 'device'].map((n) => {
    const fd = openSync(join(dir, n), constants.O_RDWR | constants.O_CREAT | constants.O_DSYNC);
    writeSync(fd, Buffer.alloc(4 << 20), 0, 4 << 20, 0);
    return fd;
  });
  const put = (fd, at) =>
    new Promise((resolve, reject) => write(fd, block, 0, block.length, at, (e) => (e ? reject(e) : resolve())));
  /** One durable write at a time; what arrives while one runs goes in the next. */
  const serial = (fd, done) => {
    let busy = false;
    let waiting = [];
    let n = 0;
    const run = async () => {
      busy = true;
      while (waiting.length > 0) {
        const batch = waiting;
        waiting = [];
        await put(fd, (n++ % 3000) * block.length);
        done(batch);
      }
      busy = false;
    };
    return (x) => {
      waiting.push(x);
      if (!busy) void run();
    };
  };
  const states = [];
  const ticks = [];
  let queued = [];
  let sent = 0;
  // The device saves acked states behind (DESIGN.md: a payment waits for the hub's write only); its writes still
  // share the disk with the hub's, so they are made, coalesced, but nothing waits for them.
  const device = serial(fds[1], () => {});
  const hub = serial(fds[0], (batch) => {
    const now = performance.now();
    for (const s of batch) {
      sent--;
      states.push(now - s.at);
      for (const t of s.ticks) ticks.push(now - t);
    }
    device(batch.length);
    propose();
  });
  const propose = () => {
    if (queued.length === 0 || sent >= inFlight) return;
    sent++;
    hub({ at: performance.now(), ticks: queued });
    queued = [];
  };
  try {
    const end = performance.now() + ms;
    await new Promise((resolve) => {
      const tick = () => {
        if (performance.now() >= end) return resolve();
        queued.push(performance.now());
        propose();
        setTimeout(tick, 1);
      };
      tick();
    });
    const until = performance.now() + 5000;
    while ((sent > 0 || queued.length > 0) && performance.now() < until) await new Promise((r) => setTimeout(r, 5));
  } finally {
    fds.forEach((fd) => closeSync(fd));
    rmSync(dir, { recursive: true, force: true });
  }
  process.send({ states, ticks }, () => process.exit(0));
}

/**
 * What waking up costs on this machine: CPU (user + system, every thread of this process) per 1 ms timer tick of an
 * otherwise idle event loop, and per 1.2 KiB O_DSYNC write done synchronously against the same write through
 * fs/promises (the libuv thread pool: a thread woken for the write, the event loop woken for its answer).
 */
async function wakeupCost(n) {
  const cpuUs = () => {
    const c = process.cpuUsage();
    return c.user + c.system;
  };
  let c0 = cpuUs();
  await new Promise((resolve) => {
    let k = 0;
    const tick = () => (++k >= n ? resolve() : setTimeout(tick, 1));
    tick();
  });
  const timerTickCpuUs = round((cpuUs() - c0) / n, 1);
  const dir = mkdtempSync(join(tmpdir(), 'trickle-floor-'));
  const block = Buffer.alloc(1200, 1);
  const fd = openSync(join(dir, 'sync'), constants.O_RDWR | constants.O_CREAT | constants.O_DSYNC);
  const fh = await open(join(dir, 'promises'), constants.O_RDWR | constants.O_CREAT | constants.O_DSYNC);
  try {
    writeSync(fd, Buffer.alloc(1 << 20), 0, 1 << 20, 0);
    await fh.write(Buffer.alloc(1 << 20), 0, 1 << 20, 0);
    c0 = cpuUs();
    for (let i = 0; i < n; i++) writeSync(fd, block, 0, block.length, (i % 500) * block.length);
    const sync = round((cpuUs() - c0) / n, 1);
    c0 = cpuUs();
    for (let i = 0; i < n; i++) await fh.write(block, 0, block.length, (i % 500) * block.length);
    const promises = round((cpuUs() - c0) / n, 1);
    return {
      timerTickCpuUs,
      dsyncWriteCpuUs: { sync, promises },
      method: `${n} ticks of setTimeout(1) on an idle event loop; ${n} writes of 1.2 KiB at rotating offsets of a preallocated O_DSYNC file in ${tmpdir()}, each way; CPU of the whole process (user + system) per tick or write`,
    };
  } finally {
    closeSync(fd);
    await fh.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** p50, p99 and max of pair latencies (ms), to the microsecond. */
function pairStats(ms) {
  const sorted = [...ms].sort((x, y) => x - y);
  return {
    p50Ms: round(percentile(sorted, 50), 3),
    p99Ms: round(percentile(sorted, 99), 3),
    maxMs: round(sorted[sorted.length - 1], 3),
  };
}
