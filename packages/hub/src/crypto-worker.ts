// A crypto worker of the hub: libsecp256k1 (pure JS when not installed) with the hub key; answers batches.
import { parentPort, workerData } from 'node:worker_threads';
import { bestSigner, bestVerifier, useNativeKeccak } from '@trickle/protocol/native';
import type { Hex } from '@trickle/protocol/types';
import { ANSWER_BYTES, JOB_BYTES, runJob, type AnswerBatch, type CryptoJob, type JobBatch } from './crypto.js';

useNativeKeccak();
const key = (workerData as { privateKey: Hex }).privateKey;
const signer = bestSigner(key);
const verifier = bestVerifier();

parentPort!.on('message', (batch: JobBatch) => {
  const n = batch.expected.length;
  const answers = new Uint8Array(n * ANSWER_BYTES);
  const strings: string[] = new Array(n).fill('');
  for (let k = 0; k < n; k++) {
    const at = k * JOB_BYTES;
    const op = batch.jobs[at] as CryptoJob['op'];
    const r = runJob(signer, verifier, { op, digest: batch.jobs.subarray(at + 1, at + 33), sig: op === 2 ? undefined : batch.jobs.subarray(at + 33, at + 98), expected: batch.expected[k] });
    const out = k * ANSWER_BYTES;
    if (!r.ok) {
      answers[out] = 2;
      strings[k] = `${r.code} ${r.message}`;
    } else if (r.sig) answers.set(r.sig, out + 1);
    else {
      answers[out] = 1;
      strings[k] = r.address ?? '';
    }
  }
  const reply: AnswerBatch = { answers, strings };
  parentPort!.postMessage(reply, [answers.buffer]);
});
