// Streaming payments through the client library: peak throughput (closed loop, a few settings, best kept), then
// latency at about half of that peak (open loop at a fixed rate). Load from bench/stream-worker.mjs processes.
import { fileURLToPath } from 'node:url';
import { stringifyJson } from '@trickle/protocol/json';
import { zeroState } from '@trickle/protocol/channel';
import { forkWorker } from './ipc.mjs';
import { cpuSecondsOf, metric, round, scrapeMetrics, sleep } from './util.mjs';

const WORKER = fileURLToPath(new URL('../stream-worker.mjs', import.meta.url));
/** Hard cap on pay() calls per worker and setting (far above what the time allows here). */
const MAX_PAYMENTS = 50_000_000;

/** Percentile from a 10 µs histogram (last bucket: overflow, reported as `max`). */
function histPct(hist, total, p, max) {
  if (total === 0) return null;
  const rank = Math.max(1, Math.ceil((p / 100) * total));
  let seen = 0;
  for (let i = 0; i < hist.length; i++) {
    seen += hist[i];
    if (seen >= rank) return i === hist.length - 1 ? max : (i + 1) / 100; // upper edge of the bucket
  }
  return max;
}

/**
 * @param o.hub - hub process handle
 * @param o.devices - [{ key, params }] with ETH channels open on-chain, `deposit` each
 * @param o.processes - worker processes to spread the devices over
 * @param o.outstanding - closed-loop settings to try (pending pay() calls per channel); the best is the peak
 * @param o.execArgv - node flags for the workers (e.g. --cpu-prof)
 */
export async function runStream(o) {
  const workers = Array.from({ length: o.processes }, () => forkWorker(WORKER, o.execArgv ?? []));
  try {
    const shares = workers.map((_, k) => o.devices.filter((_, i) => i % o.processes === k));
    await Promise.all(
      workers.map((w, k) =>
        w.call(
          {
            t: 'init',
            url: o.hub.url,
            dir: o.dir,
            maxInFlight: o.maxInFlight,
            devices: shares[k].map((d) => ({
              key: d.key,
              record: stringifyJson({ params: d.params, channelId: d.channelId, funding: { device: o.deposit, hub: 0n }, latest: { state: zeroState(d.channelId) }, signedVersion: 0n }),
            })),
          },
          60_000,
        ),
      ),
    );
    const peaks = [];
    for (const outstanding of o.outstanding) {
      const runs = Promise.all(workers.map((w) => w.call({ t: 'peak', outstanding, warmupMs: o.warmupMs, measureMs: o.measureMs, maxPayments: MAX_PAYMENTS }, o.warmupMs + o.measureMs + 20_000)));
      await sleep(o.warmupMs);
      const hub0 = cpuSecondsOf(o.hub.child.pid);
      await sleep(o.measureMs);
      const hub1 = cpuSecondsOf(o.hub.child.pid);
      const rs = await runs;
      const span = o.measureMs / 1000;
      const payments = rs.reduce((a, r) => a + r.payments, 0);
      const states = rs.reduce((a, r) => a + r.states, 0);
      const p = {
        outstandingPerChannel: outstanding,
        paymentsPerSec: round(payments / (o.measureMs / 1000), 0),
        statesPerSec: round(states / span, 0),
        paymentsPerState: round(payments / (o.measureMs / 1000) / Math.max(1, states / span), 1),
        failed: rs.reduce((a, r) => a + r.failed, 0),
        firstError: rs.find((r) => r.firstError)?.firstError,
        clientCpuCores: round(rs.reduce((a, r) => a + r.cpuSeconds, 0) / span, 2),
        hubCpuCores: round((hub1 - hub0) / span, 2),
      };
      peaks.push(p);
      o.log(`  peak, ${outstanding} pending per channel: ${p.paymentsPerSec.toLocaleString('en-US')} payments/s in ${p.statesPerSec.toLocaleString('en-US')} states/s (client ${p.clientCpuCores} cores, hub ${p.hubCpuCores})`);
    }
    const best = peaks.reduce((a, b) => (b.paymentsPerSec > a.paymentsPerSec ? b : a));
    const target = Math.max(100, Math.round(best.paymentsPerSec * (o.latencyLoad ?? 0.5)));
    // What the hub did meanwhile (its own metrics, scraped just before and just after the run, so no scrape lands in
    // the measured window): where a payment's time goes on its side.
    const m0 = await scrapeMetrics(o.hub.metricsUrl);
    const at0 = performance.now();
    const rs = await Promise.all(workers.map((w) => w.call({ t: 'rate', perSec: target / workers.length, warmupMs: o.warmupMs, measureMs: o.measureMs, maxPayments: MAX_PAYMENTS }, o.warmupMs + o.measureMs + 20_000)));
    const m1 = await scrapeMetrics(o.hub.metricsUrl);
    const spanS = (performance.now() - at0) / 1000;
    const d = (name, labels) => metric(m1, name, labels) - metric(m0, name, labels);
    const commits = d('trickle_store_commit_seconds_count');
    const hubSide = {
      statesAcceptedPerSec: round(d('trickle_updates_total', 'outcome="accepted"') / spanS, 0),
      commitsPerSec: round(commits / spanS, 0),
      commitMsAvg: round((d('trickle_store_commit_seconds_sum') / Math.max(1, commits)) * 1000, 2),
    };
    const hist = new Array(rs[0].hist.length).fill(0);
    for (const r of rs) r.hist.forEach((c, i) => (hist[i] += c));
    const samples = rs.reduce((a, r) => a + r.samples, 0);
    const max = Math.max(...rs.map((r) => r.max));
    const latency = {
      load: o.latencyLoad ?? 0.5,
      targetPerSec: target,
      achievedPerSec: round(samples / (o.measureMs / 1000), 0),
      samples,
      p50Ms: histPct(hist, samples, 50, max),
      p90Ms: histPct(hist, samples, 90, max),
      p99Ms: histPct(hist, samples, 99, max),
      p999Ms: histPct(hist, samples, 99.9, max),
      maxMs: round(max, 2),
      failed: rs.reduce((a, r) => a + r.failed, 0),
      firstError: rs.find((r) => r.firstError)?.firstError,
      saturated: rs.some((r) => r.saturated),
      clientCpuCores: round(rs.reduce((a, r) => a + r.cpuSeconds, 0) / (o.measureMs / 1000), 2),
      hub: hubSide,
    };
    o.log(`  latency at ${target.toLocaleString('en-US')}/s: p50 ${latency.p50Ms} ms, p99 ${latency.p99Ms} ms (achieved ${latency.achievedPerSec.toLocaleString('en-US')}/s; client ${latency.clientCpuCores} cores; hub ${hubSide.statesAcceptedPerSec} states/s, ${hubSide.commitsPerSec} commits/s of ${hubSide.commitMsAvg} ms)`);
    return { peaks, best, latency };
  } finally {
    await Promise.all(workers.map((w) => w.stop()));
  }
}
