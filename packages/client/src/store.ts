import { mkdir, open, readFile, readdir, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { TrickleError } from '@trickle/protocol/errors';
import { parseJson, stringifyJson } from '@trickle/protocol/json';
import type { ChannelId, ChannelParams, Funding, SignedState } from '@trickle/protocol/types';

/** What a device keeps about one channel. The CLI and the watchtower read the same records. */
export interface DeviceChannelRecord {
  readonly params: ChannelParams;
  readonly channelId: ChannelId;
  /** Deposits seen on-chain for each side. */
  readonly funding: Funding;
  /** Latest state both parties signed (the unsigned zero state before any update). */
  readonly latest: SignedState;
  /** Highest version this device has signed: it never signs two different states at one version. */
  readonly signedVersion: bigint;
  /** Whether a cooperative or forced close was started. */
  readonly closing?: 'cooperative' | 'force' | undefined;
}

/**
 * Durable storage for a device's channels. `save` resolves only when the record is durable: the client reports a
 * payment as done, or delivers what was paid for, only after it.
 */
export interface ChannelStore {
  load(channelId: ChannelId): Promise<DeviceChannelRecord | undefined>;
  list(): Promise<DeviceChannelRecord[]>;
  save(record: DeviceChannelRecord): Promise<void>;
}

/** Serialise a record as the store and backups write it (JSON, bigints as decimal strings). */
export function encodeChannelRecord(record: DeviceChannelRecord): string {
  return `${stringifyJson(record, 2)}\n`;
}

/** Parse a record written by {@link encodeChannelRecord}. @throws TrickleError('MALFORMED') */
export function decodeChannelRecord(text: string): DeviceChannelRecord {
  try {
    const r = parseJson<DeviceChannelRecord>(text);
    if (!r || typeof r.channelId !== 'string' || !r.latest?.state || !r.params) throw new Error('not a channel record');
    return r;
  } catch (cause) {
    throw new TrickleError('MALFORMED', 'not a Trickle channel record', { cause });
  }
}

/**
 * The default device store: one JSON file per channel, replaced atomically (write a temporary file, fsync it,
 * rename it over the old one, fsync the directory), so a crash leaves either the old or the new record, never a
 * torn one.
 * @example
 * ```ts
 * const store = fileChannelStore('/var/lib/charger/channels');
 * ```
 */
export function fileChannelStore(dir: string): ChannelStore {
  let ready: Promise<unknown> | undefined;
  const ensureDir = () => (ready ??= mkdir(dir, { recursive: true }));
  const file = (id: ChannelId) => join(dir, `${id}.json`);
  let seq = 0;
  return {
    async load(channelId) {
      try {
        return decodeChannelRecord(await readFile(file(channelId), 'utf8'));
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
        throw e;
      }
    },
    async list() {
      await ensureDir();
      const names = (await readdir(dir)).filter((n) => /^0x[0-9a-f]{64}\.json$/.test(n));
      return Promise.all(names.map(async (n) => decodeChannelRecord(await readFile(join(dir, n), 'utf8'))));
    },
    async save(record) {
      await ensureDir();
      const tmp = join(dir, `.${record.channelId}.${process.pid}.${seq++}.tmp`);
      try {
        const fh = await open(tmp, 'w');
        try {
          await fh.writeFile(encodeChannelRecord(record));
          await fh.sync();
        } finally {
          await fh.close();
        }
        await rename(tmp, file(record.channelId));
        const d = await open(dir, 'r');
        try {
          await d.sync();
        } finally {
          await d.close();
        }
      } catch (cause) {
        await unlink(tmp).catch(() => {});
        throw new TrickleError('STORE_FAILURE', `cannot write channel record in ${dir}`, { cause });
      }
    },
  };
}

/** An in-memory store, for tests only: nothing survives the process. */
export function memoryChannelStore(): ChannelStore {
  const m = new Map<ChannelId, string>();
  return {
    async load(id) {
      const t = m.get(id);
      return t === undefined ? undefined : decodeChannelRecord(t);
    },
    async list() {
      return [...m.values()].map(decodeChannelRecord);
    },
    async save(record) {
      m.set(record.channelId, encodeChannelRecord(record));
    },
  };
}
