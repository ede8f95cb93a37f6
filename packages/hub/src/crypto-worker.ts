// A crypto worker of the hub: libsecp256k1 (pure JS when not installed) with the hub key; answers batches.
import { parentPort, workerData } from 'node:worker_threads';
import { isTrickleError } from '@trickle/protocol/errors';
import { bestSigner, bestVerifier, useNativeKeccak } from '@trickle/protocol/native';
import type { Hex } from '@trickle/protocol/types';
import { ANSWER_BYTES, JOB_BYTES, type AnswerBatch, type JobBatch } from './crypto.js';

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
    const op = batch.jobs[at];
    const digest = batch.jobs.subarray(at + 1, at + 33);
    const out = k * ANSWER_BYTES;
    try {
      if (op === 2) {
        answers.set(signer.signDigest(digest), out + 1);
        continue;
      }
      const address = verifier.recoverAddress(digest, batch.jobs.subarray(at + 33, at + 98));
      if (op === 1) {
        answers[out] = 1;
        strings[k] = address;
      } else if (address !== batch.expected[k]) {
        answers[out] = 2;
        strings[k] = 'BAD_SIGNATURE not signed by the expected party';
      } else answers.set(signer.signDigest(digest), out + 1);
    } catch (e) {
      answers[out] = 2;
      strings[k] = `${isTrickleError(e) ? e.code : 'INTERNAL'} ${e instanceof Error ? e.message : String(e)}`;
    }
  }
  const reply: AnswerBatch = { answers, strings };
  parentPort!.postMessage(reply, [answers.buffer]);
});
