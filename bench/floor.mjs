// What this machine allows before any Trickle code runs: the two floors under the hub.ratio and stream.p99Ms targets.
//
//   node bench/floor.mjs [--json] [--devices 1000] [--window 2] [--seconds 3] [--pairs 2000]
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
// fsync under load: the same pairs as the stream bench's latency run makes them, nothing else running: `--writers`
//   processes (default 2, one per stream device channel), each writing a pair (1.2 KiB O_DSYNC pwrite to its "hub"
//   file, then to its "device" file, as the hub's log and the device's store do) once per millisecond for 3 s.
//
// Every loop is bounded in time (and the fsync loop also in count); the server and client are child processes of
// this one and are killed when it exits.
import { fork } from 'node:child_process';
import { closeSync, constants, fdatasyncSync, mkdtempSync, openSync, rmSync, write, writeSync } from 'node:fs';
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
else if (role === 'writer') await pacedPairs();
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
      only: { type: 'string', default: 'socket,fsync' },
    },
  });
  const only = new Set(args.only.split(','));
  const out = {};
  if (only.has('socket')) out.socket = await socketFloor(Number(args.devices), Number(args.window), Number(args.seconds));
  if (only.has('fsync')) {
    out.fsync = fsyncFloor(Number(args.pairs), 10_000);
    out.fsync.underLoad = await pairsUnderLoad(Number(args.writers), 3000);
  }
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
      process.stdout.write(`fsync floor: two durable 4 KiB writes in series, ${f.pairs} pairs: p50 ${f.p50Ms} ms, p99 ${f.p99Ms} ms, max ${f.maxMs} ms\n`);
      const u = f.underLoad;
      process.stdout.write(`fsync floor under load: ${u.writers} processes, a pair each per ms, ${u.pairs} pairs: p50 ${u.p50Ms} ms, p99 ${u.p99Ms} ms, max ${u.maxMs} ms\n`);
    }
  }
}

/** Starts the echo server and the client processes, returns the measured floor. */
async function socketFloor(devices, window, seconds) {
  const self = fileURLToPath(import.meta.url);
  const spawn = (r, extra = {}) => fork(self, [], { env: { ...process.env, TRICKLE_FLOOR_ROLE: r, ...extra }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const kids = [];
  const killAll = () => kids.forEach((k) => k.exitCode === null && k.kill('SIGKILL'));
  process.once('exit', killAll);
  const next = (child) => new Promise((resolve, reject) => {
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
  const { port, devices, window, warmupMs, measureMs } = await new Promise((resolve) => process.once('message', resolve));
  const frame = Buffer.alloc(FRAME_BYTES, 7);
  const sockets = [];
  for (let i = 0; i < devices; i++) {
    const ws = new WebSocket(`ws://127.0.0.1:${port}`, { perMessageDeflate: false, maxPayload: 64 * 1024 });
    ws.binaryType = 'nodebuffer';
    sockets.push(new Promise((resolve, reject) => {
      ws.once('open', () => resolve(ws));
      ws.once('error', reject);
    }));
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

/** `writers` processes writing paced pairs at once; their pair latencies merged. */
async function pairsUnderLoad(writers, ms) {
  const self = fileURLToPath(import.meta.url);
  const runs = await Promise.all(
    Array.from({ length: writers }, () => {
      const child = fork(self, [String(ms)], { env: { ...process.env, TRICKLE_FLOOR_ROLE: 'writer' }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
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
  const all = runs.flat();
  return {
    writers,
    pairs: all.length,
    ...pairStats(all),
    method: `${writers} processes at once, each writing a pair (1.2 KiB pwrite on an O_DSYNC preallocated file, then on a second one) once per ms for ${ms / 1000} s, in ${tmpdir()}; latency of each pair`,
  };
}

/** Child: one pair of durable writes per millisecond for `ms`; sends the pair latencies to the parent. */
async function pacedPairs() {
  const ms = Number(process.argv[2]);
  const dir = mkdtempSync(join(tmpdir(), 'trickle-floor-'));
  const block = Buffer.alloc(1200, 1);
  const fds = ['hub', 'device'].map((n) => {
    const fd = openSync(join(dir, n), constants.O_RDWR | constants.O_CREAT | constants.O_DSYNC);
    writeSync(fd, Buffer.alloc(4 << 20), 0, 4 << 20, 0);
    return fd;
  });
  const put = (fd, at) => new Promise((resolve, reject) => write(fd, block, 0, block.length, at, (e) => (e ? reject(e) : resolve())));
  const out = [];
  try {
    const end = performance.now() + ms;
    for (let i = 0; performance.now() < end; i++) {
      const t = performance.now();
      const at = (i % 3000) * block.length;
      await put(fds[0], at);
      await put(fds[1], at);
      const took = performance.now() - t;
      out.push(took);
      if (took < 1) await new Promise((r) => setTimeout(r, 1 - took));
    }
  } finally {
    fds.forEach((fd) => closeSync(fd));
    rmSync(dir, { recursive: true, force: true });
  }
  process.send(out, () => process.exit(0));
}

/** p50, p99 and max of pair latencies (ms), to the microsecond. */
function pairStats(ms) {
  const sorted = [...ms].sort((x, y) => x - y);
  return { p50Ms: round(percentile(sorted, 50), 3), p99Ms: round(percentile(sorted, 99), 3), maxMs: round(sorted[sorted.length - 1], 3) };
}
