import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startChainServer, type ChainServer } from '@trickle/devchain/chainServer';
import { encodeChannelRecord, fileChannelStore } from '@trickle/client/store';
import { runTrickle } from './helpers/trickle-bin.js';
import { openWatchedChannel } from './helpers/watched-channel.js';

/**
 * The CLI's writing commands (`import`, `close`, `force-close`) and a device process running on the same store. The
 * device holds its store's lock while it runs and writes its in-memory record over anything else written there (the
 * last write wins). `trickle import` wrote the backup anyway and said "imported" (exit 0): the device's next save
 * undid it. `force-close` read a record the device was moving past and sent the transaction. Both now take the store's
 * lock first: a live holder is refused (exit 1, STORE_FAILURE, nothing written or sent); once the device has stopped
 * they go ahead. And `force-close` marked the record `closing` after its transaction, a failed mark only a warning
 * (exit 0): it is now written before, and a mark the store cannot write stops the command before anything is sent.
 */

/** Mounts `file` read-only over itself; undefined when this machine cannot (not root, no mount): the case is skipped. */
function readOnly(file: string): (() => void) | undefined {
  try {
    execFileSync('mount', ['--bind', file, file], { stdio: 'pipe' });
  } catch {
    return undefined;
  }
  try {
    execFileSync('mount', ['-o', 'remount,ro,bind', file], { stdio: 'pipe' });
  } catch {
    execFileSync('umount', [file], { stdio: 'pipe' });
    return undefined;
  }
  return () => execFileSync('umount', [file], { stdio: 'pipe' });
}
const DEVICE = 1;
const HUB = 2;

describe('trickle writing commands on a store a device process holds', () => {
  let server: ChainServer;
  let dir: string;

  beforeAll(async () => {
    server = await startChainServer({ accounts: 4 });
    dir = mkdtempSync(join(tmpdir(), 'trickle-cli-store-lock-'));
  });
  afterAll(async () => {
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('import, close and force-close refuse a held store (exit 1, nothing written or sent) and go ahead once it is released', async () => {
    const { adj, channelId, sign, record } = await openWatchedChannel(server, { device: DEVICE, hub: HUB, salt: 'c7' });
    const trickle = (args: string[]) =>
      runTrickle([...args, '--json'], { rpcUrl: server.url, adjudicator: adj.address });
    writeFileSync(join(dir, 'key'), `${server.accounts[DEVICE]}\n`, { mode: 0o600 });
    const backup = join(dir, 'backup.json');
    writeFileSync(backup, encodeChannelRecord(record(sign(3n, 300n))));

    // The device process (this one) runs on the store: it took the lock, as the client does when it connects.
    const storeDir = join(dir, 'store');
    const device = fileChannelStore(storeDir);
    await device.acquire!();
    await device.save(record(sign(2n, 200n)));
    const nonce = () => server.provider.getTransactionCount(server.addresses[DEVICE]!);
    const before = await nonce();

    const imported = await trickle(['import', backup, '--store', storeDir]);
    expect(imported.code, imported.stdout).toBe(1);
    expect(imported.json).toMatchObject({ ok: false, error: { code: 'STORE_FAILURE', exitCode: 1 } });
    expect(imported.stderr).toContain(`in use by process ${process.pid}`);
    expect((await fileChannelStore(storeDir).load(channelId))?.latest.state.version).toBe(2n);

    for (const command of ['force-close', 'close']) {
      const r = await trickle([command, channelId, '--store', storeDir, '--key-file', join(dir, 'key')]);
      expect(r.code, `${command}: ${r.stdout}`).toBe(1);
      expect(r.json).toMatchObject({ ok: false, error: { code: 'STORE_FAILURE', exitCode: 1 } });
    }
    expect(await nonce()).toBe(before);
    expect((await adj.getChannel(channelId)).status).toBe('open');

    // The device stopped: the same commands go ahead.
    await device.close!();
    expect((await trickle(['import', backup, '--store', storeDir])).code).toBe(0);
    const forced = await trickle(['force-close', channelId, '--store', storeDir, '--key-file', join(dir, 'key')]);
    expect(forced.code, forced.stdout).toBe(0);
    expect(await adj.getChannel(channelId)).toMatchObject({ status: 'closing', version: 3n });
  });

  it('force-close marks the record closing before it sends: a mark the store cannot write stops it (exit 1, nothing sent)', async (t) => {
    const { adj, channelId, sign, record } = await openWatchedChannel(server, { device: DEVICE, hub: HUB, salt: 'c8' });
    const storeDir = join(dir, 'store-ro');
    await fileChannelStore(storeDir).save(record(sign(2n, 200n)));
    writeFileSync(join(dir, 'key'), `${server.accounts[DEVICE]}\n`, { mode: 0o600 });
    const file = join(storeDir, `${channelId}.channel`);
    const release = readOnly(file);
    if (!release) return t.skip('cannot bind-mount a file read-only here (needs root)');
    const args = ['force-close', channelId, '--store', storeDir, '--key-file', join(dir, 'key'), '--json'];
    const chain = { rpcUrl: server.url, adjudicator: adj.address };
    const before = await server.provider.getTransactionCount(server.addresses[DEVICE]!);
    let refused;
    try {
      refused = await runTrickle(args, chain);
    } finally {
      release();
    }
    expect(refused.code, refused.stdout).toBe(1);
    expect(refused.json).toMatchObject({ ok: false, error: { code: 'STORE_FAILURE', exitCode: 1 } });
    expect(await server.provider.getTransactionCount(server.addresses[DEVICE]!)).toBe(before);
    expect((await adj.getChannel(channelId)).status).toBe('open');

    const forced = await runTrickle(args, chain);
    expect(forced.code, forced.stdout).toBe(0);
    expect((await fileChannelStore(storeDir).load(channelId))?.closing).toBe('force');
    expect(await adj.getChannel(channelId)).toMatchObject({ status: 'closing', version: 2n });
  });
});
