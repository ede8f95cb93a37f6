// Summarise a V8 .cpuprofile (from `node --cpu-prof`): self time by function and by area of the code.
import { readFileSync } from 'node:fs';

const AREAS = [
  ['native secp256k1 (libsecp256k1 calls)', (u, f) => u.includes('secp256k1') || /ecdsa(Sign|Recover|Verify)/.test(f)],
  ['keccak / hashing (@noble/hashes)', (u) => u.includes('@noble/hashes')],
  [
    'protocol: digest, hex, signatures',
    (u) =>
      u.includes('packages/protocol/dist/eip712') ||
      u.includes('packages/protocol/dist/hex') ||
      u.includes('packages/protocol/dist/signer') ||
      u.includes('packages/protocol/dist/native'),
  ],
  ['protocol: wire codec + msgpackr', (u) => u.includes('packages/protocol/dist/codec') || u.includes('msgpackr')],
  ['protocol: transition checks', (u) => u.includes('packages/protocol/dist/channel')],
  [
    'store: JSON records + lmdb',
    (u) => u.includes('lmdb') || u.includes('packages/protocol/dist/json') || u.includes('hub/dist/store'),
  ],
  ['hub: channels, committer, session, hub', (u) => u.includes('packages/hub/dist')],
  ['client library (pay, channel queues)', (u) => u.includes('packages/client/dist')],
  [
    'native I/O calls (socket and file writes, fsync, open, close, rename)',
    (u, f) =>
      !u &&
      [
        'writeBuffer',
        'writev',
        'writeUtf8String',
        'writeLatin1String',
        'openFileHandle',
        'fsync',
        'close',
        'rename',
        'open',
        'writeString',
      ].includes(f),
  ],
  ['worker-thread messaging', (u) => u.includes('worker_threads') || u.includes('internal/worker')],
  ['metrics (prom-client)', (u) => u.includes('prom-client')],
  [
    'WebSocket (ws) + net',
    (u) =>
      u.includes('/ws/') ||
      u.startsWith('node:net') ||
      u.startsWith('node:internal/stream') ||
      u.startsWith('node:stream'),
  ],
  ['garbage collector', (u, f) => f === '(garbage collector)'],
  ['idle', (u, f) => f === '(idle)' || f === '(program)'],
];

/**
 * @param path - a .cpuprofile file
 * @param top - how many functions to list
 * @param windows - only samples inside these [fromUs, toUs] spans of the monotonic clock (process.hrtime in µs,
 *   the clock V8's profiler stamps samples with on Linux); all samples when absent
 * @returns { totalMs, busyMs, areas: [{ area, ms, pctOfBusy }], functions: [{ fn, ms, pctOfBusy }] }
 */
/**
 * A profile node's function as `name file:line` (the last two path parts), the key every summary groups by.
 * @param cf - the node's `callFrame`
 */
export function functionKey(cf) {
  const url = cf.url.replace(/^file:\/\/.*?\/(node_modules|packages)\//, '$1/');
  return `${cf.functionName || '(anonymous)'}${url ? ` ${url.split('/').slice(-2).join('/')}:${cf.lineNumber + 1}` : ''}`;
}

export function summariseProfile(path, top = 15, windows) {
  const p = JSON.parse(readFileSync(path, 'utf8'));
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const self = new Map();
  let t = p.startTime;
  for (let i = 0; i < p.samples.length; i++) {
    const delta = p.timeDeltas[i] ?? 0;
    t += delta;
    if (windows && !windows.some(([from, to]) => t >= from && t < to)) continue;
    self.set(p.samples[i], (self.get(p.samples[i]) ?? 0) + delta / 1000);
  }
  const total = [...self.values()].reduce((a, b) => a + b, 0);
  const fns = new Map();
  const areas = new Map();
  let busy = 0;
  for (const [id, ms] of self) {
    const cf = byId.get(id).callFrame;
    const fn = cf.functionName || '(anonymous)';
    const key = functionKey(cf);
    fns.set(key, (fns.get(key) ?? 0) + ms);
    const area = AREAS.find(([, test]) => test(cf.url, fn))?.[0] ?? 'other JS / node internals';
    areas.set(area, (areas.get(area) ?? 0) + ms);
    if (area !== 'idle') busy += ms;
  }
  const pct = (ms) => Math.round((ms / busy) * 1000) / 10;
  return {
    totalMs: Math.round(total),
    busyMs: Math.round(busy),
    areas: [...areas]
      .filter(([a]) => a !== 'idle')
      .sort((a, b) => b[1] - a[1])
      .map(([area, ms]) => ({ area, ms: Math.round(ms), pctOfBusy: pct(ms) })),
    functions: [...fns]
      .filter(([k]) => !k.startsWith('(idle)') && !k.startsWith('(program)'))
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([fn, ms]) => ({ fn, ms: Math.round(ms), pctOfBusy: pct(ms) })),
  };
}
