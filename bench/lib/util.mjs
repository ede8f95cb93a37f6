// Small helpers shared by the bench scripts: child processes that print JSON, CPU time, percentiles, Prometheus scraping.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * A bench device's announcement of its channel (`open`; the hub checks it on-chain), asked again while the hub answers
 * that it has not seen the channel yet, or that its share of chain reads for all devices is used up while a thousand
 * announce at once (it refills as reads complete), as the client library does; at most 40 tries, 250 ms apart.
 * @param request - sends one `open` frame and resolves with the hub's reply (rejects with `CODE: message` on an error)
 * @returns the hub's latest state of the channel, if it has one
 */
export async function announce(request) {
  for (let attempt = 0; ; attempt++) {
    try {
      return (await request()).latest?.state;
    } catch (e) {
      const again = ['CHANNEL_NOT_OPEN', 'RATE_LIMITED'].some((code) => String(e.message).startsWith(code));
      if (attempt >= 40 || !again) throw e;
      await sleep(250);
    }
  }
}

/**
 * Run `node <args>` to completion and parse what it printed on stdout: one JSON document, or its last JSON line.
 * @param {string[]} args - node arguments (flags, script, script arguments)
 * @param {{ timeoutMs: number, cwd?: string }} o - the child is killed (SIGKILL) past `timeoutMs`
 */
export function runJsonChild(args, o) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { cwd: o.cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (s) => (out += s));
    child.stderr.setEncoding('utf8').on('data', (s) => (err = (err + s).slice(-8192)));
    const timer = setTimeout(() => child.kill('SIGKILL'), o.timeoutMs);
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      if (code !== 0) {
        reject(new Error(`node ${args.join(' ')} exited with ${code ?? signal}: ${err.trim().slice(-2000)}`));
        return;
      }
      // The whole output as one JSON document (pretty-printed), else its last JSON line.
      const text = out.trim();
      const line = text
        .split('\n')
        .reverse()
        .find((l) => l.trim().startsWith('{'));
      for (const candidate of [text, line]) {
        try {
          if (candidate) return resolve(JSON.parse(candidate));
        } catch {
          /* next */
        }
      }
      reject(new Error(`node ${args.join(' ')} printed no JSON`));
    });
  });
}

/** CPU seconds (user + system) a process has used so far, from /proc (Linux); undefined elsewhere. */
export function cpuSecondsOf(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // fields[11] = utime, fields[12] = stime (clock ticks; 100 Hz on Linux)
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return undefined;
  }
}

/** Total CPU seconds of the machine (all cores, busy + idle) and busy seconds, from /proc/stat. */
export function machineCpu() {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
    const idle = line[3] + (line[4] ?? 0);
    const total = line.reduce((a, b) => a + b, 0);
    return { total: total / 100, busy: (total - idle) / 100 };
  } catch {
    return undefined;
  }
}

/** Round to `digits` significant-ish decimals for reporting. */
/** Nearest-rank percentile `p` (0–100) of ascending `sorted`; null when it is empty. */
export function percentile(sorted, p) {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

export function round(x, digits = 1) {
  if (typeof x !== 'number' || !Number.isFinite(x)) return x;
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

/** Scrape selected series from a Prometheus text endpoint: { 'name{labels}': value }. */
export async function scrapeMetrics(url) {
  const res = await fetch(url);
  const text = await res.text();
  const out = {};
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const sp = line.lastIndexOf(' ');
    out[line.slice(0, sp)] = Number(line.slice(sp + 1));
  }
  return out;
}

/** Sum of every series of a metric whose name and labels match. */
export function metric(m, name, labelMatch = '') {
  let s = 0;
  for (const [k, v] of Object.entries(m)) {
    const base = k.includes('{') ? k.slice(0, k.indexOf('{')) : k;
    if (base === name && k.includes(labelMatch)) s += v;
  }
  return s;
}
