// A crypto worker of the hub: libsecp256k1 (pure JS when not installed) with the hub key; answers batches.
import { parentPort, workerData } from 'node:worker_threads';
import { bestKeccak256, bestSigner, bestVerifier } from '@trickle/protocol/native';
import type { Hex } from '@trickle/protocol/types';
import {
  JOB_BYTES,
  remakeDigest,
  runJob,
  stateJobDigest,
  type AnswerBatch,
  type CryptoJob,
  type JobBatch,
} from './crypto.js';

const key = (workerData as { privateKey: Hex }).privateKey;
const signer = bestSigner(key);
const verifier = bestVerifier();
const separators = new Map<string, Uint8Array>();
const keccak = bestKeccak256();

parentPort!.on('message', (batch: JobBatch | null) => {
  // The pool's close(): every batch before this one is answered; the worker exits once its port is closed.
  if (batch === null) {
    parentPort!.close();
    return;
  }
  const n = batch.expected.length;
  const sigs = new Uint8Array(n * 65);
  const others: AnswerBatch['others'] = new Array(n).fill(null);
  let digests: Uint8Array | undefined;
  for (let k = 0; k < n; k++) {
    const at = k * JOB_BYTES;
    const op = batch.jobs[at] as CryptoJob['op'];
    if (op === 3) {
      // A state job: its digest is made here from the state's words, then verified and signed like op 0.
      const digest = stateJobDigest(batch.jobs, at, separators, keccak);
      if (!digest) {
        others[k] = { ok: false, code: 'INVALID_ARGUMENT', message: 'a state job without its domain' };
        continue;
      }
      (digests ??= new Uint8Array(n * 32)).set(digest, k * 32);
      const r = runJob(signer, verifier, {
        op: 0,
        digest,
        sig: batch.jobs.subarray(at + 33, at + 98),
        expected: batch.expected[k],
      });
      if (r.ok && r.sig) sigs.set(r.sig, k * 65);
      else others[k] = r;
      continue;
    }
    // A job that signs carries what its digest is made of; the digest made again here is one the signer signs.
    const digest =
      (op === 1 ? undefined : remakeDigest(batch.jobs, at, separators, keccak)) ?? batch.jobs.subarray(at + 1, at + 33);
    const r = runJob(signer, verifier, {
      op,
      digest,
      sig: op === 2 ? undefined : batch.jobs.subarray(at + 33, at + 98),
      expected: batch.expected[k],
    });
    if (r.ok && r.sig) sigs.set(r.sig, k * 65);
    else others[k] = r;
  }
  const reply: AnswerBatch = { sigs, others, digests };
  const transfer = [sigs.buffer as ArrayBuffer];
  if (digests) transfer.push(digests.buffer as ArrayBuffer);
  parentPort!.postMessage(reply, transfer);
});
