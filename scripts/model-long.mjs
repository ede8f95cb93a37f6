#!/usr/bin/env node
// The long run of the channel engine's model test (packages/protocol/src/engine.model.test.ts), in pieces.
//
//   node scripts/model-long.mjs [--total 1000000] [--chunk 10000] [--seed 1] [--jobs 1] [--log model-long.jsonl]
//
// Chunk i runs `--chunk` random sequences with fast-check seed `--seed + i`, each chunk in its own vitest process
// (TRICKLE_MODEL_RUNS, TRICKLE_MODEL_SEED). Seeds are fixed by their chunk number, so the pieces can be run on
// different days or machines and still add up to the same million sequences. Every finished chunk is appended to
// the log as one JSON line; a rerun with the same log skips the chunks already passed (resume after a stop). A
// failing chunk prints how to replay it (its seed, and fast-check's counterexample path in the test's output);
// the run goes on with the other chunks and exits 1. Ends with a summary line: chunks, sequences, failures, time.
import { spawn } from 'node:child_process';
import { appendFileSync, existsSync, readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    total: { type: 'string', default: '1000000' },
    chunk: { type: 'string', default: '10000' },
    seed: { type: 'string', default: '1' },
    jobs: { type: 'string', default: '1' },
    log: { type: 'string', default: 'model-long.jsonl' },
  },
});
const int = (name, min) => {
  const n = Number(values[name]);
  if (!Number.isSafeInteger(n) || n < min) {
    console.error(`--${name} must be an integer >= ${min}`);
    process.exit(2);
  }
  return n;
};
const total = int('total', 1);
const chunk = int('chunk', 1);
const baseSeed = int('seed', 0);
const jobs = int('jobs', 1);
const chunks = Math.ceil(total / chunk);

const passed = new Set();
if (existsSync(values.log)) {
  for (const line of readFileSync(values.log, 'utf8').split('\n')) {
    if (!line.trim()) continue;
    const r = JSON.parse(line);
    if (r.ok && r.runs === Math.min(chunk, total - r.chunk * chunk) && r.seed === baseSeed + r.chunk)
      passed.add(r.chunk);
  }
}

/** Run chunk i in its own vitest process; resolves with its result line. */
function runChunk(i) {
  const runs = Math.min(chunk, total - i * chunk);
  const seed = baseSeed + i;
  const began = Date.now();
  return new Promise((resolve) => {
    const child = spawn(
      'npx',
      ['vitest', 'run', 'packages/protocol/src/engine.model.test.ts', '-t', 'random sequences keep every invariant'],
      {
        env: { ...process.env, TRICKLE_MODEL_RUNS: String(runs), TRICKLE_MODEL_SEED: String(seed) },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let output = '';
    child.stdout.on('data', (d) => (output += d));
    child.stderr.on('data', (d) => (output += d));
    child.on('close', (code) => {
      const r = { chunk: i, seed, runs, ok: code === 0, seconds: Math.round((Date.now() - began) / 100) / 10 };
      appendFileSync(values.log, `${JSON.stringify(r)}\n`);
      if (!r.ok) {
        const path = /path: ?"([^"]+)"/.exec(output)?.[1];
        console.log(output.split('\n').slice(-80).join('\n'));
        console.log(
          `chunk ${i} FAILED — replay: TRICKLE_MODEL_RUNS=${runs} TRICKLE_MODEL_SEED=${seed}` +
            (path ? ` TRICKLE_MODEL_PATH=${path}` : '') +
            ' npx vitest run packages/protocol/src/engine.model.test.ts',
        );
      } else console.log(`chunk ${i + 1}/${chunks} seed ${seed}: ${runs} sequences ok in ${r.seconds} s`);
      resolve(r);
    });
  });
}

const todo = [];
for (let i = 0; i < chunks; i++) if (!passed.has(i)) todo.push(i);
console.log(
  `model-long: ${total} sequences in ${chunks} chunks of ${chunk} (seeds ${baseSeed}..${baseSeed + chunks - 1}), ` +
    `${passed.size} already passed in ${values.log}, ${todo.length} to run, ${jobs} at a time`,
);
const began = Date.now();
const results = [];
await Promise.all(
  Array.from({ length: Math.min(jobs, todo.length) }, async () => {
    for (let i = todo.shift(); i !== undefined; i = todo.shift()) results.push(await runChunk(i));
  }),
);
const failed = results.filter((r) => !r.ok);
const ran = results.reduce((n, r) => n + r.runs, 0);
console.log(
  `model-long summary: ${passed.size + results.length - failed.length}/${chunks} chunks passed, ` +
    `${ran} sequences run now (${total} in all), ${failed.length} failed` +
    (failed.length ? ` (seeds ${failed.map((r) => r.seed).join(', ')})` : '') +
    `, ${Math.round((Date.now() - began) / 1000)} s`,
);
process.exit(failed.length ? 1 : 0);
