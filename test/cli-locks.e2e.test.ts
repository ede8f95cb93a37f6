import { afterAll, beforeAll, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startChainServer, type ChainServer } from '@trickle/devchain/chainServer';
import { deployAdjudicator, deployToken } from '@trickle/chain/deploy';
import { approve, mintTestToken } from '@trickle/chain/erc20';
import { Adjudicator } from '@trickle/chain/adjudicator';
import { channelContext } from '@trickle/protocol/channel';
import { stateDigest } from '@trickle/protocol/eip712';
import { hashPreimage, lockCommitment, type Lock } from '@trickle/protocol/locks';
import { nobleSigner, signatureToHex } from '@trickle/protocol/signer';
import type { Address, Bytes32, ChannelParams } from '@trickle/protocol/types';
import { fileChannelStore } from '@trickle/client/store';
import { runTrickle } from './helpers/trickle-bin.js';

/** `trickle show` lists a stored state's locks with their on-chain outcome; `trickle reveal` records a preimage. */
let server: ChainServer;
let dir: string;
let adjudicator: Address;
let token: Address;

beforeAll(async () => {
  server = await startChainServer({ accounts: 4 });
  dir = mkdtempSync(join(tmpdir(), 'trickle-cli-locks-'));
  adjudicator = (await deployAdjudicator(server.wallet(0))).address;
  token = (await deployToken(server.wallet(0), 'usdt')).address;
  await mintTestToken(server.wallet(0), token, server.addresses[2]!, 10n ** 12n);
  await mintTestToken(server.wallet(0), token, server.addresses[1]!, 10n ** 12n);
  writeFileSync(join(dir, 'key'), `${server.accounts[3]}\n`, { mode: 0o600 });
  writeFileSync(join(dir, 'device.key'), `${server.accounts[2]}\n`, { mode: 0o600 });
});
afterAll(async () => {
  await server?.stop();
  rmSync(dir, { recursive: true, force: true });
});

const trickle = (args: string[]) => runTrickle(args, { rpcUrl: server.url, adjudicator });

it('show lists the locks of the stored state; reveal records a preimage once; show then sends that lock to its payee', async () => {
  const params: ChannelParams = {
    chainId: server.chainId,
    adjudicator,
    device: server.addresses[2]!,
    hub: server.addresses[1]!,
    token,
    challengeDuration: 3600n,
    salt: `0x${randomBytes(32).toString('hex')}` as Bytes32,
  };
  await approve(server.wallet(2), token, adjudicator, 1_000_000n);
  const { channelId } = await new Adjudicator(adjudicator, server.wallet(2)).open(params, 1_000_000n);
  await approve(server.wallet(1), token, adjudicator, 1_000n);
  await new Adjudicator(adjudicator, server.wallet(1)).deposit(channelId, 1_000n);
  const preimage = `0x${randomBytes(32).toString('hex')}` as Bytes32;
  const expiry = BigInt(Math.floor(Date.now() / 1000) + 86_400);
  const locks: Lock[] = [
    { amount: 700n, hash: hashPreimage(preimage), expiry, payer: 'hub' },
    { amount: 55n, hash: hashPreimage(`0x${randomBytes(32).toString('hex')}` as Bytes32), expiry, payer: 'device' },
  ];
  const ctx = channelContext(params, { device: 0n, hub: 0n });
  const state = {
    channelId,
    version: 3n,
    paidByDevice: 0n,
    paidByHub: 0n,
    round: 0n,
    ...lockCommitment(locks),
    isFinal: false,
  };
  const digest = stateDigest(ctx.separator, state);
  const latest = {
    state,
    deviceSig: signatureToHex(nobleSigner(server.accounts[2]!).signDigest(digest)),
    hubSig: signatureToHex(nobleSigner(server.accounts[1]!).signDigest(digest)),
  };
  const store = join(dir, 'store');
  await fileChannelStore(store).save({
    params,
    channelId,
    funding: { device: 1_000_000n, hub: 1_000n },
    latest,
    signedVersion: 3n,
    locks,
  });

  const before = await trickle(['show', channelId, '--store', store, '--json']);
  expect(before.code).toBe(0);
  expect(before.json.store.locks).toEqual(locks.map((l) => ({ ...l, revealedAt: 0n, outcome: 'pending' })));
  expect(before.json.advice.join('\n')).toMatch(/trickle reveal <preimage>/);
  expect((await trickle(['show', channelId, '--store', store])).stdout).toMatch(
    /lock 1 +700 paid by the hub, hash 0x[0-9a-f]{64}, expires .* not revealed → pending/,
  );

  const revealed = await trickle(['reveal', preimage, '--key-file', join(dir, 'key'), '--json']);
  expect(revealed.code).toBe(0);
  expect(revealed.json).toMatchObject({ ok: true, hash: hashPreimage(preimage) });
  expect(revealed.json.revealedAt).toBeGreaterThan(0n);
  expect(revealed.json.tx).toMatch(/^0x[0-9a-f]{64}$/);
  expect(await new Adjudicator(adjudicator, server.provider).revealedAt(hashPreimage(preimage))).toBe(
    revealed.json.revealedAt,
  );
  // Again: nothing is sent, the first reveal's time stands.
  const again = await trickle(['reveal', preimage, '--key-file', join(dir, 'key'), '--json']);
  expect(again.json).toEqual({ ok: true, hash: hashPreimage(preimage), revealedAt: revealed.json.revealedAt });

  const after = await trickle(['show', channelId, '--store', store, '--json']);
  expect(after.json.store.locks.map((l: { outcome: string }) => l.outcome)).toEqual(['payee', 'pending']);
  expect((await trickle(['reveal', '0x1234', '--json'])).code).toBe(1);

  // force-close and settle send the stored lock list: past the deadline and the expiry, the revealed lock (700, the
  // hub's) pays the device and the unrevealed one (55, the device's) returns to it.
  const forced = await trickle(['force-close', channelId, '--store', store, '--key-file', join(dir, 'device.key')]);
  expect(forced.code).toBe(0);
  expect((await new Adjudicator(adjudicator, server.provider).getChannel(channelId)).locksRoot).toBe(state.locksRoot);
  await server.increaseTime(86_400n + 3_600n + 10n);
  const settled = await trickle(['settle', channelId, '--store', store, '--key-file', join(dir, 'key'), '--json']);
  expect(settled.code).toBe(0);
  expect(settled.json).toMatchObject({ payoutDevice: '1000700', payoutHub: '300' });
});

