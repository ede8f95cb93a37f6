import { createHash } from 'node:crypto';
import { constants } from 'node:fs';
import { link, mkdir, open, readdir, readFile, rename, unlink, writeFile, type FileHandle } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { TrickleError, isTrickleError } from '@trickle/protocol/errors';
import { fileMarketOrders } from './market-orders-file.js';
import type { ChannelId } from '@trickle/protocol/types';
import {
  decodeChannelRecord,
  encodeChannelRecord,
  type ChannelStore,
  type DeviceChannelRecord,
} from './channel-store.js';
import { filePurchases } from './purchases-file.js';
import { processAlive } from './pids.js';
import { syncDir } from './durable-file.js';

export {
  encodeChannelRecord,
  decodeChannelRecord,
  memoryChannelStore,
  type DeviceChannelRecord,
  type ChannelStore,
} from './channel-store.js';
export type { PurchaseStore } from './purchases.js';
export { PAID_PREIMAGES_KEPT } from './channel.js';
export { processAlive } from './pids.js';
export { replaceFile, syncDir } from './durable-file.js';

// ---------------------------------------------------------------------------------------------------------------
// The two-slot channel file, `<channelId>.channel`.
//
// The file is two slots of S bytes each, S a multiple of 4096 and at least 4096 (file size 2·S); slot i starts at
// byte i·S. A slot is a 64-byte header, then the payload, then unused bytes up to S. Header, integers big-endian:
//   0..4    magic `TRKL`
//   4       format version, 1
//   5..8    zero
//   8..12   S (u32): a slot whose S is not half the file size is invalid
//   12..16  payload length L (u32), at most S − 64
//   16..24  sequence number (u64): each save writes newest + 1
//   24..56  sha256 of header bytes 0..24 followed by the L payload bytes
//   56..64  zero (reserved, not read)
// Payload: the UTF-8 text of `encodeChannelRecord(record)`, i.e. the record's JSON, as the earlier `<id>.json`
// files and the CLI's backups hold it. A slot is valid when magic, version, S, L and the checksum all check; the
// record is the valid slot with the highest sequence number; no valid slot is MALFORMED. A new file holds the
// record in slot 0 and zeros in slot 1 (every block written, so the file has no holes).
// ---------------------------------------------------------------------------------------------------------------

/** Suffix of a channel file in a store directory (`<channelId>.channel`, the two-slot format). */
export const CHANNEL_FILE_SUFFIX = '.channel';
/** Suffix of a channel file of the earlier format (`<channelId>.json`, one JSON record), still read. */
export const LEGACY_CHANNEL_FILE_SUFFIX = '.json';
/**
 * Names of the record files in a store directory: `<channelId>.channel`, or `<channelId>.json` of the earlier
 * format. Group 1 is the channel id (`0x` + 64 lowercase hex digits), group 2 the suffix without its dot. When both
 * exist for one channel, the `.channel` file is the record (the `.json` is what a migration left behind).
 */
export const CHANNEL_RECORD_FILE = /^(0x[0-9a-f]{64})\.(channel|json)$/;

/** Magic bytes at the start of each slot. */
const MAGIC = Buffer.from('TRKL', 'latin1');
/** Format version byte. */
const FORMAT_VERSION = 1;
/** Bytes before the payload in a slot. */
const HEADER_SIZE = 64;
/** Slot sizes are multiples of this (and at least this). */
const SLOT_ALIGN = 4096;
/** Largest slot the store writes or reads (a record is ~1.3 KB; this only bounds what a reader allocates). */
const MAX_SLOT_SIZE = 16 * 1024 * 1024;
/** Default bound on cached open files. */
const DEFAULT_MAX_OPEN_FILES = 64;
/**
 * Channel files are opened read-write with `O_DSYNC`: a write has reached the disk when it returns, so a save is one
 * positioned write, one trip to the thread pool, instead of a write and then an `fdatasync`.
 */
const WRITE_DURABLY = constants.O_RDWR | constants.O_DSYNC;
const CHANNEL_ID = /^0x[0-9a-f]{64}$/;

