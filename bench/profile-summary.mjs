#!/usr/bin/env node
// Summarise V8 .cpuprofile files (from `node --cpu-prof`, e.g. bench/results/profiles/stream-client-0.cpuprofile):
// per function, its self time (samples in the function itself) and its inclusive time (samples with the function
// anywhere on the stack, each sample counted once per function however deep the recursion), as shares of the busy
// time (everything but idle). Several files are summed, so two runs of the same thing read as one.
//   node bench/profile-summary.mjs [--top 30] [--by self|total] [--json] file.cpuprofile [...]
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { functionKey } from './lib/profile.mjs';

const { values: args, positionals: files } = parseArgs({
  allowPositionals: true,
  options: {
    top: { type: 'string', default: '30' },
    by: { type: 'string', default: 'both' },
    json: { type: 'boolean', default: false },
  },
});
if (files.length === 0) {
  process.stderr.write(
    'usage: node bench/profile-summary.mjs [--top N] [--by self|total] [--json] file.cpuprofile …\n',
  );
  process.exit(2);
}

const IDLE = new Set(['(idle)', '(program)']);
const self = new Map();
const total = new Map();
let busyMs = 0;
let allMs = 0;

for (const file of files) {
  const p = JSON.parse(readFileSync(file, 'utf8'));
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const keyOf = new Map();
  for (const n of p.nodes) {
    keyOf.set(n.id, functionKey(n.callFrame));
  }
  // Every node's stack of distinct function keys, built once per node.
  const stacks = new Map();
  const stackOf = (id) => {
    let s = stacks.get(id);
    if (s) return s;
    const up = parent.has(id) ? stackOf(parent.get(id)) : new Set();
    s = new Set(up);
    s.add(keyOf.get(id));
    stacks.set(id, s);
    return s;
  };
  for (let i = 0; i < p.samples.length; i++) {
    const ms = (p.timeDeltas[i] ?? 0) / 1000;
    allMs += ms;
    const id = p.samples[i];
    const fn = byId.get(id).callFrame.functionName;
    if (IDLE.has(fn)) continue;
    busyMs += ms;
    const k = keyOf.get(id);
    self.set(k, (self.get(k) ?? 0) + ms);
    for (const f of stackOf(id)) total.set(f, (total.get(f) ?? 0) + ms);
  }
}

const top = Number(args.top);
const rows = (m) =>
  [...m]
    .sort((a, b) => b[1] - a[1])
    .slice(0, top)
    .map(([fn, ms]) => ({ fn, ms: Math.round(ms), pct: Math.round((1000 * ms) / busyMs) / 10 }));
const result = {
  files,
  totalMs: Math.round(allMs),
  busyMs: Math.round(busyMs),
  self: args.by === 'total' ? undefined : rows(self),
  inclusive: args.by === 'self' ? undefined : rows(total),
};
if (args.json) process.stdout.write(`${JSON.stringify(result)}\n`);
else {
  process.stdout.write(`${files.join(', ')}: ${result.busyMs} ms busy of ${result.totalMs} ms\n`);
  for (const [name, list] of [
    ['self', result.self],
    ['inclusive', result.inclusive],
  ]) {
    if (!list) continue;
    process.stdout.write(`\nby ${name} time (% of busy)\n`);
    for (const r of list)
      process.stdout.write(`${String(r.pct).padStart(6)}%  ${String(r.ms).padStart(7)} ms  ${r.fn}\n`);
  }
}