it('settle finds the lock list of a registration the store does not hold (an older state the hub force-closed with) in its transaction', async () => {
  const params: ChannelParams = {
    chainId: server.chainId,
    adjudicator,
    device: server.addresses[2]!,
    hub: server.addresses[1]!,
    token,
    challengeDuration: 3600n,
    salt: `0x${randomBytes(32).toString('hex')}` as Bytes32,
  };
  await approve(server.wallet(2), token, adjudicator, 1_000_000n);
  const { channelId } = await new Adjudicator(adjudicator, server.wallet(2)).open(params, 1_000_000n);
  await approve(server.wallet(1), token, adjudicator, 1_000n);
  await new Adjudicator(adjudicator, server.wallet(1)).deposit(channelId, 1_000n);
  const ctx = channelContext(params, { device: 0n, hub: 0n });
  const sign = (state: Parameters<typeof stateDigest>[1]) => {
    const digest = stateDigest(ctx.separator, state);
    return {
      state,
      deviceSig: signatureToHex(nobleSigner(server.accounts[2]!).signDigest(digest)),
      hubSig: signatureToHex(nobleSigner(server.accounts[1]!).signDigest(digest)),
    };
  };
  const expiry = BigInt(Math.floor(Date.now() / 1000) + 86_400);
  const preimage = `0x${randomBytes(32).toString('hex')}` as Bytes32;
  // Version 3: the hub locked 700 toward the device and the device 55 toward the hub.
  const l3: Lock[] = [
    { amount: 700n, hash: hashPreimage(preimage), expiry, payer: 'hub' },
    { amount: 55n, hash: hashPreimage(`0x${randomBytes(32).toString('hex')}` as Bytes32), expiry, payer: 'device' },
  ];
  const v3 = sign({
    channelId,
    version: 3n,
    paidByDevice: 0n,
    paidByHub: 0n,
    round: 0n,
    ...lockCommitment(l3),
    isFinal: false,
  });
  // Version 4: the device claimed the hub's lock; only the device's is pending. That is what the device's store holds.
  const l4 = [l3[1]!];
  const v4 = sign({
    channelId,
    version: 4n,
    paidByDevice: 0n,
    paidByHub: 700n,
    round: 0n,
    ...lockCommitment(l4),
    isFinal: false,
  });
  const store = join(dir, 'store-older');
  await fileChannelStore(store).save({
    params,
    channelId,
    funding: { device: 1_000_000n, hub: 1_000n },
    latest: v4,
    signedVersion: 4n,
    locks: l4,
  });
  // The hub force-closes with version 3; nobody challenges, the preimage is never revealed, and the hub vanishes.
  await new Adjudicator(adjudicator, server.wallet(1)).forceClose(v3, { locks: l3 });
  await server.increaseTime(86_400n + 3_600n + 10n);

  const settled = await trickle(['settle', channelId, '--store', store, '--key-file', join(dir, 'key'), '--json']);
  expect(settled.json).toMatchObject({ ok: true, version: 3n, payoutDevice: '1000000', payoutHub: '1000' });
  expect(settled.code).toBe(0);
  expect((await new Adjudicator(adjudicator, server.provider).getChannel(channelId)).status).toBe('closed');
});