/** One valid slot of a channel file. */
interface Slot {
  readonly index: 0 | 1;
  readonly sequence: bigint;
  readonly payload: Buffer;
}

/**
 * Write a slot's header and payload (layout above) into `out` at `at`, which must be zeros at header bytes 5..8
 * and 56..64.
 */
function writeSlot(
  out: Buffer,
  at: number,
  slotSize: number,
  sequence: bigint,
  payload: string,
  payloadLength: number,
): void {
  MAGIC.copy(out, at);
  out[at + 4] = FORMAT_VERSION;
  out.writeUInt32BE(slotSize, at + 8);
  out.writeUInt32BE(payloadLength, at + 12);
  out.writeBigUInt64BE(sequence, at + 16);
  out.write(payload, at + HEADER_SIZE, payloadLength, 'utf8');
  createHash('sha256')
    .update(out.subarray(at, at + 24))
    .update(out.subarray(at + HEADER_SIZE, at + HEADER_SIZE + payloadLength))
    .digest()
    .copy(out, at + 24);
}

/** The slot at `index` if it is complete and intact (magic, version, sizes, checksum), else undefined. */
function readSlot(file: Buffer, slotSize: number, index: 0 | 1): Slot | undefined {
  const at = index * slotSize;
  const h = file.subarray(at, at + HEADER_SIZE);
  if (!h.subarray(0, 4).equals(MAGIC) || h[4] !== FORMAT_VERSION || h.readUInt32BE(8) !== slotSize) return undefined;
  const length = h.readUInt32BE(12);
  if (length > slotSize - HEADER_SIZE) return undefined;
  const payload = file.subarray(at + HEADER_SIZE, at + HEADER_SIZE + length);
  const sum = createHash('sha256').update(h.subarray(0, 24)).update(payload).digest();
  if (!sum.equals(h.subarray(24, 56))) return undefined;
  return { index, sequence: h.readBigUInt64BE(16), payload };
}

/** Whether `size` is the size of a two-slot file. */
const validFileSize = (size: number) =>
  size >= 2 * SLOT_ALIGN && size % (2 * SLOT_ALIGN) === 0 && size / 2 <= MAX_SLOT_SIZE;

/** The newest valid slot of a whole two-slot file, or undefined when neither slot is valid. */
function newestSlot(file: Buffer): { slot: Slot | undefined; slotSize: number } {
  const slotSize = file.length / 2;
  if (!validFileSize(file.length)) return { slot: undefined, slotSize };
  const a = readSlot(file, slotSize, 0);
  const b = readSlot(file, slotSize, 1);
  return { slot: a && b ? (b.sequence > a.sequence ? b : a) : (a ?? b), slotSize };
}

/**
 * Decode the bytes of a `<channelId>.channel` file: the record of the valid slot with the highest sequence number.
 * @throws TrickleError('MALFORMED') when the size is not that of a two-slot file, neither slot is intact, or the
 *   payload is not a channel record
 */
export function decodeChannelFile(bytes: Uint8Array): DeviceChannelRecord {
  const file = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (!validFileSize(file.length)) {
    throw new TrickleError('MALFORMED', 'not a Trickle channel file (size)', { details: { size: file.length } });
  }
  const { slot } = newestSlot(file);
  if (!slot) throw new TrickleError('MALFORMED', 'no intact record in the channel file (both slots fail their checks)');
  return decodeChannelRecord(slot.payload.toString('utf8'));
}

/**
 * Read one record file of a store directory, of either format by its suffix: `<id>.channel` (two slots, the newest
 * intact one) or `<id>.json` (the earlier single-JSON format). Readers of a device's store (the CLI, the
 * watchtower) use this rather than parsing files themselves. Reading while the device saves is safe: a slot being
 * overwritten fails its checksum and the other slot, the previous record, is returned.
 * @param path - the file (its name should match {@link CHANNEL_RECORD_FILE})
 * @throws the file system's error (code `ENOENT` when the file is gone), TrickleError('MALFORMED') when the
 *   content is not a record, TrickleError('INVALID_ARGUMENT') for another suffix
 * @example
 * ```ts
 * const record = await readChannelRecordFile(join(dir, `${channelId}.channel`));
 * ```
 */
