import { describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import {
  copyFileSync,
  existsSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  statSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  CHANNEL_RECORD_FILE,
  decodeChannelRecord,
  encodeChannelRecord,
  fileChannelStore,
  memoryChannelStore,
  readChannelRecordFile,
  type DeviceChannelRecord,
} from './store.js';
import { SAMPLE_ID, sampleRecord } from '../../../test/helpers/store-fixture.mjs';
import { killAfterLines } from '../../../test/helpers/kill-after-lines.mjs';
import { tempDirs } from '../../../test/helpers/temp-dirs.mjs';

const tmp = tempDirs('trickle-store-');
const id = SAMPLE_ID as never;
const rec = sampleRecord;
/** A record whose JSON is longer than one 4096-byte slot (extra fields are kept by the encoding). */
const bigRec = (version: bigint): DeviceChannelRecord =>
  ({ ...rec(version), note: 'x'.repeat(5_000) }) as DeviceChannelRecord;
const versionOf = (r: DeviceChannelRecord | undefined) => r?.latest.state.version;
const expectIntact = (r: DeviceChannelRecord | undefined) =>
  expect(r!.latest.state.paidByDevice).toBe((1n << 200n) + r!.latest.state.version);

/** The slots of a channel file, parsed independently of the store (layout documented in store.ts). */
function slots(path: string) {
  const b = readFileSync(path);
  const size = b.length / 2;
  return [0, 1].map((i) => ({
    offset: i * size,
    size,
    magic: b.subarray(i * size, i * size + 4).toString('latin1'),
    sequence: b.readBigUInt64BE(i * size + 16),
    payload: b.subarray(i * size + 64, i * size + 64 + b.readUInt32BE(i * size + 12)).toString('utf8'),
  }));
}
/** Overwrite bytes in the middle of a slot's payload, as a torn write would leave them. */
function tear(path: string, slot: { offset: number }) {
  const b = readFileSync(path);
  b.fill(0x58, slot.offset + 64 + 300, slot.offset + 64 + 340);
  writeFileSync(path, b);
}
/** This process's open descriptors on files in `dir` (Linux; undefined elsewhere). */
function fdsIn(dir: string): string[] | undefined {
  if (!existsSync('/proc/self/fd')) return undefined;
  return readdirSync('/proc/self/fd').filter((fd) => {
    try {
      return readlinkSync(`/proc/self/fd/${fd}`).startsWith(`${dir}/`);
    } catch {
      return false; // closed meanwhile
    }
  });
}
const openFilesIn = (dir: string) => fdsIn(dir)?.length;

describe('device stores', () => {
  // No fdatasync follows an in-place write: the channel file's descriptor must carry O_DSYNC, on both paths that open
  // it (creating the file, and reopening an existing one).
  it.runIf(existsSync('/proc/self/fdinfo'))(
    'keeps channel files open with O_DSYNC, so each save is durable when its write returns',
    async () => {
      const dir = tmp();
      const flagsOf = () =>
        fdsIn(dir)!.map((fd) =>
          parseInt(/^flags:\s+([0-7]+)/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'))![1]!, 8),
        );
      const O_DSYNC = 0o10000; // Linux
      const s = fileChannelStore(dir);
      await s.save(rec(1n)); // creates the file (temporary file, renamed)
      await s.save(rec(2n)); // in place
      expect(flagsOf().length).toBe(1);
      expect(flagsOf().every((f) => (f & O_DSYNC) !== 0)).toBe(true);
      await s.close!();
      const again = fileChannelStore(dir);
      await again.save(rec(3n)); // reopens the existing file
      expect(flagsOf().length).toBe(1);
      expect(flagsOf().every((f) => (f & O_DSYNC) !== 0)).toBe(true);
      expect((await again.load(id))!.latest.state.version).toBe(3n);
      await again.close!();
    },
  );

  it('file store: two-slot file per channel, exact bigints, no temporary files left, list and load', async () => {
    const dir = tmp();
    const s = fileChannelStore(dir);
    expect(await s.load(id)).toBeUndefined();
    await s.save(rec(1n));
    await Promise.all([s.save(rec(2n)), s.save(rec(3n))]);
    const got = await s.load(id);
    expect([2n, 3n]).toContain(got!.latest.state.version);
    expect(got!.latest.state.paidByDevice).toBe((1n << 200n) + got!.latest.state.version);
    expect(got).toEqual(rec(got!.latest.state.version));
    expect(readdirSync(dir)).toEqual([`${id}.channel`]);
    expect(CHANNEL_RECORD_FILE.test(`${id}.channel`)).toBe(true);
    expect(statSync(join(dir, `${id}.channel`)).size).toBe(8192);
    expect((await s.list()).length).toBe(1);
    // Each slot's payload is the record's JSON, readable as such; the two slots hold consecutive sequence numbers.
    const [a, b] = slots(join(dir, `${id}.channel`));
    expect([a!.magic, b!.magic]).toEqual(['TRKL', 'TRKL']);
    expect([a!.sequence, b!.sequence].sort()).toEqual([2n, 3n]);
    expect(decodeChannelRecord(a!.payload)).toEqual(rec(a!.sequence));
    expect(await readChannelRecordFile(join(dir, `${id}.channel`))).toEqual(got);
    await s.close?.();
  });
  it('a torn or foreign file is refused with MALFORMED, not half-read', async () => {
    const dir = tmp();
    writeFileSync(join(dir, `${id}.json`), '{"channelId": "0xab", "lat');
    await expect(fileChannelStore(dir).load(id)).rejects.toMatchObject({ code: 'MALFORMED' });
    expect(() => decodeChannelRecord('{"hello":1}')).toThrow(expect.objectContaining({ code: 'MALFORMED' }));
    writeFileSync(join(dir, `${id}.channel`), 'not a channel file');
    await expect(fileChannelStore(dir).load(id)).rejects.toMatchObject({ code: 'MALFORMED' });
  });
  it('list() names the broken file of many (zeroed, empty, foreign) and refuses a record under another channel name', async () => {
    const dir = tmp();
    const s = fileChannelStore(dir);
    await s.save(rec(1n));
    const other = `0x${'cd'.repeat(32)}`;
    const path = join(dir, `${other}.channel`);
    copyFileSync(join(dir, `${id}.channel`), path); // a restored backup under the wrong name
    await expect(s.list()).rejects.toMatchObject({ code: 'MALFORMED', details: { channelId: other, path } });
    for (const bytes of [Buffer.alloc(8192), Buffer.alloc(0), Buffer.from('{"hello":1}')]) {
      writeFileSync(path, bytes);
      const e = await s.list().then(
        () => undefined,
        (x: unknown) => x as { code: string; details: { path?: string }; shortMessage: string },
      );
      expect(e).toMatchObject({ code: 'MALFORMED', details: { path } });
      expect(e!.shortMessage).toContain(path);
    }
    unlinkSync(path);
    expect((await s.list()).map((r) => r.channelId)).toEqual([id]);
    await s.close?.();
  });
  it('memory store round-trips through the same encoding', async () => {
    const s = memoryChannelStore();
    await s.save(rec(5n));
    expect(await s.load(id)).toEqual(decodeChannelRecord(encodeChannelRecord(rec(5n))));
  });

  it('a torn slot is ignored: load returns the other slot; both torn is MALFORMED; the next save overwrites the torn slot', async () => {
    const dir = tmp();
    const path = join(dir, `${id}.channel`);
    const s = fileChannelStore(dir);
    await s.save(rec(1n));
    await s.save(rec(2n));
    await s.close?.();
    const holding = (v: bigint) => slots(path).find((x) => decodeChannelRecord(x.payload).latest.state.version === v)!;
    const v1 = holding(1n);
    const v2 = holding(2n);
    expect(v1.offset).not.toBe(v2.offset);
    tear(path, v2);
    expect(versionOf(await fileChannelStore(dir).load(id))).toBe(1n);
    expect(versionOf(await readChannelRecordFile(path))).toBe(1n);
    // A save writes the slot not holding the newest intact record: the torn one, not v1's.
    const s2 = fileChannelStore(dir);
    await s2.save(rec(3n));
    await s2.close?.();
    const rewritten = slots(path)[v2.offset === 0 ? 0 : 1]!;
    expect(rewritten.sequence).toBe(v1.sequence + 1n); // newest intact + 1
    expect(decodeChannelRecord(rewritten.payload)).toEqual(rec(3n));
    expect(versionOf(await fileChannelStore(dir).load(id))).toBe(3n);
    tear(path, slots(path)[v2.offset === 0 ? 0 : 1]!);
    expect(versionOf(await fileChannelStore(dir).load(id))).toBe(1n);
    tear(path, v1);
    await expect(fileChannelStore(dir).load(id)).rejects.toMatchObject({ code: 'MALFORMED' });
    await expect(fileChannelStore(dir).list()).rejects.toMatchObject({ code: 'MALFORMED' });
    await expect(readChannelRecordFile(path)).rejects.toMatchObject({ code: 'MALFORMED' });
    // A file with no intact slot is replaced whole by the next save.
    const s3 = fileChannelStore(dir);
    await s3.save(rec(4n));
    expect(await s3.load(id)).toEqual(rec(4n));
    await s3.close?.();
  });

  it('a record that outgrows the slot grows the file (atomic replace); later saves alternate slots in place again', async () => {
    const dir = tmp();
    const path = join(dir, `${id}.channel`);
    const s = fileChannelStore(dir, { slotSize: 4096 });
    await s.save(rec(1n));
    expect(statSync(path).size).toBe(2 * 4096);
    const ino = statSync(path).ino;
    await s.save(rec(2n));
    expect(statSync(path).ino).toBe(ino); // in place
    await s.save(bigRec(3n));
    expect(statSync(path).size).toBe(2 * 8192);
    expect(statSync(path).ino).not.toBe(ino); // a new file renamed over
    expect(await s.load(id)).toEqual(bigRec(3n));
    const grown = statSync(path).ino;
    const newestSlot = () => slots(path).reduce((a, b) => (b.sequence > a.sequence ? b : a)).offset;
    const order: number[] = [newestSlot()];
    for (const v of [4n, 5n, 6n]) {
      await s.save(rec(v));
      expect(await s.load(id)).toEqual(rec(v));
      order.push(newestSlot());
    }
    expect(order).toEqual([0, 8192, 0, 8192]);
    expect(statSync(path).ino).toBe(grown);
    expect(statSync(path).size).toBe(2 * 8192);
    expect(readdirSync(dir)).toEqual([`${id}.channel`]);
    expect(() => fileChannelStore(dir, { slotSize: 5000 })).toThrow(
      expect.objectContaining({ code: 'INVALID_ARGUMENT' }),
    );
    await s.close?.();
  });

  it('a legacy <id>.json is read by load and list; the next save writes <id>.channel and removes the .json', async () => {
    const dir = tmp();
    writeFileSync(join(dir, `${id}.json`), encodeChannelRecord(rec(7n)));
    const s = fileChannelStore(dir);
    expect(await s.load(id)).toEqual(rec(7n));
    expect(await s.list()).toEqual([rec(7n)]);
    expect(await readChannelRecordFile(join(dir, `${id}.json`))).toEqual(rec(7n));
    await s.save(rec(8n));
    expect(readdirSync(dir)).toEqual([`${id}.channel`]);
    expect(await s.load(id)).toEqual(rec(8n));
    expect(await s.list()).toEqual([rec(8n)]);
    // A .json left next to a .channel file (a crash between the two steps of the migration) is ignored.
    writeFileSync(join(dir, `${id}.json`), encodeChannelRecord(rec(7n)));
    expect(await fileChannelStore(dir).load(id)).toEqual(rec(8n));
    expect(await fileChannelStore(dir).list()).toEqual([rec(8n)]);
    await s.close?.();
  });

  it('concurrent saves of one channel run in call order and never tear the file', async () => {
    const dir = tmp();
    const s = fileChannelStore(dir);
    await Promise.all(Array.from({ length: 50 }, (_, i) => s.save(rec(BigInt(i + 1)))));
    const got = await s.load(id);
    expect(versionOf(got)).toBe(50n);
    expectIntact(got);
    expect(await fileChannelStore(dir).load(id)).toEqual(rec(50n));
    expect(readdirSync(dir)).toEqual([`${id}.channel`]);
    await s.close?.();
  });

  it('a failed save rejects with STORE_FAILURE and leaves the previous record; the next save rewrites the file', async () => {
    const dir = tmp();
    const path = join(dir, `${id}.channel`);
    const s = fileChannelStore(dir);
    await s.save(rec(1n));
    await s.save(rec(2n));
    const ino = statSync(path).ino;
    const huge = { ...rec(3n), note: 'x'.repeat(17 * 1024 * 1024) } as DeviceChannelRecord; // beyond the largest slot
    await expect(s.save(huge)).rejects.toMatchObject({ code: 'STORE_FAILURE' });
    expect(await s.load(id)).toEqual(rec(2n));
    await s.save(rec(3n));
    expect(await s.load(id)).toEqual(rec(3n));
    expect(statSync(path).ino).not.toBe(ino);
    expect(readdirSync(dir)).toEqual([`${id}.channel`]);
    await expect(s.save(rec(1n, '0xAB'))).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await s.close?.();
  });

  it('keeps at most maxOpenFiles files open between saves; close() closes them and the store stays usable', async () => {
    const dir = tmp();
    const ids = Array.from({ length: 5 }, (_, i) => `0x${i.toString(16).padStart(2, '0').repeat(32)}`);
    const s = fileChannelStore(dir, { maxOpenFiles: 2 });
    for (const v of [1n, 2n]) for (const c of ids) await s.save(rec(v, c));
    // An evicted file is closed in the background (a save does not wait for it): give that close a moment, bounded.
    let open = openFilesIn(dir);
    for (let i = 0; i < 100 && open !== undefined && open > 2; i++) {
      await new Promise((r) => setTimeout(r, 5));
      open = openFilesIn(dir);
    }
    if (open !== undefined) expect(open).toBeLessThanOrEqual(2);
    expect((await s.list()).map(versionOf)).toEqual([2n, 2n, 2n, 2n, 2n]);
    await s.close!();
    if (open !== undefined) expect(openFilesIn(dir)).toBe(0);
    await s.save(rec(3n, ids[0]));
    expect(versionOf(await s.load(ids[0] as never))).toBe(3n);
    await s.close!();
  });

  it.runIf(existsSync('/proc/self/fd'))(
    'a store dropped without close() has its files closed, without the FileHandle GC warning',
    async () => {
      const dir = tmp();
      const script = `
      import { readdirSync, readlinkSync } from 'node:fs';
      import { fileChannelStore } from '@trickle/client/store';
      const dir = process.env.STORE_DIR;
      const open = () => readdirSync('/proc/self/fd').filter((fd) => { try { return readlinkSync('/proc/self/fd/' + fd).startsWith(dir + '/'); } catch { return false; } }).length;
      let store = fileChannelStore(dir);
      for (const c of ['0x' + 'ab'.repeat(32), '0x' + 'cd'.repeat(32)]) await store.save({ channelId: c, params: {}, latest: { state: { version: 1n } } });
      const before = open();
      store = undefined;
      for (let i = 0; i < 50 && open() > 0; i++) { globalThis.gc(); await new Promise((r) => setTimeout(r, 10)); }
      console.log(JSON.stringify({ before, after: open() }));
    `;
      const proc = spawn(process.execPath, ['--expose-gc', '--input-type=module', '-e', script], {
        env: { ...process.env, STORE_DIR: dir },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let out = '';
      let err = '';
      proc.stdout.on('data', (d: Buffer) => (out += d.toString()));
      proc.stderr.on('data', (d: Buffer) => (err += d.toString()));
      const code = await new Promise<number | null>((resolve) => proc.on('exit', resolve));
      expect(code, err).toBe(0);
      expect(JSON.parse(out)).toEqual({ before: 2, after: 0 });
      expect(err).not.toMatch(/garbage collection/);
    },
  );

  it('a SIGKILL at any point leaves the last resolved save or a later one, never a torn record', async () => {
    const child = fileURLToPath(new URL('./store-crash-child.mjs', import.meta.url));
    const dir = tmp();
    let start = 1n;
    for (let round = 0; round < 3; round++) {
      const { lines, stderr: err } = await killAfterLines(child, [dir, String(start), '5000', '20000'], 250);
      const printed = lines.filter((l) => /^\d+$/.test(l)).map(BigInt);
      expect(printed.length, `child printed too little (stderr: ${err})`).toBeGreaterThan(200);
      const last = printed[printed.length - 1]!;
      const got = await fileChannelStore(dir).load(id);
      expect(versionOf(got)).toBeGreaterThanOrEqual(last);
      expect(versionOf(got)).toBeLessThanOrEqual(last + 1n);
      expect(got).toEqual(rec(versionOf(got)!));
      start = versionOf(got)! + 1n;
    }
    expect(readdirSync(dir).filter((n) => !n.endsWith('.tmp'))).toEqual([`${id}.channel`]);
  });
});
