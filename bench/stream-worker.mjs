// Streaming payments through the real client library (TrickleClient, ClientChannel.pay with coalescing, the file
// channel store, native signer/verifier) against a real hub. Controlled by its parent over IPC:
//   { t: 'init', url, dir, devices: [{ key, record }] }  → connect, attach the channels (already open on-chain)
//   { t: 'peak', outstanding, warmupMs, measureMs, maxPayments }
//                                                        → closed loop: keep `outstanding` pay() calls pending per
//                                                          channel; count resolved payments in the window
//   { t: 'rate', perSec, warmupMs, measureMs, maxPayments }
//                                                        → open loop at a fixed rate (1 ms ticks, round robin over
//                                                          channels); latency of every pay() from call to resolve
//                                                          (log histogram, 1% buckets), states acked and CPU over
//                                                          the measured window
// Both stop issuing at the end of the window or after `maxPayments` pay() calls, whichever comes first.
//   { t: 'exit' }
import { join } from 'node:path';
import { TrickleClient, fileChannelStore } from '@trickle/client';
import { nativeSigner, nativeVerifier } from '@trickle/protocol/native';
import { parseJson } from '@trickle/protocol/json';

const verifier = nativeVerifier();
/** With bench/lib/trace-preload.mjs loaded (TRICKLE_TRACE_DIR): the measured ticks, written with its trace at exit. */
const ticks = process.env.TRICKLE_TRACE_DIR ? (globalThis.__trickleTrace = { ticks: [] }).ticks : undefined;
let clients = [];
let channels = [];

async function init(msg) {
  const made = await Promise.all(
    msg.devices.map(async (d, i) => {
      const client = await TrickleClient.connect({
        url: msg.url,
        signer: nativeSigner(d.key),
        verifier,
        store: fileChannelStore(join(msg.dir, `device-${process.pid}-${i}`)),
        maxInFlight: msg.maxInFlight,
      });
      const channel = await client.attachChannel(parseJson(d.record));
      return { client, channel };
    }),
  );
  clients = made.map((m) => m.client);
  channels = made.map((m) => m.channel);
  return { t: 'ready', channels: channels.length };
}

const versions = () => channels.reduce((n, c) => n + Number(c.latest.state.version), 0);

/** Closed loop: every channel keeps `outstanding` payments pending; resolved ones are replaced in batches. */
async function peak(msg) {
  const t0 = performance.now();
  const from = t0 + msg.warmupMs;
  const to = from + msg.measureMs;
  let counted = 0;
  let failed = 0;
  let firstError;
  let stopped = false;
  let issued = 0;
  const loops = channels.map(
    (ch) =>
      new Promise((resolveLoop) => {
        let pending = 0;
        let scheduled = false;
        const settled = (payments) => {
          pending -= payments;
          if (!scheduled) {
            scheduled = true;
            setImmediate(refill);
          }
        };
        // As in rate(): a promise shared by several pay() calls is watched once and counts once per payment.
        const watch = (p, payments) =>
          p.then(
            () => {
              const now = performance.now();
              if (now >= from && now < to) counted += payments;
              settled(payments);
            },
            (e) => {
              failed += payments;
              firstError ??= `${e.code ?? ''} ${e.message}`;
              settled(payments);
            },
          );
        const refill = () => {
          scheduled = false;
          if (stopped || performance.now() >= to || issued >= msg.maxPayments) {
            if (pending === 0) resolveLoop();
            else if (!scheduled) setTimeout(refill, 5);
            return;
          }
          let last;
          let same = 0;
          while (pending < msg.outstanding && issued < msg.maxPayments) {
            pending++;
            issued++;
            const p = ch.pay(1n);
            if (p !== last) {
              if (last !== undefined) watch(last, same);
              last = p;
              same = 0;
            }
            same++;
          }
          if (last !== undefined) watch(last, same);
        };
        refill();
      }),
  );
  await new Promise((r) => setTimeout(r, msg.warmupMs));
  const cpu0 = process.cpuUsage();
  const v0 = versions();
  await new Promise((r) => setTimeout(r, msg.measureMs));
  const cpu = process.cpuUsage(cpu0);
  const v1 = versions();
  stopped = true;
  await Promise.race([Promise.all(loops), new Promise((r) => setTimeout(r, 10_000))]);
  return {
    t: 'result',
    payments: counted,
    failed,
    firstError,
    states: v1 - v0,
    cpuSeconds: (cpu.user + cpu.system) / 1e6,
  };
}