export async function readChannelRecordFile(path: string): Promise<DeviceChannelRecord> {
  try {
    return await readRecordFile(path);
  } catch (e) {
    // Which file, of a device's hundreds: its operator has to find it to restore it or move it aside.
    if (!isTrickleError(e, 'MALFORMED') || e.shortMessage.includes(path)) throw e;
    throw new TrickleError('MALFORMED', `${e.shortMessage}: ${path}`, {
      details: { ...(e.details as object | undefined), path },
      cause: e,
    });
  }
}

async function readRecordFile(path: string): Promise<DeviceChannelRecord> {
  if (path.endsWith(LEGACY_CHANNEL_FILE_SUFFIX)) return decodeChannelRecord(await readFile(path, 'utf8'));
  if (!path.endsWith(CHANNEL_FILE_SUFFIX)) {
    throw new TrickleError('INVALID_ARGUMENT', `not a channel record file: ${basename(path)}`, { details: { path } });
  }
  const fh = await open(path, 'r');
  try {
    const { size } = await fh.stat();
    if (!validFileSize(size))
      throw new TrickleError('MALFORMED', 'not a Trickle channel file (size)', { details: { path, size } });
    return decodeChannelFile(await fh.readFile());
  } finally {
    await fh.close();
  }
}

/** Options of {@link fileChannelStore}. */
export interface FileChannelStoreOptions {
  /**
   * Slot size of a newly created channel file, in bytes: a multiple of 4096, at least 4096 (default 4096). Files
   * grow (the slot size doubles) when a record does not fit. Mostly for tests.
   */
  readonly slotSize?: number;
  /** Most channel files kept open between saves (default 64); the least recently saved one is closed beyond. */
  readonly maxOpenFiles?: number;
}

/** An open channel file and what the store knows of it (valid between saves of its channel only). */
interface OpenChannelFile {
  readonly fh: FileHandle;
  readonly slotSize: number;
  /** The slot holding the newest record. */
  readonly newest: 0 | 1;
  /** Its sequence number. */
  readonly sequence: bigint;
}

/** The open files of one store; `dropped` once the store object was garbage-collected. */
interface OpenFiles {
  readonly map: Map<ChannelId, OpenChannelFile>;
  dropped: boolean;
}

/**
 * Closes the files of a store that was dropped without `close()`. The registry holds each store's {@link OpenFiles}
 * strongly, so an open FileHandle is never garbage-collected itself (Node warns about that, DEP0137, and announces
 * an error for it); when the store object goes, its files are closed here.
 */
const droppedStores = new FinalizationRegistry<OpenFiles>((files) => {
  files.dropped = true;
  for (const f of files.map.values()) void f.fh.close().catch(() => {});
  files.map.clear();
});

const isEnoent = (e: unknown) => (e as NodeJS.ErrnoException | undefined)?.code === 'ENOENT';
const isEexist = (e: unknown) => (e as NodeJS.ErrnoException | undefined)?.code === 'EEXIST';
/**
 * The lock files a device process holds in its store directory (see {@link ChannelStore.acquire}): `.lock.<n>`, n a
 * generation number; the store is held by the process named in the file of the highest generation.
 */
const LOCK_FILE = /^\.lock\.([1-9][0-9]{0,15})$/;
/**
 * The temporary file a lock file is written as before it is linked into place (`.lock-<pid>.<n>.tmp`, see
 * `createLockFile`): one whose process is gone was left by a crash between the write and the link.
 */
const LOCK_TEMP_FILE = /^\.lock-([1-9][0-9]{0,15})\.[0-9]+\.tmp$/;
/** The lock file of the earlier format, one `.lock` (read: a live process of an older version holding the store). */
const LEGACY_LOCK_FILE = '.lock';
/** What a released lock file holds (no process id). */
const RELEASED = 'released\n';
/** Attempts at taking the store before `acquire` gives up (each one lost to another process taking it). */
const LOCK_ATTEMPTS = 8;

