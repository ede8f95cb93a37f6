import { afterEach, describe, expect, it } from 'vitest';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decodeChannelRecord, encodeChannelRecord, fileChannelStore, memoryChannelStore, type DeviceChannelRecord } from './store.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
const id = `0x${'ab'.repeat(32)}` as never;
const rec = (version: bigint): DeviceChannelRecord => ({
  params: {
    chainId: 1n,
    adjudicator: '0x5FbDB2315678afecb367f032d93F642f64180aa3' as never,
    device: '0x19E7E376E7C213B7E7e7e46cc70A5dD086DAff2A' as never,
    hub: '0x1563915e194D8CfBA1943570603F7606A3115508' as never,
    token: '0x0000000000000000000000000000000000000000' as never,
    challengeDuration: 60n,
    salt: `0x${'00'.repeat(32)}` as never,
  },
  channelId: id,
  funding: { device: 10n, hub: 0n },
  latest: { state: { channelId: id, version, paidByDevice: (1n << 200n) + version, paidByHub: 0n, round: 0n, isFinal: false }, deviceSig: `0x${'11'.repeat(65)}` as never, hubSig: `0x${'22'.repeat(65)}` as never },
  signedVersion: version,
});

describe('device stores', () => {
  it('file store: atomic replace, exact bigints, no temporary files left, list and load', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'trickle-store-'));
    dirs.push(dir);
    const s = fileChannelStore(dir);
    expect(await s.load(id)).toBeUndefined();
    await s.save(rec(1n));
    await Promise.all([s.save(rec(2n)), s.save(rec(3n))]);
    const got = await s.load(id);
    expect([2n, 3n]).toContain(got!.latest.state.version);
    expect(got!.latest.state.paidByDevice).toBe((1n << 200n) + got!.latest.state.version);
    expect(readdirSync(dir)).toEqual([`${id}.json`]);
    expect((await s.list()).length).toBe(1);
  });
  it('a torn or foreign file is refused with MALFORMED, not half-read', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'trickle-store-'));
    dirs.push(dir);
    writeFileSync(join(dir, `${id}.json`), '{"channelId": "0xab", "lat');
    await expect(fileChannelStore(dir).load(id)).rejects.toMatchObject({ code: 'MALFORMED' });
    expect(() => decodeChannelRecord('{"hello":1}')).toThrow(expect.objectContaining({ code: 'MALFORMED' }));
  });
  it('memory store round-trips through the same encoding', async () => {
    const s = memoryChannelStore();
    await s.save(rec(5n));
    expect(await s.load(id)).toEqual(decodeChannelRecord(encodeChannelRecord(rec(5n))));
  });
});
