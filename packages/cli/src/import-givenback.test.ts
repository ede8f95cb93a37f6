import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { channelContext } from '@trickle/protocol/channel';
import { stateDigest } from '@trickle/protocol/eip712';
import { nobleSigner, signatureToHex } from '@trickle/protocol/signer';
import type { Address, Bytes32, ChannelParams, SignedState, State } from '@trickle/protocol/types';
import { encodeChannelRecord, fileChannelStore, type DeviceChannelRecord } from '@trickle/client/store';
import { main } from './program.js';

/**
 * `trickle import` keeps the give-backs the device signed that the imported state does not reach
 * (`DeviceChannelRecord.givenBack`): the hub may still hold them, so the device must not claim their locks after the
 * import either. A backup newer than the store did replace the record whole, dropping the store's.
 */
const device = nobleSigner(`0x${'11'.repeat(32)}`);
const hub = nobleSigner(`0x${'22'.repeat(32)}`);
const params: ChannelParams = {
  chainId: 31337n,
  adjudicator: '0x5FbDB2315678afecb367f032d93F642f64180aa3' as Address,
  device: device.address,
  hub: hub.address,
  token: '0x0000000000000000000000000000000000000000' as Address,
  challengeDuration: 3600n,
  salt: `0x${'00'.repeat(32)}` as Bytes32,
};
const funding = { device: 10_000n, hub: 10_000n };
const ctx = channelContext(params, funding);
const HASH = `0x${'ab'.repeat(32)}` as Bytes32;
const OTHER = `0x${'cd'.repeat(32)}` as Bytes32;

function signed(version: bigint): SignedState {
  const state: State = {
    channelId: ctx.channelId,
    version,
    paidByDevice: version,
    paidByHub: 0n,
    round: 0n,
    locksRoot: `0x${'00'.repeat(32)}` as Bytes32,
    lockedByDevice: 0n,
    lockedByHub: 0n,
    isFinal: false,
  };
  const d = stateDigest(ctx.separator, state);
  return { state, deviceSig: signatureToHex(device.signDigest(d)), hubSig: signatureToHex(hub.signDigest(d)) };
}

const record = (version: bigint, more: Partial<DeviceChannelRecord> = {}): DeviceChannelRecord => ({
  params,
  channelId: ctx.channelId,
  funding,
  latest: signed(version),
  signedVersion: version,
  ...more,
});

const capture = () => {
  const io = {
    stdout: '',
    stderr: '',
    out: (s: string) => void (io.stdout += s),
    err: (s: string) => void (io.stderr += s),
  };
  return io;
};

let dir: string | undefined;
afterEach(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
  dir = undefined;
});

async function importOver(existing: DeviceChannelRecord, backup: DeviceChannelRecord): Promise<DeviceChannelRecord> {
  dir = await mkdtemp(join(tmpdir(), 'trickle-import-'));
  const storeDir = join(dir, 'store');
  const store = fileChannelStore(storeDir);
  await store.save(existing);
  await store.close?.();
  const file = join(dir, 'backup.json');
  await writeFile(file, encodeChannelRecord(backup));
  const io = capture();
  expect(await main(['import', file, '--store', storeDir], io), io.stderr).toBe(0);
  const after = fileChannelStore(storeDir);
  const r = (await after.load(ctx.channelId))!;
  await after.close?.();
  return r;
}

describe('trickle import: give-backs the device signed', () => {
  it('keeps the store’s and the backup’s that the imported state does not reach', async () => {
    const r = await importOver(
      record(1n, { signedVersion: 9n, givenBack: [{ hash: HASH, version: 8n }] }),
      record(3n, { signedVersion: 5n, givenBack: [{ hash: OTHER, version: 5n }] }),
    );
    expect(r.latest.state.version).toBe(3n);
    expect(r.signedVersion).toBe(9n);
    expect(r.givenBack).toEqual([
      { hash: OTHER, version: 5n },
      { hash: HASH, version: 8n },
    ]);
  });

  it('drops those the imported state reaches', async () => {
    const r = await importOver(
      record(1n, { signedVersion: 9n, givenBack: [{ hash: HASH, version: 8n }] }),
      record(8n, { givenBack: [{ hash: OTHER, version: 5n }] }),
    );
    expect(r.latest.state.version).toBe(8n);
    expect(r.givenBack).toBeUndefined();
  });
});
