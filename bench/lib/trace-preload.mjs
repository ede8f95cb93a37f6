// Stage tracer for the stream latency investigation (bench/stream-trace.mjs), loaded with `node --import` into the
// hub and the stream client processes when TRICKLE_TRACE_DIR is set; without it, it does nothing. Records, with
// absolute times (performance.timeOrigin + now, ms, comparable across processes on one machine):
//   - every WebSocket frame sent and received (`ws`): its type, channel and state version where it has them
//   - every durable write: fs.write (the hub's write-ahead log) and FileHandle.write (the device's channel file),
//     start and end
//   - GC pauses (PerformanceObserver 'gc') and event-loop stalls (a 5 ms timer late by more than 2 ms)
// and writes them to $TRICKLE_TRACE_DIR/<role>-<pid>.json when the process exits. Diagnostic only: the patching
// costs a few µs per frame, so the figures it is used with are the bench's own, not these.
import fs from 'node:fs';
import { open } from 'node:fs/promises';
import { syncBuiltinESMExports } from 'node:module';
import { join } from 'node:path';
import { PerformanceObserver } from 'node:perf_hooks';

const dir = process.env.TRICKLE_TRACE_DIR;
if (dir) await install(dir);

async function install(dir) {
  const { WebSocket } = await import('ws');
  const { decodeFrame } = await import('@trickle/protocol/codec');
  const t0 = performance.timeOrigin;
  const now = () => t0 + performance.now();
  const frames = []; // [at, dir (0 in, 1 out), type, version, channel id (first bytes)]
  const writes = []; // [start, end, bytes, kind]
  const gcs = []; // [start, durationMs, kind]
  const stalls = []; // [at, lateMs, cpuMs of the process over the interval, intervalMs]
  const describe = (data) => {
    try {
      const bytes = Array.isArray(data) ? Buffer.concat(data) : data;
      const m = decodeFrame(bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes));
      const v = m.state?.version ?? m.version ?? m.latest?.state?.version;
      const c = m.state?.channelId ?? m.channelId ?? m.latest?.state?.channelId;
      return [m.t, v === undefined ? -1 : Number(v), typeof c === 'string' ? c.slice(0, 10) : ''];
    } catch {
      return ['?', -1, ''];
    }
  };
  const send = WebSocket.prototype.send;
  WebSocket.prototype.send = function (data, ...rest) {
    const [t, v, c] = describe(data);
    frames.push([now(), 1, t, v, c]);
    return send.call(this, data, ...rest);
  };
  const emit = WebSocket.prototype.emit;
  WebSocket.prototype.emit = function (event, ...rest) {
    if (event === 'message') {
      const [t, v, c] = describe(rest[0]);
      frames.push([now(), 0, t, v, c]);
    }
    return emit.call(this, event, ...rest);
  };
  const write = fs.write;
  fs.write = function (fd, buffer, ...rest) {
    const cb = rest[rest.length - 1];
    if (typeof cb !== 'function') return write.call(this, fd, buffer, ...rest);
    const start = now();
    rest[rest.length - 1] = (...r) => {
      writes.push([start, now(), r[1] ?? 0, 'fs.write']);
      cb(...r);
    };
    return write.call(this, fd, buffer, ...rest);
  };
  syncBuiltinESMExports();
  const probe = join(dir, `.probe-${process.pid}`);
  const fh = await open(probe, 'w');
  const proto = Object.getPrototypeOf(fh);
  await fh.close();
  fs.rmSync(probe, { force: true });
  const fhWrite = proto.write;
  proto.write = async function (...args) {
    const start = now();
    try {
      return await fhWrite.apply(this, args);
    } finally {
      writes.push([start, now(), args[0]?.length ?? 0, 'fh.write']);
    }
  };
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) gcs.push([t0 + e.startTime, e.duration, e.detail?.kind ?? e.kind]);
  }).observe({ entryTypes: ['gc'] });
  let expected = performance.now() + 5;
  let cpu = process.cpuUsage();
  const lag = () => {
    const n = performance.now();
    const used = process.cpuUsage(cpu); // the process's CPU (all threads) since the timer was set
    cpu = process.cpuUsage();
    // A stall with CPU close to its length is work on the event loop (or another thread of it); one with little is
    // the process waiting (for a core, a page, a lock).
    if (n - expected > 2)
      stalls.push([t0 + expected, n - expected, (used.user + used.system) / 1000, n - expected + 5]);
    expected = n + 5;
    setTimeout(lag, 5).unref();
  };
  setTimeout(lag, 5).unref();
  const role = process.env.TRICKLE_TRACE_ROLE ?? (process.argv.some((a) => a.includes('hub')) ? 'hub' : 'proc');
  process.on('exit', () => {
    const extra = globalThis.__trickleTrace ?? {};
    fs.writeFileSync(
      join(dir, `${role}-${process.pid}.json`),
      JSON.stringify({ role, pid: process.pid, frames, writes, gcs, stalls, ...extra }),
    );
  });
}
