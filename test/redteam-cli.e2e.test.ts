import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startChainServer, type ChainServer } from '@trickle/devchain/chainServer';
import { deployAdjudicator, deployToken } from '@trickle/chain/deploy';
import { approve, mintTestToken } from '@trickle/chain/erc20';
import { Adjudicator } from '@trickle/chain/adjudicator';
import { channelContext } from '@trickle/protocol/channel';
import { stateDigest } from '@trickle/protocol/eip712';
import { nobleSigner, signatureToHex } from '@trickle/protocol/signer';
import { parseJson } from '@trickle/protocol/json';
import { NO_LOCKS, type Address, type Bytes32, type ChannelParams, type SignedState } from '@trickle/protocol/types';
import { fileChannelStore } from '@trickle/client/store';
import { stringifyJson } from '@trickle/protocol/json';
import { balanceOf } from '@trickle/chain/erc20';
import { createWatchtower } from '@trickle/cli/watch/watchtower';
import { runTrickle } from './helpers/trickle-bin.js';

/**
 * The `trickle` bin given what an operator gets wrong: a store record for another chain, a key that is not the
 * channel's, a store directory that does not exist. Each ends with a documented non-zero exit and a typed error,
 * and no transaction leaves (the key's nonce is unchanged, the channel's on-chain record too).
 */
const HUB = 1;

