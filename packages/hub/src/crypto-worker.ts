// A crypto worker of the hub: libsecp256k1 (pure JS when not installed) with the hub key; answers batches.
import { parentPort, workerData } from 'node:worker_threads';
import { isTrickleError } from '@trickle/protocol/errors';
import { bestSigner, bestVerifier } from '@trickle/protocol/native';
import type { Hex } from '@trickle/protocol/types';
import type { CryptoJob, CryptoResult } from './crypto.js';

const key = (workerData as { privateKey: Hex }).privateKey;
const signer = bestSigner(key);
const verifier = bestVerifier();

function handle(job: CryptoJob): CryptoResult {
  try {
    if (job.op === 2) return { ok: true, sig: signer.signDigest(job.digest) };
    const address = verifier.recoverAddress(job.digest, job.sig!);
    if (job.op === 1) return { ok: true, address };
    if (address !== job.expected) return { ok: false, code: 'BAD_SIGNATURE', message: 'not signed by the expected party' };
    return { ok: true, sig: signer.signDigest(job.digest) };
  } catch (e) {
    return { ok: false, code: isTrickleError(e) ? e.code : 'INTERNAL', message: e instanceof Error ? e.message : String(e) };
  }
}

parentPort!.on('message', (batch: { seq: number; job: CryptoJob }[]) => {
  parentPort!.postMessage(batch.map(({ seq, job }) => ({ seq, result: handle(job) })));
});