/**
 * The default device store: one file per channel, `<channelId>.channel` in `dir`, holding two slots of S bytes each
 * (S a multiple of 4096, 4096 unless a record needs more). Each slot holds a header (magic `TRKL`, format version,
 * S, payload length, a 64-bit sequence number, sha256 over those fields and the payload) and a payload, the JSON of
 * {@link encodeChannelRecord} (byte layout in the comment above {@link CHANNEL_FILE_SUFFIX} in the source). The
 * record is the intact slot with the highest sequence number.
 *
 * `save` overwrites, in one positioned write, the slot that does not hold the newest record, with sequence number
 * newest + 1, on a file opened `O_DSYNC` (the write returns once on disk, as write + `fdatasync` would; the file's size
 * and blocks do not change, so no metadata has to be flushed). A
 * crash during the write leaves that slot failing its checksum and the other slot, the previous durable record,
 * in place; once `save` resolves, the new record is durable. Creating a channel's file, growing it (a record no
 * longer fits: S doubles until it does) and the first save after a failed one go through the atomic path instead:
 * the whole file is written to a temporary file in `dir` (`.<channelId>.<pid>.<n>.tmp`, written `O_DSYNC`), renamed over, and the directory fsynced; these
 * are rare. A `<channelId>.json` file of the earlier format is still read when no `.channel` file exists; the next
 * save of that channel writes the `.channel` file and then removes the `.json`.
 *
 * Saves of one channel run one after the other (in call order); a failed save rejects with
 * TrickleError('STORE_FAILURE') and leaves the previous record loadable (a record whose channel id is not `0x` and
 * 64 lowercase hex digits is refused with INVALID_ARGUMENT, by `load` too). The files of the 64 (`maxOpenFiles`) most
 * recently saved channels stay open between saves; {@link ChannelStore.close} closes them (a store dropped without
 * `close()` has them closed when it is garbage-collected). {@link ChannelStore.acquire} (called by the device client
 * when it connects) creates `dir/.lock.<n>` holding the process id, n one above the highest such file: a device process
 * started on a store another live process holds is refused (STORE_FAILURE, `details.reason: 'IN_USE'`); a dead
 * holder's lock is taken over (by one process only when several start at once; one this process cannot read, another user's, is refused as in use); `close()` marks it released. A lock file is written as `dir/.lock-<pid>.<n>.tmp` and then linked into place; such a file whose process is gone (a crash between the two) is removed at the next `acquire`. Other writers are not coordinated: every record written is whole, but the last write wins even when it holds an
 * older state (as with the earlier format), so the CLI's writing commands (`import`, `close`, `force-close`) belong
 * to times when the device process is stopped. Readers (the CLI's `show`, the watchtower, via {@link readChannelRecordFile}) may
 * read at any time.
 * @param dir - the store directory (created if missing)
 * @param options - slot size of new files, bound on open files
 * @example
 * ```ts
 * const store = fileChannelStore('/var/lib/charger/channels');
 * // …
 * await store.close?.(); // at shutdown
 * ```
 */
