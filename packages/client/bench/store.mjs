// Save latency of the device's file store: the earlier format (one JSON file per channel, replaced atomically:
// temporary file, fsync, rename, fsync of the directory) against the two-slot format of `fileChannelStore` (one
// positioned write and an fdatasync per save). Sequential saves of one channel; p50/p99 in ms.
// Usage: npx tsc -b packages/client && node packages/client/bench/store.mjs [saves=500] [dir=os.tmpdir()]
import { mkdtempSync, rmSync } from 'node:fs';
import { open, rename } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { encodeChannelRecord, fileChannelStore } from '@trickle/client/store';
import { sampleRecord } from '../../../test/helpers/store-fixture.mjs';
import { percentile } from '../../../bench/lib/util.mjs';

const saves = Number(process.argv[2] ?? 500);
const base = process.argv[3] ?? tmpdir();
const rec = sampleRecord;

/** The earlier `fileChannelStore.save`, as it was before the two-slot format. */
function atomicJsonStore(dir) {
  let seq = 0;
  return {
    async save(record) {
      const tmp = join(dir, `.${record.channelId}.${process.pid}.${seq++}.tmp`);
      const fh = await open(tmp, 'w');
      try {
        await fh.writeFile(encodeChannelRecord(record));
        await fh.sync();
      } finally {
        await fh.close();
      }
      await rename(tmp, join(dir, `${record.channelId}.json`));
      const d = await open(dir, 'r');
      try {
        await d.sync();
      } finally {
        await d.close();
      }
    },
  };
}

/** The floor: one positioned write of the same bytes into a preallocated block, then fdatasync (no format). */
function rawOverwrite(dir) {
  let fh;
  return {
    async save(record) {
      fh ??= await open(join(dir, 'raw'), 'w+').then(
        async (h) => (await h.write(Buffer.alloc(8192), 0, 8192, 0), await h.sync(), h),
      );
      const b = Buffer.from(encodeChannelRecord(record));
      await fh.write(b, 0, b.length, 64);
      await fh.datasync();
    },
    close: () => fh?.close(),
  };
}

async function measure(name, make) {
  const dir = mkdtempSync(join(base, 'trickle-store-bench-'));
  const store = make(dir);
  try {
    for (let v = 1n; v <= 20n; v++) await store.save(rec(v)); // warm-up (and the two-slot file's creation)
    const ms = [];
    for (let i = 0; i < saves; i++) {
      const t = process.hrtime.bigint();
      await store.save(rec(21n + BigInt(i)));
      ms.push(Number(process.hrtime.bigint() - t) / 1e6);
    }
    ms.sort((a, b) => a - b);
    return { name, saves, p50: percentile(ms, 50), p99: percentile(ms, 99), max: ms[ms.length - 1] };
  } finally {
    await store.close?.();
    rmSync(dir, { recursive: true, force: true });
  }
}

const results = [];
for (let round = 0; round < 2; round++) {
  results.push(await measure('atomic JSON (earlier)', atomicJsonStore));
  results.push(await measure('two-slot (fileChannelStore)', (dir) => fileChannelStore(dir)));
  results.push(await measure('raw overwrite + fdatasync', rawOverwrite));
}
for (const r of results)
  console.log(
    `${r.name.padEnd(28)} ${r.saves} saves  p50 ${r.p50.toFixed(3)} ms  p99 ${r.p99.toFixed(3)} ms  max ${r.max.toFixed(3)} ms`,
  );
