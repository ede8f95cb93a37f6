import { describe, expect, it } from 'vitest';
import { readFileSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { encodeChannelRecord, fileChannelStore } from '@trickle/client/store';
import { TrickleError } from '@trickle/protocol/errors';
import type { StateSubmission } from './submission.js';
import { storeReader } from './storeReader.js';
import { SAMPLE_ID, sampleRecord } from '../../../../test/helpers/store-fixture.mjs';
import { tempDirs } from '../../../../test/helpers/temp-dirs.mjs';

const tmp = tempDirs('trickle-store-reader-');

const idA = SAMPLE_ID;
const idB = `0x${'cd'.repeat(32)}`;
/** A record as the device store writes it (placeholder signatures: the reader only parses; the watchtower verifies). */
const rec = sampleRecord;

function reader(dir: string, racyMs?: number) {
  const added: StateSubmission[] = [];
  const logs: string[] = [];
  let refuse: TrickleError | undefined;
  let tries = 0;
  const r = storeReader(
    dir,
    async (s) => {
      tries++;
      if (refuse) throw refuse;
      added.push(s);
    },
    (_level, event) => void logs.push(event),
    100,
    racyMs,
  );
  const versions = () => added.map((s) => `${s.latest.state.channelId.slice(0, 4)}:${s.latest.state.version}`);
  return {
    scan: () => r.scan(),
    added,
    logs,
    versions,
    refuseWith: (e: TrickleError | undefined) => void (refuse = e),
    tries: () => tries,
    refused: () => r.refused.map((x) => x.code),
    foreign: () => ({ count: r.foreign, only: r.onlyForeign }),
  };
}

describe('storeReader', () => {
  it('reads <id>.channel files as the device store writes them, and legacy <id>.json files', async () => {
    const dir = tmp();
    const store = fileChannelStore(dir);
    await store.save(rec(1n));
    writeFileSync(join(dir, `${idB}.json`), encodeChannelRecord(rec(4n, idB)));
    writeFileSync(join(dir, 'notes.txt'), 'not a record');
    const r = reader(dir);
    await r.scan();
    expect(r.versions().sort()).toEqual(['0xab:1', '0xcd:4']);
    expect(r.added.find((s) => s.latest.state.version === 1n)!.params.chainId).toBe(rec(1n).params.chainId);
    // Saved in place: the file keeps its size; the new state is handed over once, however often the file is read.
    await store.save(rec(2n));
    await r.scan();
    await r.scan();
    await store.save(rec(3n));
    await r.scan();
    await r.scan();
    expect(r.versions().sort()).toEqual(['0xab:1', '0xab:2', '0xab:3', '0xcd:4']);
    // The device migrates B: its .channel file replaces the .json (and wins over a .json left next to it).
    await store.save(rec(5n, idB));
    writeFileSync(join(dir, `${idB}.json`), encodeChannelRecord(rec(4n, idB)));
    await r.scan();
    expect(r.versions().filter((v) => v.startsWith('0xcd'))).toEqual(['0xcd:4', '0xcd:5']);
    expect(r.logs).toEqual([]);
    await store.close?.();
  });

  it('re-reads a file whose mtime is recent even when its tag is unchanged (a read racing an in-place save)', async () => {
    const dir = tmp();
    const path = join(dir, `${idA}.channel`);
    const store = fileChannelStore(dir);
    await store.save(rec(1n));
    await store.save(rec(2n));
    await store.close?.();
    const good = readFileSync(path);
    // What a read during the save of version 2 can see: the new mtime, version 2's slot not written yet (torn).
    const torn = Buffer.from(good);
    const size = torn.length / 2;
    const slotOf2 = [0, 1].find((i) => torn.readBigUInt64BE(i * size + 16) === 2n)!;
    torn.fill(0x58, slotOf2 * size + 100, slotOf2 * size + 140);
    const t = Math.floor(Date.now() / 1000) - 0.5; // recent, and exactly representable: the same mtime both times
    writeFileSync(path, torn);
    utimesSync(path, t, t);
    const racy = reader(dir);
    const trusting = reader(dir, 0);
    await racy.scan();
    await trusting.scan();
    expect(racy.versions()).toEqual(['0xab:1']);
    expect(trusting.versions()).toEqual(['0xab:1']);
    // The save completes: same inode, size and mtime.
    writeFileSync(path, good);
    utimesSync(path, t, t);
    await racy.scan();
    await trusting.scan();
    expect(racy.versions()).toEqual(['0xab:1', '0xab:2']);
    expect(trusting.versions()).toEqual(['0xab:1']); // what a size+mtime tag alone would have missed
  });

  it('logs an unreadable file once per change; retries a failure of the watchtower', async () => {
    const dir = tmp();
    writeFileSync(join(dir, `${idA}.channel`), Buffer.alloc(8192));
    const r = reader(dir);
    await r.scan();
    await r.scan();
    expect(r.logs).toEqual(['store-record-refused']);
    expect(r.refused()).toHaveLength(1);
    const store = fileChannelStore(dir);
    await store.save(rec(1n, idA)); // replaces the unreadable file
    await store.close?.();
    r.refuseWith(new TrickleError('STORE_FAILURE', 'db down'));
    await r.scan();
    r.refuseWith(undefined);
    await r.scan();
    expect(r.versions()).toEqual(['0xab:1']);
    expect(r.logs).toEqual(['store-record-refused', 'store-record-refused']);
  });

  it('hands a record refused for a reason that may pass over again, 1, 2, 4… passes apart; one refused for good once', async () => {
    const dir = tmp();
    const store = fileChannelStore(dir);
    await store.save(rec(1n, idA));
    const r = reader(dir, 0);
    // The watchtower's node does not show the channel yet (it lags): tried at passes 1, 2, 4 and 8, not in between.
    r.refuseWith(new TrickleError('WRONG_CHANNEL', 'never opened', { details: { channelId: idA, onChain: 'none' } }));
    const triedAt: number[] = [];
    for (let pass = 1; pass <= 10; pass++) {
      const before = r.tries();
      await r.scan();
      if (r.tries() > before) triedAt.push(pass);
    }
    expect(triedAt).toEqual([1, 2, 4, 8]);
    expect(r.logs.length).toBe(4);
    expect(r.refused()).toEqual(['WRONG_CHANNEL']);
    // It shows the channel now: taken at the next try (pass 16).
    r.refuseWith(undefined);
    for (let pass = 11; pass <= 16; pass++) await r.scan();
    expect(r.versions()).toEqual(['0xab:1']);
    expect(r.refused()).toEqual([]);
    // A record refused for good (a forged signature, a channel of another chain) is not handed over again.
    await store.save(rec(2n, idA));
    r.refuseWith(new TrickleError('BAD_SIGNATURE', 'forged'));
    for (let pass = 0; pass < 5; pass++) await r.scan();
    expect(r.refused()).toEqual(['BAD_SIGNATURE']);
    await store.save(rec(3n, idA));
    r.refuseWith(new TrickleError('WRONG_CHANNEL', 'another chain', { details: { submitted: {}, watched: {} } }));
    for (let pass = 0; pass < 5; pass++) await r.scan();
    expect(r.tries()).toBe(4 + 1 + 1 + 1);
    expect(r.refused()).toEqual([]); // not for this watchtower: nothing it should watch
    // …but the store's only record: counted as foreign, one warning for all those passes.
    expect(r.foreign()).toEqual({ count: 1, only: true });
    expect(r.logs.filter((e) => e === 'store-records-foreign')).toHaveLength(1);
    await store.save(rec(4n, idA));
    r.refuseWith(undefined);
    await r.scan();
    expect(r.foreign()).toEqual({ count: 0, only: false });
    await store.close?.();
  });
});