export function fileChannelStore(dir: string, options: FileChannelStoreOptions = {}): ChannelStore {
  const initialSlotSize = options.slotSize ?? SLOT_ALIGN;
  if (
    !Number.isSafeInteger(initialSlotSize) ||
    initialSlotSize < SLOT_ALIGN ||
    initialSlotSize % SLOT_ALIGN !== 0 ||
    initialSlotSize > MAX_SLOT_SIZE
  ) {
    throw new TrickleError(
      'INVALID_ARGUMENT',
      `slotSize must be a multiple of ${SLOT_ALIGN} between ${SLOT_ALIGN} and ${MAX_SLOT_SIZE}`,
      { details: { slotSize: initialSlotSize } },
    );
  }
  const maxOpenFiles = options.maxOpenFiles ?? DEFAULT_MAX_OPEN_FILES;
  if (!Number.isSafeInteger(maxOpenFiles) || maxOpenFiles < 0) {
    throw new TrickleError('INVALID_ARGUMENT', 'maxOpenFiles must be a non-negative integer', {
      details: { maxOpenFiles },
    });
  }

  let ready: Promise<unknown> | undefined;
  /** The lock file this store holds (`dir/.lock.<n>`, see `acquire`). */
  let locked: string | undefined;
  const ensureDir = () =>
    (ready ??= mkdir(dir, { recursive: true }).catch((e: unknown) => {
      ready = undefined; // tried again next time
      throw e;
    }));
  const channelFile = (id: ChannelId) => join(dir, `${id}${CHANNEL_FILE_SUFFIX}`);
  const legacyFile = (id: ChannelId) => join(dir, `${id}${LEGACY_CHANNEL_FILE_SUFFIX}`);
  let tmpSeq = 0;

  /** Open files of idle channels, least recently saved first. A save takes its channel's entry out while it runs. */
  const files: OpenFiles = { map: new Map(), dropped: false };
  const openFiles = files.map;
  /** Closes of evicted files not finished yet (awaited by `close`). */
  const closing = new Set<Promise<void>>();
  /** Tail of each channel's queue of saves. */
  const queues = new Map<ChannelId, Promise<void>>();
  /** Channels whose last save failed, with the highest sequence number used: their next save rewrites the file. */
  const failed = new Map<ChannelId, bigint>();

  const closeQuietly = (fh: FileHandle) => {
    const p = fh.close().catch(() => {});
    closing.add(p);
    void p.then(() => closing.delete(p));
  };

  function remember(id: ChannelId, f: OpenChannelFile) {
    if (files.dropped) return closeQuietly(f.fh);
    openFiles.set(id, f);
    for (const [oldId, old] of openFiles) {
      if (openFiles.size <= maxOpenFiles) break;
      openFiles.delete(oldId);
      closeQuietly(old.fh);
    }
  }

  function enqueue(id: ChannelId, task: () => Promise<void>): Promise<void> {
    const run = (queues.get(id) ?? Promise.resolve()).then(task);
    const tail = run.catch(() => {});
    queues.set(id, tail);
    void tail.then(() => {
      if (queues.get(id) === tail) queues.delete(id);
    });
    return run;
  }

  /** The channel's file opened for writing, with its newest valid slot; undefined when missing or unreadable. */
  async function openExisting(id: ChannelId): Promise<OpenChannelFile | undefined> {
    let fh: FileHandle;
    try {
      fh = await open(channelFile(id), WRITE_DURABLY);
    } catch (e) {
      if (isEnoent(e)) return undefined;
      throw e;
    }
    try {
      const { size } = await fh.stat();
      if (validFileSize(size)) {
        const { slot, slotSize } = newestSlot(await fh.readFile());
        if (slot) return { fh, slotSize, newest: slot.index, sequence: slot.sequence };
      }
    } catch (e) {
      await fh.close().catch(() => {});
      throw e;
    }
    // Neither slot intact (damaged from outside): the next save replaces the whole file.
    await fh.close();
    return undefined;
  }

  /** The atomic path: a whole new file (the record in slot 0, slot 1 zeros) renamed over the channel's file. */
  async function rewrite(
    id: ChannelId,
    text: string,
    length: number,
    sequence: bigint,
    slotSize: number,
  ): Promise<OpenChannelFile> {
    const tmp = join(dir, `.${id}.${process.pid}.${tmpSeq++}.tmp`);
    let fh: FileHandle | undefined;
    try {
      fh = await open(tmp, WRITE_DURABLY | constants.O_CREAT | constants.O_TRUNC);
      const file = Buffer.alloc(2 * slotSize); // every block written: no holes, so later in-place writes allocate nothing
      writeSlot(file, 0, slotSize, sequence, text, length);
      await writeFully(fh, file, 0); // O_DSYNC: on disk with the file's size before the rename
      await rename(tmp, channelFile(id));
      await syncDir(dir);
    } catch (e) {
      if (fh) await fh.close().catch(() => {});
      await unlink(tmp).catch(() => {});
      throw e;
    }
    // The new file is durable under its name: a leftover of the earlier format may go (if this unlink is lost in a
    // crash, the .channel file still wins over it).
    await unlink(legacyFile(id)).catch(() => {});
    return { fh, slotSize, newest: 0, sequence };
  }

  async function saveNow(record: DeviceChannelRecord): Promise<void> {
    const id = record.channelId;
    let current = openFiles.get(id);
    openFiles.delete(id);
    let attempted = 0n;
    try {
      const text = encodeChannelRecord(record);
      const length = Buffer.byteLength(text, 'utf8');
      const needed = HEADER_SIZE + length;
      await ensureDir();
      const lastFailed = failed.get(id);
      if (lastFailed !== undefined) {
        // After a failed write or sync, what the page cache holds may not be what the disk holds: start afresh.
        if (current) await current.fh.close().catch(() => {});
        current = undefined;
      } else {
        current ??= await openExisting(id);
      }
      if (!current || needed > current.slotSize) {
        let slotSize = current?.slotSize ?? initialSlotSize;
        while (slotSize < needed) slotSize *= 2;
        if (slotSize > MAX_SLOT_SIZE)
          throw new Error(`record of ${length} bytes exceeds the largest slot (${MAX_SLOT_SIZE} bytes)`);
        const sequence = (current?.sequence ?? lastFailed ?? 0n) + 1n;
        attempted = sequence;
        const old = current;
        current = undefined;
        if (old) await old.fh.close().catch(() => {});
        current = await rewrite(id, text, length, sequence, slotSize);
      } else {
        const target = current.newest === 0 ? 1 : 0;
        const sequence = current.sequence + 1n;
        attempted = sequence;
        const slot = Buffer.alloc(needed);
        writeSlot(slot, 0, current.slotSize, sequence, text, length);
        await writeFully(current.fh, slot, target * current.slotSize); // O_DSYNC: on disk when it returns
        current = { ...current, newest: target, sequence };
      }
      failed.delete(id);
      remember(id, current);
    } catch (cause) {
      // Sequence numbers stay increasing across the rewrite that follows (only the newest slot matters then).
      failed.set(
        id,
        [failed.get(id) ?? 0n, current?.sequence ?? 0n, attempted].reduce((a, b) => (a > b ? a : b)),
      );
      if (current) closeQuietly(current.fh);
      throw new TrickleError('STORE_FAILURE', `cannot write channel record in ${dir}`, {
        cause,
        details: { channelId: id },
      });
    }
  }

  /** The channel's record, from its `.channel` file, else its `.json` file; undefined when it has neither. */
  async function loadId(id: ChannelId): Promise<DeviceChannelRecord | undefined> {
    // .json last-but-one: a save migrating the channel renames the .channel file in before it removes the .json.
    for (const path of [channelFile(id), legacyFile(id), channelFile(id)]) {
      try {
        return await readChannelRecordFile(path);
      } catch (e) {
        if (!isEnoent(e)) throw e;
      }
    }
    return undefined;
  }

  const store: ChannelStore = {
    purchases: filePurchases(dir),
    async load(channelId) {
      if (!CHANNEL_ID.test(channelId)) {
        throw new TrickleError('INVALID_ARGUMENT', 'a channel id is 0x followed by 64 lowercase hex digits', {
          details: { channelId },
        });
      }
      const record = await loadId(channelId);
      if (record && record.channelId !== channelId) {
        throw new TrickleError('MALFORMED', `the record file of ${channelId} holds channel ${record.channelId}`, {
          details: { channelId },
        });
      }
      return record;
    },
    async list() {
      await ensureDir();
      const ids = new Set<ChannelId>();
      for (const name of await readdir(dir)) {
        const m = CHANNEL_RECORD_FILE.exec(name);
        if (m) ids.add(m[1] as ChannelId);
      }
      const records = await Promise.all(
        [...ids].map(async (id) => {
          const record = await loadId(id);
          // As load() refuses it: a copy under another channel's name would be attached in place of that channel's own
          // record (and its signing ceiling), whichever of the two came first.
          if (record && record.channelId !== id)
            throw new TrickleError('MALFORMED', `the record file of ${id} holds channel ${record.channelId}`, {
              details: { channelId: id, path: channelFile(id) },
            });
          return record;
        }),
      );
      return records.filter((r): r is DeviceChannelRecord => r !== undefined);
    },
    save(record) {
      const id = record.channelId;
      if (typeof id !== 'string' || !CHANNEL_ID.test(id)) {
        return Promise.reject(
          new TrickleError('INVALID_ARGUMENT', 'a channel id is 0x followed by 64 lowercase hex digits', {
            details: { channelId: id },
          }),
        );
      }
      return enqueue(id, () => saveNow(record));
    },
    market: fileMarketOrders(dir),
    async close() {
      while (queues.size > 0) await Promise.all(queues.values());
      const open = [...openFiles.values()];
      openFiles.clear();
      for (const f of open) closeQuietly(f.fh);
      await Promise.all(closing);
      if (locked) {
        const path = locked;
        locked = undefined;
        // Released, not removed: a generation is never created twice (see `acquire`). Gone already (a later taker of
        // this process cleared it) is fine, and is not created again.
        await writeFile(path, RELEASED, { flag: 'r+' }).catch((e: unknown) => {
          if (!isEnoent(e)) throw new TrickleError('STORE_FAILURE', `cannot release ${path}`, { cause: e });
        });
      }
    },
    async acquire() {
      if (locked) return;
      await ensureDir();
      await clearDeadLockTemps();
      // Generations: a process takes the store by creating `.lock.<n + 1>` (link of a whole file: exclusive, never
      // seen empty) where `.lock.<n>`, the highest, is released or names a dead process, and holds it while no higher
      // generation exists. Two processes taking over one dead holder both want n + 1: one link wins. A taker that saw
      // an old listing (and linked a generation the winner had already cleared away) sees the higher one when it
      // lists again, and backs off. (Unlinking a dead holder's `.lock` and creating a new one instead let two
      // processes that both saw it dead each take the store.)
      for (let attempt = 0; attempt < LOCK_ATTEMPTS; attempt++) {
        const { gens, legacy } = await lockFiles();
        if (legacy !== undefined) refuseIfHeld(legacy.pid, join(dir, LEGACY_LOCK_FILE));
        const top = gens.at(-1);
        if (top) refuseIfHeld(await lockHolder(top.path), top.path);
        const mine = join(dir, `.lock.${(top?.gen ?? 0) + 1}`);
        if (!(await createLockFile(mine))) continue; // another process took that generation: look again
        const after = await lockFiles();
        if ((after.gens.at(-1)?.gen ?? 0) > (top?.gen ?? 0) + 1) {
          await unlinkGone(mine);
          continue;
        }
        locked = mine;
        // Older generations are dead or released: cleared (a failure here costs a file, not the lock).
        for (const g of after.gens) if (g.path !== mine) await unlinkGone(g.path);
        if (legacy !== undefined) await unlinkGone(join(dir, LEGACY_LOCK_FILE));
        return;
      }
      throw new TrickleError('STORE_FAILURE', `cannot take the store ${dir}: other processes keep taking it`, {
        details: { dir },
      });
    },
  };

  /**
   * Removes the lock temp files of processes that are gone (a crash between writing one and linking it left it, and
   * nothing else would ever remove it); a live process's, this one's included, may be about to link its file.
   */
  async function clearDeadLockTemps(): Promise<void> {
    let names: string[];
    try {
      names = await readdir(dir);
    } catch (e) {
      throw new TrickleError('STORE_FAILURE', `cannot read the store directory ${dir}`, { cause: e, details: { dir } });
    }
    for (const name of names) {
      const m = LOCK_TEMP_FILE.exec(name);
      if (!m || processAlive(Number(m[1]))) continue;
      const path = join(dir, name);
      try {
        await unlinkGone(path);
      } catch (e) {
        throw new TrickleError('STORE_FAILURE', `cannot remove ${path}, left by a process that is gone`, {
          cause: e,
          details: { dir, path },
        });
      }
    }
  }

  /** The generation lock files of the store directory, lowest first, and the earlier format's `.lock` if any. */
  async function lockFiles(): Promise<{
    gens: { gen: number; path: string }[];
    legacy: { pid: number } | undefined;
  }> {
    let names: string[];
    try {
      names = await readdir(dir);
    } catch (e) {
      throw new TrickleError('STORE_FAILURE', `cannot read the store directory ${dir}`, { cause: e, details: { dir } });
    }
    const gens: { gen: number; path: string }[] = [];
    for (const name of names) {
      const m = LOCK_FILE.exec(name);
      if (m) gens.push({ gen: Number(m[1]), path: join(dir, name) });
    }
    gens.sort((a, b) => a.gen - b.gen);
    const legacy = names.includes(LEGACY_LOCK_FILE)
      ? { pid: await lockHolder(join(dir, LEGACY_LOCK_FILE)) }
      : undefined;
    return { gens, legacy };
  }

  /**
   * The process id a lock file names; 0 when released or gone. One that cannot be read is not taken for released: not
   * ours to read (another user's process wrote it, 0600) is refused as in use, any other failure is STORE_FAILURE.
   */
  async function lockHolder(path: string): Promise<number> {
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch (e) {
      if (isEnoent(e)) return 0;
      const code = (e as NodeJS.ErrnoException | undefined)?.code;
      if (code === 'EACCES' || code === 'EPERM')
        throw new TrickleError(
          'STORE_FAILURE',
          `the store ${dir} is locked by ${path}, which this process cannot read (another user's process?)`,
          { cause: e, details: { reason: 'IN_USE', dir, path } },
        );
      throw new TrickleError('STORE_FAILURE', `cannot read the lock file ${path}`, {
        cause: e,
        details: { dir, path },
      });
    }
    const pid = Number(text.trim());
    return Number.isSafeInteger(pid) && pid > 0 ? pid : 0;
  }

  /** Refuses when another live process holds the store (this process's own lock, of a store not closed, is its business). */
  function refuseIfHeld(pid: number, path: string) {
    if (pid > 0 && pid !== process.pid && processAlive(pid)) {
      throw new TrickleError(
        'STORE_FAILURE',
        `the store ${dir} is in use by process ${pid}: one device process per store (stop it first)`,
        { details: { reason: 'IN_USE', dir, pid, path } },
      );
    }
  }

  /** Creates `path` holding this process's id, whole, or answers false when it exists. */
  async function createLockFile(path: string): Promise<boolean> {
    const tmp = join(dir, `.lock-${process.pid}.${tmpSeq++}.tmp`);
    try {
      const fh = await open(tmp, 'wx', 0o600);
      try {
        await fh.writeFile(`${process.pid}\n`);
        await fh.sync();
      } finally {
        await fh.close();
      }
      try {
        await link(tmp, path);
      } catch (e) {
        if (isEexist(e)) return false;
        throw e;
      }
      await syncDir(dir);
      return true;
    } catch (e) {
      throw new TrickleError('STORE_FAILURE', `cannot create ${path}`, { cause: e, details: { dir } });
    } finally {
      await unlink(tmp).catch(() => {});
    }
  }
  droppedStores.register(store, files);
  return store;
}

/** Write all of `buf` at `position` (a short write is continued, never left partial). */
async function writeFully(fh: FileHandle, buf: Buffer, position: number): Promise<void> {
  let done = 0;
  while (done < buf.length) {
    const { bytesWritten } = await fh.write(buf, done, buf.length - done, position + done);
    if (bytesWritten <= 0) throw new Error('write made no progress');
    done += bytesWritten;
  }
}

/** Deletes `path`; one already gone (another taker cleared it) is fine, any other failure is the caller's. */
async function unlinkGone(path: string): Promise<void> {
  try {
    await unlink(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
}
