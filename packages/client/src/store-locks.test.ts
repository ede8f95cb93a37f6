/** A device record with pending locks saved by the real file store (two-slot file, fsync) and read back exactly. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { hashPreimage, lockCommitment, type Lock } from '@trickle/protocol/locks';
import type { Address, Bytes32, ChannelId, SignatureHex } from '@trickle/protocol/types';
import { fileChannelStore, readChannelRecordFile, type DeviceChannelRecord } from './store.js';

const dir = mkdtempSync(join(tmpdir(), 'trickle-device-locks-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const h = (n: number, bytes = 32) => ('0x' + n.toString(16).padStart(bytes * 2, '0')) as `0x${string}`;

it('the file store round-trips a record whose latest state holds locks in both directions', async () => {
  const locks: Lock[] = [
    { amount: 1n, hash: hashPreimage(h(1) as Bytes32), expiry: 1_900_000_000n, payer: 'hub' },
    { amount: (1n << 255n) - 1n, hash: hashPreimage(h(2) as Bytes32), expiry: (1n << 64n) - 1n, payer: 'device' },
  ];
  const channelId = h(9) as ChannelId;
  const record: DeviceChannelRecord = {
    params: {
      chainId: 31337n,
      adjudicator: h(1, 20) as Address,
      device: h(2, 20) as Address,
      hub: h(3, 20) as Address,
      token: h(0, 20) as Address,
      challengeDuration: 60n,
      salt: h(5) as Bytes32,
    },
    channelId,
    funding: { device: 1n << 95n, hub: 5n },
    latest: {
      state: {
        channelId,
        version: 3n,
        paidByDevice: 0n,
        paidByHub: 0n,
        round: 0n,
        ...lockCommitment(locks),
        isFinal: false,
      },
      deviceSig: h(1, 65) as SignatureHex,
      hubSig: h(2, 65) as SignatureHex,
    },
    signedVersion: 3n,
    locks,
  };
  const store = fileChannelStore(dir);
  await store.save(record);
  await store.close?.();
  expect(await fileChannelStore(dir).load(channelId)).toEqual(record);
  expect((await readChannelRecordFile(join(dir, `${channelId}.channel`))).locks).toEqual(locks);
});
