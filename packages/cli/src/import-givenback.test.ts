import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { channelContext } from '@trickle/protocol/channel';
import { stateDigest } from '@trickle/protocol/eip712';
import { nobleSigner, signatureToHex } from '@trickle/protocol/signer';
import { lockCommitment, type Lock } from '@trickle/protocol/locks';
import type { Address, Bytes32, ChannelParams, SignedState, State } from '@trickle/protocol/types';
import { encodeChannelRecord, fileChannelStore, type DeviceChannelRecord } from '@trickle/client/store';
import { main } from './program.js';

/**
 * `trickle import` keeps the give-backs the device signed that the imported state does not reach
 * (`DeviceChannelRecord.givenBack`): the hub may still hold them, so the device must not claim their locks after the
 * import either. A backup newer than the store did replace the record whole, dropping the store's; the same holds
 * for the preimages it showed, the refused state the hub may hold, and equivocation evidence.
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

function unsigned(version: bigint, locks: readonly Lock[] = [], paidByHub = 0n): State {
  return {
    channelId: ctx.channelId,
    version,
    paidByDevice: version,
    paidByHub,
    round: 0n,
    ...lockCommitment(locks),
    isFinal: false,
  };
}

function signed(version: bigint, locks: readonly Lock[] = []): SignedState {
  const state = unsigned(version, locks);
  const d = stateDigest(ctx.separator, state);
  return { state, deviceSig: signatureToHex(device.signDigest(d)), hubSig: signatureToHex(hub.signDigest(d)) };
}

const record = (version: bigint, more: Partial<DeviceChannelRecord> = {}): DeviceChannelRecord => ({
  params,
  channelId: ctx.channelId,
  funding,
  latest: signed(version, more.locks),
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

describe('trickle import: what else the store knew', () => {
  const preimage = (b: string) => `0x${b.repeat(32)}` as Bytes32;
  const lock = (hash: Bytes32): Lock => ({ amount: 5n, hash, expiry: 2_000_000_000n, payer: 'hub' });

  it('keeps the store’s preimages of locks still pending in the imported state, and drops the others', async () => {
    const r = await importOver(
      record(2n, {
        locks: [lock(HASH), lock(OTHER)],
        preimages: [
          { hash: HASH, preimage: preimage('01') },
          { hash: OTHER, preimage: preimage('02') },
        ],
      }),
      record(4n, { locks: [lock(HASH)] }), // OTHER resolved by version 4; HASH still pending, claimed above it
    );
    expect(r.latest.state.version).toBe(4n);
    expect(r.locks).toEqual([lock(HASH)]);
    expect(r.preimages).toEqual([{ hash: HASH, preimage: preimage('01') }]);
  });

  it('keeps the paid preimages of both, each once, the newest 32', async () => {
    const paid = (n: number) =>
      Array.from({ length: n }, (_, i) => ({
        hash: `0x${i.toString(16).padStart(64, '0')}` as Bytes32,
        preimage: preimage('03'),
      }));
    const store = paid(30);
    const backup = [
      ...paid(30).slice(28),
      { hash: HASH, preimage: preimage('04') },
      { hash: OTHER, preimage: preimage('05') },
      { hash: `0x${'ef'.repeat(32)}` as Bytes32, preimage: preimage('06') },
    ];
    const r = await importOver(record(1n, { paidPreimages: store }), record(3n, { paidPreimages: backup }));
    expect(r.paidPreimages).toHaveLength(32);
    expect(r.paidPreimages![0]!.hash).toBe(store[1]!.hash);
    expect(r.paidPreimages!.slice(-3).map((p) => p.hash)).toEqual([HASH, OTHER, `0x${'ef'.repeat(32)}`]);
  });

  it('keeps the store’s refused state the imported one does not void, the one paying the hub the most', async () => {
    const storeRefused = { ...unsigned(6n), paidByDevice: 60n };
    const r = await importOver(
      record(1n, { signedVersion: 6n, refused: storeRefused }),
      record(3n, { signedVersion: 5n, refused: unsigned(5n) }),
    );
    expect(r.signedVersion).toBe(6n);
    expect(r.refused).toEqual(storeRefused);
    // A state both signed above it voids it.
    const voided = await importOver(record(1n, { signedVersion: 6n, refused: storeRefused }), record(7n));
    expect(voided.refused).toBeUndefined();
  });

  it('keeps the equivocation evidence of both', async () => {
    const offered = (v: bigint) => ({ state: { ...unsigned(v), paidByDevice: 99n }, sig: signed(v).hubSig! });
    const a = { version: 1n, held: signed(1n), offered: offered(1n) };
    const b = { version: 3n, held: signed(3n), offered: offered(3n) };
    const r = await importOver(record(1n, { evidence: [a] }), record(3n, { evidence: [b] }));
    expect(r.evidence).toEqual([a, b]);
  });
});
