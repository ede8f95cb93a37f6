import { existsSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { BadSignatureError, TrickleError, isTrickleError } from '@trickle/protocol/errors';
import {
  STATE_TYPE,
  domainSeparator,
  stateDigest,
  trickleDomain,
  typedDataDigest,
  typedDigestParts,
  writeStateWords,
} from '@trickle/protocol/eip712';
import { bytesToBigint, keccakUtf8, toAddress, toHex, uintWord, type Keccak256 } from '@trickle/protocol/hex';
import { bestKeccak256, bestSigner, bestVerifier } from '@trickle/protocol/native';
import type { Signer, Verifier } from '@trickle/protocol/signer';
import type { Address, Domain, Hex, State } from '@trickle/protocol/types';

/**
 * The hub's signature work: recover a device's signature and countersign with the hub key. Behind one interface so
 * it can run inline or spread over worker threads (libsecp256k1 in each), using every core.
 */
export interface HubCrypto {
  /** The hub's address. */
  readonly address: Address;
  /**
   * Check that `sig` over `digest` is by `expected`, then sign `digest` with the hub key.
   * @returns the hub's 65-byte signature
   * @throws BadSignatureError when the signature is malformed or by someone else
   */
  verifyAndSign(digest: Uint8Array, sig: Uint8Array, expected: Address): Promise<Uint8Array>;
  /** Recover the signer. @throws BadSignatureError */
  recover(digest: Uint8Array, sig: Uint8Array): Promise<Address>;
  /** Sign with the hub key. */
  sign(digest: Uint8Array): Promise<Uint8Array>;
  /**
   * Digest a channel state under its domain, check that `sig` over that digest is by `expected`, and countersign it:
   * the whole per-update signature work, digest included, off the calling thread. Optional (a backend without it gets
   * digests made by the caller and {@link HubCrypto.verifyAndSign}).
   * @returns the state's digest (undefined when it could not be made there) with the hub's 65-byte signature, or
   *   with the refusal
   */
  verifyAndSignState?(state: State, sig: Uint8Array, expected: Address, domain: StateDomain): Promise<StateAnswer>;
  close(): Promise<void>;
}

/** The EIP-712 domain of a channel's states: its separator and what it is made of. */
export interface StateDomain {
  readonly separator: Uint8Array;
  readonly chainId: bigint;
  readonly adjudicator: Address;
}

/** {@link HubCrypto.verifyAndSignState}'s answer. */
export type StateAnswer =
  | { readonly digest: Uint8Array | undefined; readonly sig: Uint8Array; readonly error?: undefined }
  | { readonly digest: Uint8Array | undefined; readonly sig?: undefined; readonly error: TrickleError };

/** Crypto on the calling thread: the same jobs and answers as on a worker. */
export function inlineCrypto(signer: Signer, verifier: Verifier): HubCrypto {
  return {
    address: signer.address,
    async verifyAndSign(digest, sig, expected) {
      return unwrap(runJob(signer, verifier, { op: 0, digest, sig, expected })).sig!;
    },
    async recover(digest, sig) {
      return unwrap(runJob(signer, verifier, { op: 1, digest, sig })).address as Address;
    },
    async sign(digest) {
      return unwrap(runJob(signer, verifier, { op: 2, digest })).sig!;
    },
    async close() {},
  };
}

/** A job's answer as its value, or the error it stands for. */
function unwrap(r: CryptoResult): CryptoResult & { ok: true } {
  if (!r.ok) throw errorOf(r);
  return r;
}

/** The error a refusal stands for. */
function errorOf(r: CryptoResult & { ok: false }): TrickleError {
  return r.code === 'BAD_SIGNATURE'
    ? new BadSignatureError(r.message)
    : new TrickleError(r.code === 'INVALID_ARGUMENT' ? 'INVALID_ARGUMENT' : 'INTERNAL', r.message);
}

/** One job, on whichever thread holds the keys: the crypto workers and the inline path answer through it. */
export function runJob(signer: Signer, verifier: Verifier, job: CryptoJob): CryptoResult {
  try {
    if (job.op === 2) return { ok: true, sig: signer.signDigest(job.digest) };
    const address = verifier.recoverAddress(job.digest, job.sig!);
    if (job.op === 1) return { ok: true, address };
    if (address !== job.expected)
      return { ok: false, code: 'BAD_SIGNATURE', message: 'not signed by the expected party' };
    return { ok: true, sig: signer.signDigest(job.digest) };
  } catch (e) {
    return {
      ok: false,
      code: isTrickleError(e) ? e.code : 'INTERNAL',
      message: e instanceof Error ? e.message : String(e),
    };
  }
}

/**
 * A request to a crypto worker. `op`: 0 verify+sign, 1 recover, 2 sign, 3 digest a state's struct words under a
 * domain, then verify+sign that digest (`state` and `domain`: the state's words are written into its batch slot,
 * `digest` unused).
 */
export interface CryptoJob {
  readonly op: 0 | 1 | 2 | 3;
  readonly digest: Uint8Array;
  readonly sig?: Uint8Array | undefined;
  readonly expected?: string | undefined;
  readonly domain?: StateDomain | undefined;
  readonly state?: State | undefined;
}
/** A worker's answer: a signature, an address, or an error code and message. */
export type CryptoResult =
  { ok: true; sig?: Uint8Array; address?: string } | { ok: false; code: string; message: string };

/** The EIP-712 words of a state after its type hash (channelId … isFinal), as the struct hash covers them. */
const STATE_WORDS = 9 * 32;

/**
 * Batches travel between the main thread and a worker as one transferred buffer of fixed-size slots (no per-job
 * objects to clone), plus the expected signers. Request slot: op u8 · digest 32 · signature 65 (zeros when none) ·
 * for a job that signs, what the digest is made of (a Trickle signer signs only digests it can make again): struct
 * hash 32 · chain id 32 · adjudicator 20.
 * Answers: the signatures, 65 bytes per job, in one transferred buffer; any other answer (an address, a refusal) as
 * its whole {@link CryptoResult} in `others`, at the job's index.
 * A state job (op 3) carries, after the adjudicator, the state's nine struct words (288 bytes; digest and struct
 * hash slots unused): the worker makes the struct hash and the digest itself, so the event loop makes neither, and
 * answers the digest in `digests` (32 bytes per job) with the signature or the refusal.
 */
export const JOB_BYTES = 1 + 32 + 65 + 32 + 32 + 20 + STATE_WORDS;

/**
 * On a worker: the job's digest made again from its Trickle domain and struct hash (the worker's signer signs only
 * such digests), or `undefined` when the slot carries none. Separators are kept per domain.
 */
export function remakeDigest(
  jobs: Uint8Array,
  at: number,
  separators: Map<string, Uint8Array>,
  keccak: Keccak256,
): Uint8Array | undefined {
  const structHash = jobs.subarray(at + 98, at + 130);
  const sep = separatorOf(jobs.subarray(at + 130, at + 182), separators);
  if (sep === undefined) return undefined;
  const digest = typedDataDigest(sep, structHash.slice(), keccak);
  const sent = jobs.subarray(at + 1, at + 33);
  for (let i = 0; i < 32; i++) if (digest[i] !== sent[i]) return undefined;
  return digest;
}
export interface JobBatch {
  readonly jobs: Uint8Array;
  /** Expected signer per job ('' when none). */
  readonly expected: string[];
}
export interface AnswerBatch {
  readonly sigs: Uint8Array;
  /** Per job, the digest a state job (op 3) made (zeros for the others); absent when the batch had none. */
  readonly digests?: Uint8Array | undefined;
  /** Per job: the answer when it is not a signature, else null. */
  readonly others: (CryptoResult | null)[];
}

interface Pending {
  resolve: (r: CryptoResult, digest?: Uint8Array) => void;
}

const STATE_TYPEHASH = keccakUtf8(STATE_TYPE);

/** The refusal of a state that cannot be made into words (or digested). */
function unwordable(e: unknown): CryptoResult {
  return { ok: false, code: 'INVALID_ARGUMENT', message: e instanceof Error ? e.message : String(e) };
}

/** Whether the 32 bytes of `b` at `at` are all zero. */
function zero32(b: Uint8Array, at: number): boolean {
  for (let i = at; i < at + 32; i++) if (b[i] !== 0) return false;
  return true;
}

/** A pending job answered already (its slot still travels, its answer is dropped). */
const ANSWERED: Pending = { resolve: () => {} };

/**
 * On a worker: the digest of a state job, made from its struct words and domain (so it is one the worker's signer
 * signs), or `undefined` when the slot carries no domain.
 */
export function stateJobDigest(
  jobs: Uint8Array,
  at: number,
  separators: Map<string, Uint8Array>,
  keccak: Keccak256,
): Uint8Array | undefined {
  const struct = new Uint8Array(32 + STATE_WORDS);
  struct.set(STATE_TYPEHASH, 0);
  struct.set(jobs.subarray(at + 182, at + 182 + STATE_WORDS), 32);
  const sep = separatorOf(jobs.subarray(at + 130, at + 182), separators);
  return sep && typedDataDigest(sep, keccak(struct), keccak);
}

/** The domain bytes last looked up and their separator: a hub's jobs nearly all share one domain. */
let lastDomain:
  { readonly map: Map<string, Uint8Array>; readonly bytes: Uint8Array; readonly separator: Uint8Array } | undefined;

function separatorOf(domainBytes: Uint8Array, separators: Map<string, Uint8Array>): Uint8Array | undefined {
  const last = lastDomain;
  if (last !== undefined && last.map === separators) {
    let same = true;
    for (let i = 0; i < 52 && same; i++) same = last.bytes[i] === domainBytes[i];
    if (same) return last.separator;
  }
  const sep = lookUpSeparator(domainBytes, separators);
  if (sep !== undefined) lastDomain = { map: separators, bytes: domainBytes.slice(), separator: sep };
  return sep;
}

function lookUpSeparator(domainBytes: Uint8Array, separators: Map<string, Uint8Array>): Uint8Array | undefined {
  if (domainBytes.every((b) => b === 0)) return undefined;
  const key = toHex(domainBytes);
  let sep = separators.get(key);
  if (sep === undefined) {
    sep = domainSeparator(
      trickleDomain(bytesToBigint(domainBytes.subarray(0, 32)), toAddress(domainBytes.subarray(32, 52))),
    );
    separators.set(key, sep);
  }
  return sep;
}

/**
 * Crypto on a pool of worker threads, each with libsecp256k1 and the hub key. Requests made in one event-loop turn
 * travel to a worker as one message (batching keeps the per-message cost small).
 * @param o.privateKey - the hub key (stays in this process)
 * @param o.address - the hub's address (from its Signer)
 * @param o.threads - workers; default: cores − 1, at least 1 (the main thread keeps sockets and the store busy)
 * @param o.inlineMax - at most this many jobs in a turn with every worker idle run on the calling thread (default 2;
 *   0: always on workers)
 */
export function workerCrypto(o: {
  privateKey: string;
  address: Address;
  threads?: number;
  inlineMax?: number;
}): HubCrypto {
  const threads = o.threads ?? Math.max(1, availableParallelism() - 1);
  // A turn with only a few jobs while every worker is idle is done here: the hop to a worker and back costs more
  // latency than the work (a lone device's update waits ~1 ms for it on a busy machine). Under load, batches go out.
  const inlineMax = o.inlineMax ?? 2;
  let inline: { signer: Signer; verifier: Verifier } | undefined;
  const script = workerScript();
  const workers = Array.from(
    { length: threads },
    () => new Worker(script, { workerData: { privateKey: o.privateKey } }),
  );
  let failed: string | undefined;
  const exited = workers.map((w) => new Promise<void>((resolve) => w.once('exit', () => resolve())));
  // Per worker: the jobs queued for its next batch, and the batches sent and not yet answered (answered in order).
  const queues: { job: CryptoJob; pending: Pending }[][] = workers.map(() => []);
  const sent: Pending[][][] = workers.map(() => []);
  let rr = 0;
  let scheduled = false;
  workers.forEach((w, i) => {
    w.unref();
    w.on('message', (batch: AnswerBatch) => {
      const waiting = sent[i]!.shift() ?? [];
      const { sigs, digests, others } = batch;
      // Views of the transferred buffers, not copies: a signature and a digest live as long as their update's step.
      for (let k = 0; k < waiting.length; k++)
        waiting[k]!.resolve(
          others[k] ?? { ok: true, sig: sigs.subarray(k * 65, k * 65 + 65) },
          digests !== undefined && !zero32(digests, k * 32) ? digests.subarray(k * 32, k * 32 + 32) : undefined,
        );
    });
    const fail = (why: string) => {
      failed ??= why;
      for (const batch of sent[i]!.splice(0))
        for (const p of batch) p.resolve({ ok: false, code: 'INTERNAL', message: why });
    };
    w.on('error', (e) => fail(`crypto worker failed: ${String(e)}`));
    w.on('exit', (code) => fail(`crypto worker exited with ${code}`));
  });
  const flush = () => {
    scheduled = false;
    const queued = queues.reduce((n, q) => n + q.length, 0);
    if (queued <= inlineMax && sent.every((b) => b.length === 0)) {
      inline ??= { signer: bestSigner(o.privateKey as Hex), verifier: bestVerifier() };
      for (const q of queues)
        for (const { job, pending } of q.splice(0)) {
          if (job.op !== 3) {
            pending.resolve(runJob(inline.signer, inline.verifier, job));
            continue;
          }
          let digest: Uint8Array;
          try {
            digest = stateDigest(job.domain!.separator, job.state!, keccak);
          } catch (e) {
            pending.resolve(unwordable(e));
            continue;
          }
          pending.resolve(runJob(inline.signer, inline.verifier, { ...job, op: 0, digest }), digest);
        }
      return;
    }
    queues.forEach((q, i) => {
      if (q.length === 0) return;
      const items = q.splice(0);
      const jobs = new Uint8Array(items.length * JOB_BYTES);
      const expected: string[] = new Array(items.length);
      const pendings: Pending[] = new Array(items.length);
      for (let k = 0; k < items.length; k++) {
        const { job, pending } = items[k]!;
        const at = k * JOB_BYTES;
        pendings[k] = pending;
        expected[k] = job.expected ?? '';
        jobs[at] = job.op;
        if (job.op === 3) {
          try {
            writeStateWords(jobs, at + 182, job.state!);
          } catch (e) {
            // Refused here; its slot goes without a domain (the worker answers it, and that answer is dropped).
            pending.resolve(unwordable(e));
            pendings[k] = ANSWERED;
            continue;
          }
          if (job.sig) jobs.set(job.sig.subarray(0, 65), at + 33);
          jobs.set(stateDomainBytes(job.domain!), at + 130);
        } else {
          if (job.sig) jobs.set(job.sig.subarray(0, 65), at + 33);
          jobs.set(job.digest, at + 1);
          const parts = job.op === 1 ? undefined : typedDigestParts(job.digest);
          if (parts) {
            jobs.set(parts.structHash, at + 98);
            jobs.set(domainBytes(parts.domain), at + 130);
          }
        }
      }
      sent[i]!.push(pendings);
      const batch: JobBatch = { jobs, expected };
      workers[i]!.postMessage(batch, [jobs.buffer]);
    });
  };
  const run = (job: CryptoJob): Promise<CryptoResult> => new Promise((resolve) => queue(job, resolve));
  const queue = (job: CryptoJob, resolve: Pending['resolve']): void => {
    if (failed) {
      resolve({ ok: false, code: 'INTERNAL', message: failed });
      return;
    }
    // A signature of another length cannot be valid: refuse it here rather than pad it into a slot.
    if (job.digest.length !== 32 || (job.sig && job.sig.length !== 65)) {
      resolve({ ok: false, code: 'BAD_SIGNATURE', message: 'signature must be 65 bytes over a 32-byte digest' });
      return;
    }
    queues[rr++ % threads]!.push({ job, pending: { resolve } });
    if (!scheduled) {
      scheduled = true;
      setImmediate(flush);
    }
  };
  const keccak = bestKeccak256();
  return {
    address: o.address,
    verifyAndSignState(state, sig, expected, domain) {
      // The state's words are written into its batch slot when the batch goes out (refused there when they cannot be).
      return new Promise<StateAnswer>((resolve) => {
        queue({ op: 3, digest: EMPTY_DIGEST, sig, expected, domain, state }, (r, digest) =>
          resolve(r.ok ? { digest, sig: r.sig! } : { digest, error: errorOf(r) }),
        );
      });
    },
    async verifyAndSign(digest, sig, expected) {
      return unwrap(await run({ op: 0, digest, sig, expected })).sig!;
    },
    async recover(digest, sig) {
      return unwrap(await run({ op: 1, digest, sig })).address as Address;
    },
    async sign(digest) {
      return unwrap(await run({ op: 2, digest })).sig!;
    },
    async close() {
      failed ??= 'closed';
      // Each worker is asked to stop once it has answered what it holds, and exits by itself. terminate() stopped a
      // worker inside a libsecp256k1 call now and then, and node-addon-api aborted the whole process (SIGABRT,
      // "terminate called after throwing an instance of 'Napi::Error'"). One that does not exit in time is terminated.
      await Promise.all(
        workers.map(async (w, i) => {
          w.postMessage(null);
          const late = setTimeout(() => void w.terminate(), CLOSE_GRACE_MS);
          await exited[i];
          clearTimeout(late);
        }),
      );
    },
  };
}

const EMPTY_DIGEST = new Uint8Array(32);

/** How long `close()` lets a worker finish the batches it holds before terminating it. */
const CLOSE_GRACE_MS = 10_000;

/** A channel domain's chain id word and adjudicator address as a state job carries them, once per separator. */
const stateDomainWords = new WeakMap<Uint8Array, Uint8Array>();
function stateDomainBytes(domain: StateDomain): Uint8Array {
  let b = stateDomainWords.get(domain.separator);
  if (b === undefined) {
    b = new Uint8Array(52);
    b.set(uintWord(domain.chainId), 0);
    b.set(Buffer.from(domain.adjudicator.slice(2), 'hex'), 32);
    stateDomainWords.set(domain.separator, b);
  }
  return b;
}

/** A domain's chain id word and adjudicator address as a job carries them, made once per domain object. */
const domainWords = new WeakMap<Domain, Uint8Array>();
function domainBytes(domain: Domain): Uint8Array {
  let b = domainWords.get(domain);
  if (b === undefined) {
    b = new Uint8Array(52);
    b.set(uintWord(domain.chainId), 0);
    b.set(Buffer.from(domain.verifyingContract.slice(2), 'hex'), 32);
    domainWords.set(domain, b);
  }
  return b;
}

/** The compiled worker script (also when this module runs from `src/` under a test runner). */
function workerScript(): URL {
  const here = new URL('./crypto-worker.js', import.meta.url);
  if (existsSync(here)) return here;
  return new URL(here.href.replace(/\/src\/crypto-worker\.js$/, '/dist/crypto-worker.js'));
}