/** Open loop at `perSec` payments per second in total; latency of each from the pay() call to its resolve. */
async function rate(msg) {
  const t0 = performance.now();
  const from = t0 + msg.warmupMs;
  const to = from + msg.measureMs;
  // Latency of every payment in a log histogram (buckets 1% wide from 1 µs to 100 s: mergeable across workers, no
  // overflow bucket that would turn every slow payment into the maximum), and the maximum.
  const hist = new Uint32Array(HIST_BUCKETS);
  let n = 0;
  let max = 0;
  let issued = 0;
  let resolved = 0;
  let failed = 0;
  let firstError;
  let pending = 0;
  let saturated = false;
  const maxPending = Math.max(1000, msg.perSec); // one second of backlog at most: beyond that the rate is not kept
  let rr = 0;
  // One start time and one pair of callbacks per tick (not per payment): every pay() of a tick is issued within
  // microseconds of it, and the generator must stay cheaper than what it measures. Calls that return the very same
  // promise (the client gives plain payments of one amount in one turn one promise) are watched once, and that
  // promise's settling is recorded once per payment it answers: still one sample per payment, without a promise
  // of the generator's own per payment for the garbage collector to copy while they are pending.
  const issue = (count) => {
    const start = performance.now();
    const inWindow = start >= from && start < to;
    // bench/stream-trace.mjs: each measured tick's call time and its last payment's resolve time, absolute ms.
    const traced = ticks !== undefined && inWindow ? [performance.timeOrigin + start, 0, count] : undefined;
    if (traced) ticks.push(traced);
    const ok = (payments) => {
      pending -= payments;
      resolved += payments;
      if (traced) traced[1] = performance.timeOrigin + performance.now();
      if (inWindow) {
        const ms = performance.now() - start;
        hist[histBucket(ms)] += payments;
        n += payments;
        if (ms > max) max = ms;
      }
    };
    const bad = (payments, e) => {
      pending -= payments;
      failed += payments;
      firstError ??= `${e.code ?? ''} ${e.message}`;
    };
    const watch = (p, payments) =>
      p.then(
        () => ok(payments),
        (e) => bad(payments, e),
      );
    pending += count;
    let last;
    let same = 0;
    for (let k = 0; k < count; k++) {
      const p = channels[rr++ % channels.length].pay(1n);
      if (p !== last) {
        if (last !== undefined) watch(last, same);
        last = p;
        same = 0;
      }
      same++;
    }
    if (last !== undefined) watch(last, same);
  };
  let cpu0 = process.cpuUsage();
  let v0 = versions();
  setTimeout(() => {
    cpu0 = process.cpuUsage();
    v0 = versions();
  }, msg.warmupMs);
  await new Promise((resolveLoop) => {
    const tick = () => {
      const now = performance.now();
      if (now >= to || issued >= msg.maxPayments) return resolveLoop();
      const due = Math.floor(((now - t0) / 1000) * msg.perSec) - issued;
      const room = Math.max(0, Math.min(due, maxPending - pending));
      if (room < due) saturated = true; // skipped: the generator does not queue without bound
      issued += due;
      if (room > 0) issue(room);
      setTimeout(tick, 1);
    };
    tick();
  });
  const cpu = process.cpuUsage(cpu0);
  const states = versions() - v0;
  const drainUntil = performance.now() + 10_000;
  while (pending > 0 && performance.now() < drainUntil) await new Promise((r) => setTimeout(r, 10));
  return {
    t: 'result',
    samples: n,
    hist: Array.from(hist),
    max,
    failed,
    firstError,
    saturated,
    unresolved: pending,
    issued,
    states,
    cpuSeconds: (cpu.user + cpu.system) / 1e6,
  };
}

/** Log histogram of latencies: bucket i holds (1.01^i, 1.01^(i+1)] µs; the last one everything above 100 s. */
const HIST_BASE = Math.log(1.01);
const HIST_BUCKETS = Math.ceil(Math.log(1e8) / HIST_BASE) + 1;
const histBucket = (ms) => (ms <= 0.001 ? 0 : Math.min(HIST_BUCKETS - 1, Math.floor(Math.log(ms * 1000) / HIST_BASE)));

process.on('message', (msg) => {
  const reply = (p) =>
    p.then(
      (r) => process.send(r),
      (e) => process.send({ t: 'error', message: e?.stack ?? String(e) }),
    );
  if (msg.t === 'init') reply(init(msg));
  else if (msg.t === 'peak') reply(peak(msg));
  else if (msg.t === 'rate') reply(rate(msg));
  else if (msg.t === 'exit') {
    void Promise.all(clients.map((c) => c.disconnect())).finally(() => process.exit(0));
  }
});
process.on('disconnect', () => process.exit(0));
