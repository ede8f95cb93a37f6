import { createHash } from 'node:crypto';
import {
  closeSync,
  constants,
  existsSync,
  openSync,
  readFileSync,
  unlinkSync,
  write,
  writeFileSync,
  writeSync,
} from 'node:fs';

/**
 * The hub store's write-ahead log: where a commit becomes durable. One entry per commit, appended with a single
 * `pwrite` on a file opened `O_DSYNC` and preallocated, so the write is the whole sync (no metadata to journal).
 * `node bench/floor.mjs --only fsync` and `node packages/hub/bench/store-commit.mjs` show why: on this machine a 4 KiB
 * durable pwrite takes ~0.11 ms and ~40 µs of CPU, a durable LMDB commit ~0.45 ms and ~250 µs.
 *
 * Two files take turns. Entries carry the epoch of the file they were written in; an epoch's file is only reused
 * for epoch + 2, after the store has flushed everything logged before epoch + 1 began (see `lmdb.ts`). Recovery reads
 * entries from offset 0 while they are whole, checksummed and of the expected epoch: a torn tail or an older epoch's
 * leftovers end the log.
 *
 * Entry: magic "TWL1" | epoch u32 | payload length u32 | sha256(epoch ‖ length ‖ payload) | payload.
 * Payload: ops, each db u8 | key length u16 | key (UTF-8) | value length u32 (0xffffffff: remove) | value.
 */

/** One logged write: `value` undefined removes the key. */
export interface WalOp {
  readonly db: number;
  readonly key: string;
  readonly value: Uint8Array | undefined;
}

const MAGIC = 0x54574c31; // "TWL1"
const HEADER = 4 + 4 + 4 + 32;
const REMOVED = 0xffffffff;

function checksum(header: Buffer, payload: Uint8Array): Buffer {
  return createHash('sha256').update(header.subarray(4, 12)).update(payload).digest();
}

/** A write to log: its value as bytes or as text (logged as UTF-8); `value` undefined removes the key. */
export interface WalWrite {
  readonly db: number;
  readonly key: string;
  readonly value: Uint8Array | string | undefined;
}

/**
 * Serialise one commit's ops as a log entry of `epoch`.
 * @param views - filled, when given, with each op's value as a view of its bytes in the entry (undefined for a
 *   removal), so a caller keeping the values needs no copy of its own
 */
export function encodeEntry(epoch: number, ops: readonly WalWrite[], views?: (Buffer | undefined)[]): Buffer {
  let size = 0;
  for (const op of ops) {
    const keyLength = Buffer.byteLength(op.key);
    if (keyLength > 0xffff) throw new RangeError(`key of ${keyLength} bytes`);
    const v = op.value;
    size += 1 + 2 + keyLength + 4 + (v === undefined ? 0 : typeof v === 'string' ? Buffer.byteLength(v) : v.length);
  }
  const entry = Buffer.allocUnsafe(HEADER + size);
  entry.writeUInt32BE(MAGIC, 0);
  entry.writeUInt32BE(epoch >>> 0, 4);
  entry.writeUInt32BE(size, 8);
  let at = HEADER;
  for (let i = 0; i < ops.length; i++) {
    const op = ops[i]!;
    entry[at] = op.db;
    const keyLength = entry.write(op.key, at + 3);
    entry[at + 1] = keyLength >>> 8;
    entry[at + 2] = keyLength & 0xff;
    at += 3 + keyLength;
    const v = op.value;
    let length: number;
    if (v === undefined) length = REMOVED;
    else if (typeof v === 'string') length = entry.write(v, at + 4);
    else {
      entry.set(v, at + 4);
      length = v.length;
    }
    entry[at] = length >>> 24;
    entry[at + 1] = (length >>> 16) & 0xff;
    entry[at + 2] = (length >>> 8) & 0xff;
    entry[at + 3] = length & 0xff;
    at += 4;
    if (v === undefined) {
      if (views) views[i] = undefined;
    } else {
      if (views) views[i] = entry.subarray(at, at + length);
      at += length;
    }
  }
  checksum(entry, entry.subarray(HEADER)).copy(entry, 12);
  return entry;
}

