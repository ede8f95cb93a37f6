// Streaming payments through the client library: peak throughput (closed loop, a few settings, best kept); the
// highest rate sustained with per-payment latency measurement (open-loop probes below the peak); then latency at
// half of that, 5 runs. Load from bench/stream-worker.mjs processes.
import { fileURLToPath } from 'node:url';
import { stringifyJson } from '@trickle/protocol/json';
import { zeroState } from '@trickle/protocol/channel';
import { forkWorker } from './ipc.mjs';
import { cpuSecondsOf, metric, round, scrapeMetrics, sleep } from './util.mjs';

const WORKER = fileURLToPath(new URL('../stream-worker.mjs', import.meta.url));
/** Hard cap on pay() calls per worker and setting (far above what the time allows here). */
const MAX_PAYMENTS = 50_000_000;

/** Upper edge (ms) of log-histogram bucket `i` (bench/stream-worker.mjs: bucket i holds (1.01^i, 1.01^(i+1)] µs). */
const bucketMs = (i) => 1.01 ** (i + 1) / 1000;

/** Percentile from the merged log histogram: the upper edge of the bucket holding that rank (1% resolution). */
function histPct(hist, total, p, max) {
  if (total === 0) return null;
  const rank = Math.max(1, Math.ceil((p / 100) * total));
  let seen = 0;
  for (let i = 0; i < hist.length; i++) {
    seen += hist[i];
    if (seen >= rank) return round(Math.min(bucketMs(i), max), 3);
  }
  return round(max, 3);
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/**
 * @param o.hub - hub process handle
 * @param o.devices - [{ key, params }] with ETH channels open on-chain, `deposit` each
 * @param o.processes - worker processes to spread the devices over
 * @param o.outstanding - closed-loop settings to try (pending pay() calls per channel); the best is the peak
 * @param o.latencyLoad - share of the sustained rate the latency runs use (default ½)
 * @param o.latencyRuns - latency runs (default 5); p99Ms is their median
 * @param o.latencyMeasureMs - each latency run's measured window (default `o.measureMs`)
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
              record: stringifyJson({
                params: d.params,
                channelId: d.channelId,
                funding: { device: o.deposit, hub: 0n },
                latest: { state: zeroState(d.channelId) },
                signedVersion: 0n,
              }),
            })),
          },
          60_000,
        ),
      ),
    );
    const peaks = [];
    for (const outstanding of o.outstanding) {
      const runs = Promise.all(
        workers.map((w) =>
          w.call(
            { t: 'peak', outstanding, warmupMs: o.warmupMs, measureMs: o.measureMs, maxPayments: MAX_PAYMENTS },
            o.warmupMs + o.measureMs + 20_000,
          ),
        ),
      );
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
      o.log(
        `  peak, ${outstanding} pending per channel: ${p.paymentsPerSec.toLocaleString('en-US')} payments/s in ${p.statesPerSec.toLocaleString('en-US')} states/s (client ${p.clientCpuCores} cores, hub ${p.hubCpuCores})`,
      );
    }
    const best = peaks.reduce((a, b) => (b.paymentsPerSec > a.paymentsPerSec ? b : a));
    // An open-loop run at `perSec` in total, measured per payment, with the hub's own metrics around it.
    const rateRun = async (perSec, measureMs) => {
      const m0 = await scrapeMetrics(o.hub.metricsUrl);
      const at0 = performance.now();
      const rs = await Promise.all(
        workers.map((w) =>
          w.call(
            { t: 'rate', perSec: perSec / workers.length, warmupMs: o.warmupMs, measureMs, maxPayments: MAX_PAYMENTS },
            o.warmupMs + measureMs + 20_000,
          ),
        ),
      );
      const m1 = await scrapeMetrics(o.hub.metricsUrl);
      const spanS = (performance.now() - at0) / 1000;
      const d = (name, labels) => metric(m1, name, labels) - metric(m0, name, labels);
      const commits = d('trickle_store_commit_seconds_count');
      const hist = new Array(rs[0].hist.length).fill(0);
      for (const r of rs) r.hist.forEach((c, i) => (hist[i] += c));
      const samples = rs.reduce((a, r) => a + r.samples, 0);
      const max = Math.max(...rs.map((r) => r.max));
      const states = rs.reduce((a, r) => a + r.states, 0);
      const cpuSeconds = rs.reduce((a, r) => a + r.cpuSeconds, 0);
      const achievedPerSec = round(samples / (measureMs / 1000), 0);
      const saturated = rs.some((r) => r.saturated);
      return {
        targetPerSec: Math.round(perSec),
        achievedPerSec,
        // Kept up: nothing skipped for want of room, ≥ 95% of the rate resolved in the window, nothing failed.
        sustained: !saturated && achievedPerSec >= 0.95 * perSec && rs.every((r) => r.failed === 0),
        saturated,
        samples,
        p50Ms: histPct(hist, samples, 50, max),
        p90Ms: histPct(hist, samples, 90, max),
        p99Ms: histPct(hist, samples, 99, max),
        p999Ms: histPct(hist, samples, 99.9, max),
        maxMs: round(max, 2),
        failed: rs.reduce((a, r) => a + r.failed, 0),
        firstError: rs.find((r) => r.firstError)?.firstError,
        statesPerSec: round(states / (measureMs / 1000), 0),
        clientCpuCores: round(cpuSeconds / (measureMs / 1000), 2),
        deviceCpuMsPerState: states > 0 ? round((cpuSeconds * 1000) / states, 3) : null,
        hub: {
          statesAcceptedPerSec: round(d('trickle_updates_total', 'outcome="accepted"') / spanS, 0),
          commitsPerSec: round(commits / spanS, 0),
          commitMsAvg: round((d('trickle_store_commit_seconds_sum') / Math.max(1, commits)) * 1000, 2),
        },
      };
    };
    // The highest load sustained WITH per-payment latency measurement: open-loop probes from 80% of the closed-loop
    // peak down, 1 s each, the first that keeps up wins. Latency is then measured at `latencyLoad` (½) of it.
    const probes = [];
    let sustainedPerSec;
    for (const f of [0.8, 0.6, 0.45, 0.3, 0.2, 0.1, 0.05]) {
      const perSec = Math.max(100, best.paymentsPerSec * f);
      const p = await rateRun(perSec, 1000);
      probes.push({
        targetPerSec: p.targetPerSec,
        achievedPerSec: p.achievedPerSec,
        sustained: p.sustained,
        p99Ms: p.p99Ms,
        clientCpuCores: p.clientCpuCores,
      });
      o.log(
        `  sustain probe ${p.targetPerSec.toLocaleString('en-US')}/s: achieved ${p.achievedPerSec.toLocaleString('en-US')}/s${p.sustained ? ', kept up' : ', not kept up'} (client ${p.clientCpuCores} cores)`,
      );
      if (p.sustained) {
        sustainedPerSec = p.targetPerSec;
        break;
      }
    }
    sustainedPerSec ??= 100;
    const target = Math.max(100, Math.round(sustainedPerSec * (o.latencyLoad ?? 0.5)));
    const runs = [];
    for (let k = 0; k < (o.latencyRuns ?? 5); k++) {
      const r = await rateRun(target, o.latencyMeasureMs ?? o.measureMs);
      runs.push(r);
      o.log(
        `  latency run ${k + 1} at ${target.toLocaleString('en-US')}/s: p50 ${r.p50Ms} ms, p99 ${r.p99Ms} ms, max ${r.maxMs} ms (achieved ${r.achievedPerSec.toLocaleString('en-US')}/s; ${r.statesPerSec} states/s; client ${r.clientCpuCores} cores, ${r.deviceCpuMsPerState} ms CPU per state; hub ${r.hub.commitsPerSec} commits/s of ${r.hub.commitMsAvg} ms)`,
      );
    }
    const p99s = runs.map((r) => r.p99Ms);
    const mid = runs.find((r) => r.p99Ms === median(p99s));
    const latency = {
      load: o.latencyLoad ?? 0.5,
      sustainedPerSec,
      probes,
      targetPerSec: target,
      p99Ms: median(p99s),
      p99RunsMs: p99s,
      p99MinMs: Math.min(...p99s),
      p99MaxMs: Math.max(...p99s),
      p50Ms: mid.p50Ms,
      deviceCpuMsPerState: median(runs.map((r) => r.deviceCpuMsPerState ?? Infinity)),
      saturated: runs.some((r) => r.saturated),
      runs,
    };
    return { peaks, best, latency };
  } finally {
    await Promise.all(workers.map((w) => w.stop()));
  }
}
