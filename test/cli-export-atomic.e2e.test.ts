import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startChainServer, type ChainServer } from '@trickle/devchain/chainServer';
import { decodeChannelRecord, fileChannelStore, type DeviceChannelRecord } from '@trickle/client/store';
import type { Bytes32 } from '@trickle/protocol/types';
import { runTrickle } from './helpers/trickle-bin.js';
import { openWatchedChannel } from './helpers/watched-channel.js';

/**
 * `trickle export --out <file>` over the previous backup, on a disk that fills up. The file was opened with truncation
 * and written in place: a write that failed (no space, a crash) left the backup empty or cut short, the previous good
 * one gone with it — exit 1, but an operator who exports to the same file every day was left with no backup at all.
 * The new record is now written beside it and renamed over it once durable: a failed export leaves the previous backup.
 * Needs root (a small tmpfs); skipped where it cannot be mounted.
 */
const mountPoint = mkdtempSync(join(tmpdir(), 'trickle-export-full-'));
const skipReason = (() => {
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', mountPoint], { stdio: 'pipe' });
    return undefined;
  } catch (e) {
    return `cannot mount a small tmpfs: ${(e as Error).message.split('\n')[0]}`;
  }
})();

describe.skipIf(skipReason !== undefined)('trickle export over a backup on a full disk', () => {
  let server: ChainServer;
  let dir: string;

  beforeAll(async () => {
    server = await startChainServer({ accounts: 3 });
    dir = mkdtempSync(join(tmpdir(), 'trickle-export-'));
  });
  afterAll(async () => {
    await server?.stop();
    execFileSync('umount', [mountPoint], { stdio: 'pipe' });
    rmSync(mountPoint, { recursive: true, force: true });
    rmSync(dir, { recursive: true, force: true });
  });

  it('a failed export leaves the previous backup whole (exit 1, STORE_FAILURE), and no temporary file', async () => {
    const { adj, params, channelId, sign } = await openWatchedChannel(server, { device: 1, hub: 2, salt: 'e4' });
    const record = (version: bigint, padding: number): DeviceChannelRecord => ({
      params,
      channelId,
      funding: { device: 10_000n, hub: 0n },
      latest: sign(version, version * 100n),
      signedVersion: version,
      // Preimages of locks the device paid (kept in the record, not checked by export): a record of several pages.
      ...(padding > 0 && {
        paidPreimages: Array.from({ length: padding }, (_, i) => ({
          hash: `0x${i.toString(16).padStart(64, 'a')}` as Bytes32,
          preimage: `0x${i.toString(16).padStart(64, 'b')}` as Bytes32,
        })),
      }),
    });
    const store = join(dir, 'store');
    const backup = join(mountPoint, 'backup.json');
    const exportTo = () =>
      runTrickle(['export', channelId, '--store', store, '--out', backup, '--json'], {
        rpcUrl: server.url,
        adjudicator: adj.address,
      });
    await fileChannelStore(store).save(record(2n, 0));
    expect((await exportTo()).code).toBe(0);
    expect(decodeChannelRecord(readFileSync(backup, 'utf8')).latest.state.version).toBe(2n);

    // The disk fills up; the next record needs more room than the backup it replaces.
    await fileChannelStore(store).save(record(3n, 32));
    const filler = openSync(join(mountPoint, 'filler'), 'w');
    try {
      for (;;) writeSync(filler, Buffer.alloc(4096));
    } catch {
      /* ENOSPC: full */
    } finally {
      closeSync(filler);
    }
    const failed = await exportTo();
    expect(failed.code, failed.stdout).toBe(1);
    expect(failed.json).toMatchObject({ ok: false, error: { code: 'STORE_FAILURE', exitCode: 1 } });
    expect(decodeChannelRecord(readFileSync(backup, 'utf8')).latest.state.version).toBe(2n);
    expect(readdirSync(mountPoint).sort()).toEqual(['backup.json', 'filler']);

    // Room again: the export replaces it.
    rmSync(join(mountPoint, 'filler'));
    expect((await exportTo()).code).toBe(0);
    expect(decodeChannelRecord(readFileSync(backup, 'utf8')).latest.state.version).toBe(3n);
  });
});