/** The whole entries of `epoch` at the start of `bytes`, in order; reading stops at the first that is not. */
export function readEntries(bytes: Buffer, epoch: number): WalOp[][] {
  const out: WalOp[][] = [];
  let at = 0;
  while (at + HEADER <= bytes.length) {
    if (bytes.readUInt32BE(at) !== MAGIC || bytes.readUInt32BE(at + 4) !== epoch >>> 0) break;
    const size = bytes.readUInt32BE(at + 8);
    if (at + HEADER + size > bytes.length) break;
    const header = bytes.subarray(at, at + 12);
    const payload = bytes.subarray(at + HEADER, at + HEADER + size);
    if (!checksum(header, payload).equals(bytes.subarray(at + 12, at + HEADER))) break;
    const ops: WalOp[] = [];
    let p = 0;
    while (p < payload.length) {
      const db = payload.readUInt8(p);
      const keyLength = payload.readUInt16BE(p + 1);
      const key = payload.toString('utf8', p + 3, p + 3 + keyLength);
      p += 3 + keyLength;
      const length = payload.readUInt32BE(p);
      p += 4;
      if (length === REMOVED) ops.push({ db, key, value: undefined });
      else {
        ops.push({ db, key, value: Buffer.from(payload.subarray(p, p + length)) });
        p += length;
      }
    }
    out.push(ops);
    at += HEADER + size;
  }
  return out;
}

/** One log file, open for durable positional writes. */
export class WalFile {
  readonly #fd: number;

  /** Opens `path` (creating it zero-filled to `bytes` if missing) for `O_DSYNC` writes. */
  constructor(
    readonly path: string,
    bytes: number,
  ) {
    const created = !existsSync(path);
    this.#fd = openSync(path, constants.O_RDWR | constants.O_CREAT | constants.O_DSYNC, 0o600);
    if (created) {
      const zeros = Buffer.alloc(Math.min(bytes, 1 << 20));
      // O_DSYNC: each write is on disk, with the file's new size, when it returns.
      for (let at = 0; at < bytes; at += zeros.length)
        writeSync(this.#fd, zeros, 0, Math.min(zeros.length, bytes - at), at);
    }
  }

  /** The file's current bytes (for recovery). */
  read(): Buffer {
    return readFileSync(this.path);
  }

  /** Writes `entry` at `offset`; resolves once it is on disk. */
  append(entry: Buffer, offset: number): Promise<void> {
    return new Promise((resolve, reject) => {
      write(this.#fd, entry, 0, entry.length, offset, (error, written) => {
        if (error) reject(error);
        else if (written !== entry.length)
          reject(new Error(`short write to ${this.path}: ${written} of ${entry.length} bytes`));
        else resolve();
      });
    });
  }

  close(): void {
    closeSync(this.#fd);
  }
}

/** Lock files this process holds (a second open of the same store in-process is refused too). */
const held = new Set<string>();

/**
 * Takes the log's lock: `path` is created exclusively and holds this process's pid. Two writers on one log would
 * overwrite each other's entries, so a second hub (or tool) opening the same store is refused while the first runs;
 * a lock left by a process that no longer exists (killed) is taken over. @returns the release function
 * @throws Error naming the holder when the lock is held by a live process
 */
export function lockLog(path: string): () => void {
  if (held.has(path)) throw new Error(`${path}: this process already has the store open`);
  for (let attempt = 0; ; attempt++) {
    try {
      writeFileSync(path, `${process.pid}\n`, { flag: 'wx', mode: 0o600 });
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST' || attempt > 0) throw e;
      const holder = Number.parseInt(readFileSync(path, 'utf8'), 10);
      if (Number.isSafeInteger(holder) && holder > 0 && holder !== process.pid && alive(holder)) {
        throw new Error(`${path}: the store is in use by process ${holder}`);
      }
      unlinkSync(path); // stale: its process is gone
    }
  }
  held.add(path);
  return () => {
    held.delete(path);
    try {
      unlinkSync(path);
    } catch {
      /* already gone */
    }
  };
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}
