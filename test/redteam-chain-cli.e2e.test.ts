import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startChainServer, type ChainServer } from '@trickle/devchain/chainServer';
import { Adjudicator } from '@trickle/chain/adjudicator';
import { deployAdjudicator } from '@trickle/chain/deploy';
import { channelContext } from '@trickle/protocol/channel';
import { stateDigest } from '@trickle/protocol/eip712';
import { isTrickleError } from '@trickle/protocol/errors';
import { hashPreimage, lockCommitment, type Lock } from '@trickle/protocol/locks';
import { nobleSigner, signatureToHex } from '@trickle/protocol/signer';
import { ETH_TOKEN, type Bytes32, type ChannelParams, type SignedState } from '@trickle/protocol/types';
import type { Address } from '@trickle/protocol/types';
import { createWatchtower } from '@trickle/cli/watch/watchtower';
import { runTrickle } from './helpers/trickle-bin.js';

/**
 * The `trickle` bin and the watchtower pointed at the wrong network or given a key that is no key: each is refused
 * with a typed error that names the mistake (exit 1), not taken for an RPC failure (exit 5, "retry") or an internal
 * error, and nothing is sent.
 */
const CHANNEL = `0x${'11'.repeat(32)}`;
/** secp256k1's group order n: a 32-byte value that is no private key, nor is anything above it. */
const CURVE_N = '0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141';