describe('red team: the trickle CLI given the wrong inputs', () => {
  let server: ChainServer;
  let dir: string;
  let adjudicator: Address;
  let token: Address;
  const keyFile = (i: number) => join(dir, `key-${i}`);

  beforeAll(async () => {
    server = await startChainServer({ accounts: 10 });
    dir = mkdtempSync(join(tmpdir(), 'trickle-cli-rt-'));
    adjudicator = (await deployAdjudicator(server.wallet(0))).address;
    token = (await deployToken(server.wallet(0), 'usdt')).address;
    for (const i of [1, 2, 3]) await mintTestToken(server.wallet(0), token, server.addresses[i]!, 10n ** 12n);
    for (let i = 0; i < 10; i++) writeFileSync(keyFile(i), `${server.accounts[i]}\n`, { mode: 0o600 });
  });
  afterAll(async () => {
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const trickle = (args: string[]) => runTrickle([...args, '--json'], { rpcUrl: server.url, adjudicator });

  function sign(
    params: ChannelParams,
    device: number,
    version: bigint,
    paidByDevice: bigint,
    hubKey = server.accounts[HUB]!,
  ): SignedState {
    const ctx = channelContext(params, { device: 0n, hub: 0n });
    const state = {
      channelId: ctx.channelId,
      version,
      paidByDevice,
      paidByHub: 0n,
      round: 0n,
      ...NO_LOCKS,
      isFinal: false,
    };
    const digest = stateDigest(ctx.separator, state);
    return {
      state,
      deviceSig: signatureToHex(nobleSigner(server.accounts[device]!).signDigest(digest)),
      hubSig: signatureToHex(nobleSigner(hubKey).signDigest(digest)),
    };
  }

  it('a store record for another chain id, a key not the channel’s, a missing store: typed errors, non-zero exits, nothing sent', async () => {
    const device = 2;
    const params: ChannelParams = {
      chainId: server.chainId,
      adjudicator,
      device: server.addresses[device]!,
      hub: server.addresses[HUB]!,
      token,
      challengeDuration: 3600n,
      salt: `0x${randomBytes(32).toString('hex')}` as Bytes32,
    };
    await approve(server.wallet(device), token, adjudicator, 100_000n);
    const { channelId } = await new Adjudicator(adjudicator, server.wallet(device)).open(params, 100_000n);
    const adj = new Adjudicator(adjudicator, server.wallet(9));
    const onChain = await adj.getChannel(channelId);
    const nonces = async () =>
      Promise.all([2, 3, 9].map((i) => server.provider.getTransactionCount(server.addresses[i]!)));
    const before = await nonces();

    // the same channel id filed under parameters of another chain: its signatures are for another domain
    const foreign = { ...params, chainId: 1n };
    const store = join(dir, 'store-foreign');
    await fileChannelStore(store).save({
      params: foreign,
      channelId,
      funding: { device: 100_000n, hub: 0n },
      latest: sign(foreign, device, 1n, 5n),
      signedVersion: 1n,
    });
    for (const cmd of ['force-close', 'challenge']) {
      const r = await trickle([cmd, channelId, '--store', store, '--key-file', keyFile(device)]);
      expect(r.code, `${cmd}: ${r.stderr}`).not.toBe(0);
      expect(r.json).toMatchObject({ ok: false, error: { code: expect.stringMatching(/^[A-Z_]+$/) } });
    }
    // a key that is neither the device's nor the hub's may not force-close (refused before sending)
    const own = join(dir, 'store-own');
    await fileChannelStore(own).save({
      params,
      channelId,
      funding: { device: 100_000n, hub: 0n },
      latest: sign(params, device, 1n, 5n),
      signedVersion: 1n,
    });
    const stranger = await trickle(['force-close', channelId, '--store', own, '--key-file', keyFile(3)]);
    expect(stranger.code).toBe(1);
    expect(stranger.json).toMatchObject({ ok: false, error: { code: expect.stringMatching(/^[A-Z_]+$/) } });
    // a store directory that does not exist is not created by a command that only reads it
    const missing = join(dir, 'no-such-store');
    for (const cmd of ['force-close', 'challenge', 'close']) {
      const r = await trickle([cmd, channelId, '--store', missing, '--key-file', keyFile(device)]);
      // nothing in the store (4); challenge first sees there is no force close to challenge (3)
      expect(r.code, `${cmd}: ${r.stderr}`).toBe(cmd === 'challenge' ? 3 : 4);
      expect(r.json).toMatchObject({ ok: false, error: { code: expect.stringMatching(/^[A-Z_]+$/) } });
    }
    expect(existsSync(missing)).toBe(false);
    expect(await nonces()).toEqual(before);
    expect(await adj.getChannel(channelId)).toEqual(onChain);
  });

  it('the watchtower fed forged and equivocating states over POST /states keeps the first good one, challenges a stale force close with it; an equal-version challenge and an early settle revert', async () => {
    const device = 3;
    const params: ChannelParams = {
      chainId: server.chainId,
      adjudicator,
      device: server.addresses[device]!,
      hub: server.addresses[HUB]!,
      token,
      challengeDuration: 600n,
      salt: `0x${randomBytes(32).toString('hex')}` as Bytes32,
    };
    await approve(server.wallet(device), token, adjudicator, 100_000n);
    const { channelId } = await new Adjudicator(adjudicator, server.wallet(device)).open(params, 100_000n);
    const tower = createWatchtower({
      provider: server.provider,
      adjudicator,
      sender: server.wallet(8),
      dbPath: join(dir, 'tower'),
      listen: { port: 0 },
      confirmations: 0,
      pollMs: 100,
      storePollMs: 150,
      recheckMs: 300,
      retryInitialMs: 100,
      txTimeoutMs: 5_000,
      log: () => undefined,
    });
    await tower.start();
    try {
      const post = async (signed: SignedState, p: ChannelParams = params) => {
        const res = await fetch(`${tower.apiUrl}/states`, {
          method: 'POST',
          body: stringifyJson({ params: p, signed }),
        });
        return { status: res.status, body: parseJson<Record<string, any>>(await res.text()) };
      };
      const held = async () =>
        parseJson<{ channels: { channelId: string; version: bigint }[] }>(
          await (await fetch(`${tower.apiUrl}/channels`)).text(),
        ).channels.filter((c) => c.channelId === channelId);
      const v1 = sign(params, device, 1n, 1_000n);
      const v2 = sign(params, device, 2n, 2_000n);
      const v2b = sign(params, device, 2n, 90_000n); // both parties signed another state at version 2
      expect(await post(v2)).toMatchObject({ status: 200, body: { ok: true, status: 'accepted', version: 2n } });
      expect(await post(v2b)).toMatchObject({ status: 409, body: { ok: false, error: { code: 'EQUIVOCATION' } } });
      // the hub's slot signed by another key (the attacker's), at a newer version
      const forged = sign(params, device, 3n, 0n, server.accounts[7]!);
      expect(await post(forged)).toMatchObject({ status: 400, body: { ok: false, error: { code: 'BAD_SIGNATURE' } } });
      // the same state handed over under parameters naming the attacker as the hub: another channel id
      const mine = { ...params, hub: server.addresses[7]! };
      expect(await post(sign(params, device, 3n, 0n), mine)).toMatchObject({
        status: 400,
        body: { ok: false, error: { code: expect.stringMatching(/^(WRONG_CHANNEL|BAD_SIGNATURE)$/) } },
      });
      expect(await held()).toEqual([expect.objectContaining({ channelId, version: 2n })]);

      // the device force-closes with the stale v1 while the hub is away: the tower challenges with its v2
      const adj = new Adjudicator(adjudicator, server.wallet(device));
      await adj.forceClose(v1);
      const deadline = Date.now() + 30_000;
      while ((await adj.getChannel(channelId)).version !== 2n) {
        if (Date.now() > deadline) throw new Error('the watchtower did not challenge');
        await new Promise((r) => setTimeout(r, 100));
      }
      // an equal version (the other state signed at 2) cannot replace it, and settle waits for the deadline
      const hubAdj = new Adjudicator(adjudicator, server.wallet(HUB));
      await expect(hubAdj.challenge(v2b)).rejects.toMatchObject({ code: 'CHAIN_REVERTED' });
      await expect(hubAdj.settle(channelId)).rejects.toMatchObject({ code: 'CHAIN_REVERTED' });
      expect((await adj.getChannel(channelId)).version).toBe(2n);
      await server.increaseTime(601n);
      const before = await balanceOf(server.provider, token, server.addresses[HUB]!);
      await hubAdj.settle(channelId);
      expect((await balanceOf(server.provider, token, server.addresses[HUB]!)) - before).toBe(2_000n);
    } finally {
      await tower.stop();
    }
  });

  it('the watchtower refuses states of channels never opened on its adjudicator: made-up channels, which anyone can sign both sides of, cannot fill it and crowd out real ones', async () => {
    const tower = createWatchtower({
      provider: server.provider,
      adjudicator,
      sender: server.wallet(8),
      dbPath: join(dir, 'tower-made-up'),
      listen: { port: 0 },
      confirmations: 0,
      pollMs: 100,
      maxChannels: 2,
      log: () => undefined,
    });
    await tower.start();
    try {
      const post = async (params: ChannelParams, signed: SignedState) => {
        const res = await fetch(`${tower.apiUrl}/states`, { method: 'POST', body: stringifyJson({ params, signed }) });
        return { status: res.status, body: parseJson<Record<string, any>>(await res.text()) };
      };
      const paramsOf = (device: number, hub: number): ChannelParams => ({
        chainId: server.chainId,
        adjudicator,
        device: server.addresses[device]!,
        hub: server.addresses[hub]!,
        token,
        challengeDuration: 600n,
        salt: `0x${randomBytes(32).toString('hex')}` as Bytes32,
      });
      // The attacker holds keys 6 and 7 and signs both sides of channels it never opens.
      for (let i = 0; i < 2; i++) {
        const fake = paramsOf(6, 7);
        expect(await post(fake, sign(fake, 6, 1n, 0n, server.accounts[7]!))).toMatchObject({
          status: 400,
          body: { ok: false, error: { code: 'WRONG_CHANNEL' } },
        });
      }
      expect(tower.channels()).toEqual([]);
      // A real channel is still taken.
      const real = paramsOf(2, HUB);
      await approve(server.wallet(2), token, adjudicator, 1_000n);
      await new Adjudicator(adjudicator, server.wallet(2)).open(real, 1_000n);
      expect(await post(real, sign(real, 2, 1n, 10n))).toMatchObject({
        status: 200,
        body: { ok: true, status: 'accepted', version: 1n },
      });
    } finally {
      await tower.stop();
    }
  });
});