describe('red team (chain): the CLI and the watchtower on the wrong network, with a key that is no key', () => {
  let server: ChainServer;
  /** Another chain with no adjudicator deployed: the wrong --rpc. */
  let other: ChainServer;
  let dir: string;
  let adjudicator: Address;

  beforeAll(async () => {
    [server, other] = await Promise.all([startChainServer({ accounts: 3 }), startChainServer({ accounts: 3 })]);
    dir = mkdtempSync(join(tmpdir(), 'trickle-rt-chain-cli-'));
    adjudicator = (await deployAdjudicator(server.wallet(0))).address;
    writeFileSync(join(dir, 'gas.key'), `${server.accounts[2]}\n`, { mode: 0o600 });
  });
  afterAll(async () => {
    await Promise.all([server?.stop(), other?.stop()]);
    rmSync(dir, { recursive: true, force: true });
  });

  const trickle = (args: string[], env: Record<string, string> = {}) =>
    runTrickle([...args, '--json'], { rpcUrl: server.url, adjudicator }, env);

  it('a key file holding zero or a value not below the curve order: INVALID_ARGUMENT naming the key file, exit 1, no transaction', async () => {
    const sender = server.addresses[2]!;
    const nonce = await server.provider.getTransactionCount(sender);
    for (const [name, key] of [
      ['zero.key', `0x${'0'.repeat(64)}`],
      ['order.key', CURVE_N],
      ['max.key', `0x${'f'.repeat(64)}`],
    ] as const) {
      const path = join(dir, name);
      writeFileSync(path, `${key}\n`, { mode: 0o600 });
      for (const args of [
        ['withdraw', '--token', `0x${'0'.repeat(40)}`],
        ['reveal', `0x${'42'.repeat(32)}`],
      ]) {
        const r = await trickle([...args, '--key-file', path]);
        expect(r.code, `${name} ${args[0]}`).toBe(1);
        expect(r.json).toMatchObject({
          ok: false,
          error: { code: 'INVALID_ARGUMENT', exitCode: 1, message: expect.stringContaining(path) },
        });
      }
    }
    expect(await server.provider.getTransactionCount(sender)).toBe(nonce);
  });

  it('--rpc of another network (no adjudicator there) or an --adjudicator that is an account: NO_CONTRACT, exit 1, not an RPC failure', async () => {
    const cases: Record<string, string>[] = [
      { TRICKLE_RPC_URL: other.url }, // the adjudicator's address on a chain it was never deployed to
      { TRICKLE_ADJUDICATOR: server.addresses[1]! }, // an account, not a contract
    ];
    for (const env of cases) {
      for (const args of [
        ['show', CHANNEL],
        ['settle', CHANNEL, '--key-file', join(dir, 'gas.key')],
        ['reveal', `0x${'42'.repeat(32)}`, '--key-file', join(dir, 'gas.key')],
      ]) {
        const r = await trickle(args, env);
        expect(r.code, `${args[0]} ${JSON.stringify(env)}`).toBe(1);
        expect(r.json).toMatchObject({ ok: false, error: { code: 'NO_CONTRACT', exitCode: 1 } });
      }
    }
    // Control: the right network and adjudicator answer (no such channel: exit 4).
    expect(await trickle(['show', CHANNEL])).toMatchObject({ code: 4, json: { error: { code: 'WRONG_CHANNEL' } } });
    expect(await other.provider.getTransactionCount(server.addresses[2]!)).toBe(0);
  });

  it('settle after the deadline while a lock is undecided (unrevealed, before its expiry): exit 3 LOCK_NOT_EXPIRED naming the expiry, nothing sent; after a reveal it settles, the lock to its payee', async () => {
    const [device, hub] = [0, 1];
    const params: ChannelParams = {
      chainId: server.chainId,
      adjudicator,
      device: server.addresses[device]!,
      hub: server.addresses[hub]!,
      token: ETH_TOKEN,
      challengeDuration: 600n,
      salt: `0x${'c4'.repeat(32)}` as Bytes32,
    };
    const { channelId } = await new Adjudicator(adjudicator, server.wallet(device)).open(params, 10_000n);
    const now = BigInt((await server.provider.getBlock('latest'))!.timestamp);
    const preimage = `0x${'9e'.repeat(32)}` as Bytes32;
    const lock: Lock = { amount: 100n, hash: hashPreimage(preimage), expiry: now + 3_600n, payer: 'device' };
    const state = {
      channelId,
      version: 1n,
      paidByDevice: 0n,
      paidByHub: 0n,
      round: 0n,
      ...lockCommitment([lock]),
      isFinal: false,
    };
    const digest = stateDigest(channelContext(params, { device: 0n, hub: 0n }).separator, state);
    const signed: SignedState = {
      state,
      deviceSig: signatureToHex(nobleSigner(server.accounts[device]!).signDigest(digest)),
      hubSig: signatureToHex(nobleSigner(server.accounts[hub]!).signDigest(digest)),
    };
    await new Adjudicator(adjudicator, server.wallet(device)).forceClose(signed, { locks: [lock] });
    await server.increaseTime(601n); // past the deadline, long before the lock's expiry
    const gasKey = join(dir, 'gas.key');
    const sender = server.addresses[2]!;
    const nonce = await server.provider.getTransactionCount(sender);
    const early = await trickle(['settle', channelId, '--key-file', gasKey]);
    expect(early.code).toBe(3);
    expect(early.json).toMatchObject({
      ok: false,
      error: { code: 'LOCK_NOT_EXPIRED', exitCode: 3, details: { hash: lock.hash, expiry: lock.expiry } },
    });
    expect(await server.provider.getTransactionCount(sender)).toBe(nonce);
    expect(await trickle(['reveal', preimage, '--key-file', gasKey])).toMatchObject({ code: 0 });
    const settled = await trickle(['settle', channelId, '--key-file', gasKey]);
    expect(settled).toMatchObject({ code: 0, json: { ok: true, payoutDevice: '9900', payoutHub: '100' } });
  });

  it('a watchtower started against a chain without its adjudicator, told another chain id than its node’s, or a port that is no port, refuses to start', async () => {
    const start = async (opts: { provider: ChainServer; chainId?: bigint; db: string }) => {
      const tower = createWatchtower({
        provider: opts.provider.provider,
        adjudicator,
        chainId: opts.chainId,
        sender: opts.provider.wallet(2),
        dbPath: join(dir, opts.db),
        confirmations: 0,
        log: () => undefined,
      });
      try {
        await tower.start();
      } catch (e) {
        return e;
      } finally {
        await tower.stop();
      }
      return undefined;
    };
    const noContract = await start({ provider: other, db: 'tower-other' });
    expect(isTrickleError(noContract, 'NO_CONTRACT')).toBe(true);
    const wrongId = await start({ provider: server, chainId: server.chainId + 1n, db: 'tower-wrong-id' });
    expect(isTrickleError(wrongId, 'INVALID_ARGUMENT')).toBe(true);
    // Control: the right chain and adjudicator start.
    expect(await start({ provider: server, db: 'tower-ok' })).toBeUndefined();
    // A port that is no port: refused when created (it was refused by node's listen once the database was open).
    let refused: unknown;
    try {
      createWatchtower({
        provider: server.provider,
        adjudicator,
        sender: server.wallet(2),
        dbPath: join(dir, 'tower-port'),
        listen: { port: 99_999 },
        log: () => undefined,
      });
    } catch (e) {
      refused = e;
    }
    expect(isTrickleError(refused, 'INVALID_ARGUMENT')).toBe(true);
    const cli = await trickle([
      'watch',
      '--db',
      join(dir, 'tower-port-cli'),
      '--key-file',
      join(dir, 'gas.key'),
      '--listen',
      '99999',
    ]);
    expect(cli).toMatchObject({
      code: 1,
      json: { ok: false, error: { code: 'INVALID_ARGUMENT', message: expect.stringContaining('--listen') } },
    });
    // A port another process holds: INVALID_ARGUMENT naming it (was INTERNAL with Node's message), exit 1, and the
    // watchtower leaves nothing half started: its database is free for the next start.
    const taken = createServer();
    await new Promise<void>((r) => taken.listen(0, '127.0.0.1', r));
    const busy = (taken.address() as AddressInfo).port;
    try {
      const inUse = await trickle([
        'watch',
        '--db',
        join(dir, 'tower-busy-cli'),
        '--key-file',
        join(dir, 'gas.key'),
        '--listen',
        String(busy),
      ]);
      // --json logs the start as lines; the error is the last one.
      expect(inUse.code).toBe(1);
      expect(JSON.parse(inUse.stdout.trim().split('\n').at(-1)!)).toMatchObject({
        ok: false,
        error: { code: 'INVALID_ARGUMENT', message: expect.stringContaining(`:${busy}`) },
      });
      const tower = (port: number) =>
        createWatchtower({
          provider: server.provider,
          adjudicator,
          sender: server.wallet(2),
          dbPath: join(dir, 'tower-busy'),
          listen: { port, host: '127.0.0.1' },
          log: () => undefined,
        });
      await expect(tower(busy).start()).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', details: { port: busy } });
      const next = tower(0);
      await next.start();
      await next.stop();
    } finally {
      await new Promise((r) => taken.close(r));
    }
  });
});
