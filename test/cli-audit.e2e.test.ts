import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import type { Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startChainServer, type ChainServer } from '@trickle/devchain/chainServer';
import { deployAdjudicator } from '@trickle/chain/deploy';
import { Adjudicator } from '@trickle/chain/adjudicator';
import { connectChain } from '@trickle/chain/rpc';
import { channelContext } from '@trickle/protocol/channel';
import { stateDigest } from '@trickle/protocol/eip712';
import { hashPreimage, lockCommitment, type Lock } from '@trickle/protocol/locks';
import { nobleSigner, signatureToHex } from '@trickle/protocol/signer';
import { ETH_TOKEN, NO_LOCKS, type Bytes32, type ChannelParams, type SignedState } from '@trickle/protocol/types';
import { createWatchtower, type Watchtower } from '@trickle/cli/watch/watchtower';
import { encodeChannelRecord, fileChannelStore, type DeviceChannelRecord } from '@trickle/client/store';
import { runTrickle, spawnTrickle } from './helpers/trickle-bin.js';
import { until } from './helpers/fee-spike.js';
import { rpcRelay } from './helpers/rpc-relay.js';

/**
 * Audit of the watchtower against the chain reorganising what it did: a reveal of ours that a reorg removed is sent
 * again while the lock can still pay, as a challenge of ours is; a node that reads the channel as it was before a
 * force close the watchtower saw (a load-balanced endpoint whose backends lag) does not make it stand down.
 */
const DEVICE = 1;
const HUB = 2;
const TOWER = 3;

/**
 * A JSON-RPC relay in front of `target`: while `lagAt` is set, `eth_call`s at `latest` are answered at that block;
 * while `failEvery` is n > 0, about one request in n is answered 503.
 */
async function laggingNode(target: string): Promise<{
  url: string;
  state: { lagAt: string | undefined; failEvery: number; seen: number; failed: number };
  server: Server;
}> {
  const state: { lagAt: string | undefined; failEvery: number; seen: number; failed: number } = {
    lagAt: undefined,
    failEvery: 0,
    seen: 0,
    failed: 0,
  };
  let rand = 42;
  const relay = await rpcRelay(target, (body, res) => {
    // A seeded pseudo-random pick (one in failEvery on average), not a fixed period a poll loop could align with.
    rand = (rand * 1_103_515_245 + 12_345) % 2_147_483_648;
    state.seen++;
    if (state.failEvery > 0 && Math.floor(rand / 65_536) % state.failEvery === 0) {
      state.failed++;
      res.writeHead(503).end('backend unavailable');
      return undefined;
    }
    const msg = JSON.parse(body.toString('utf8')) as { method: string; params: unknown[] };
    if (state.lagAt === undefined || msg.method !== 'eth_call' || msg.params[1] !== 'latest') return body;
    msg.params[1] = state.lagAt;
    return Buffer.from(JSON.stringify(msg));
  });
  return { ...relay, state };
}

describe('audit: the watchtower and reorgs of its own transactions', () => {
  let chain: ChainServer;
  let dir: string;
  const towers: Watchtower[] = [];

  beforeAll(async () => {
    chain = await startChainServer({ accounts: 5 });
    dir = mkdtempSync(join(tmpdir(), 'trickle-cli-audit-'));
  });
  afterEach(async () => {
    for (const t of towers.splice(0)) await t.stop();
  });
  afterAll(async () => {
    await chain?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  /** An ETH channel (device deposits 10,000; one-hour challenge) and a signer of its states, with locks. */
  async function openChannel(salt: string, on?: Adjudicator) {
    const adj = on ?? (await deployAdjudicator(chain.wallet(0)));
    const params: ChannelParams = {
      chainId: chain.chainId,
      adjudicator: adj.address,
      device: chain.addresses[DEVICE]!,
      hub: chain.addresses[HUB]!,
      token: ETH_TOKEN,
      challengeDuration: 3_600n,
      salt: `0x${salt.repeat(32)}` as Bytes32,
    };
    const { channelId } = await adj.connect(chain.wallet(DEVICE)).open(params, 10_000n);
    const ctx = channelContext(params, { device: 10_000n, hub: 0n });
    const sign = (version: bigint, paidByDevice: bigint, locks: readonly Lock[] = []): SignedState => {
      const state = {
        channelId,
        version,
        paidByDevice,
        paidByHub: 0n,
        round: 0n,
        ...(locks.length > 0 ? lockCommitment(locks) : NO_LOCKS),
        isFinal: false,
      };
      const digest = stateDigest(ctx.separator, state);
      return {
        state,
        deviceSig: signatureToHex(nobleSigner(chain.accounts[DEVICE]!).signDigest(digest)),
        hubSig: signatureToHex(nobleSigner(chain.accounts[HUB]!).signDigest(digest)),
      };
    };
    return { adj, params, channelId, sign };
  }

  function tower(
    name: string,
    logs: { event: string; fields: Record<string, unknown> }[],
    provider = chain.provider,
  ): Watchtower {
    const t = createWatchtower({
      provider,
      adjudicator: towersAdjudicator,
      sender: chain.wallet(TOWER).connect(provider),
      dbPath: join(dir, name),
      confirmations: 0,
      reorgDepth: 4,
      pollMs: 50,
      recheckMs: 200,
      retryInitialMs: 100,
      retryMaxMs: 500,
      log: (_level, event, fields) => logs.push({ event, fields: fields ?? {} }),
    });
    towers.push(t);
    return t;
  }
  let towersAdjudicator = '';

  it('a reveal of ours that a reorg removed is sent again before the lock expires, and the lock pays the device', async () => {
    const { adj, params, channelId, sign } = await openChannel('a1');
    towersAdjudicator = adj.address;
    const preimage = `0x${randomBytes(32).toString('hex')}` as Bytes32;
    const now = await chain.latestTimestamp();
    const lock: Lock = { amount: 200n, hash: hashPreimage(preimage), expiry: now + 7_200n, payer: 'hub' };
    const latest = sign(2n, 300n, [lock]);
    const logs: { event: string; fields: Record<string, unknown> }[] = [];
    const t = tower('reveal-reorg', logs);
    await t.start();
    await t.addState({ params, latest, locks: [lock], preimages: [{ hash: lock.hash, preimage }] });
    await until(() => t.status().caughtUp);

    // The hub force-closes with the latest state (nothing to challenge); the watchtower reveals the preimage at once.
    const fork = await chain.snapshot();
    await adj.connect(chain.wallet(HUB)).forceClose(latest, { locks: [lock] });
    await until(() => logs.some((l) => l.event === 'preimage-revealed'));
    expect(await adj.revealedAt(lock.hash)).not.toBe(0n);
    await until(async () => t.status().cursor!.block >= Number(await chain.provider.send('eth_blockNumber', [])));

    // Reorg: the force close and the reveal are gone; the new chain has the force close again, in other blocks.
    await chain.revert(fork);
    // Read before the force close on the new chain: after it the watchtower may reveal again before any read here.
    expect(await adj.revealedAt(lock.hash)).toBe(0n);
    await chain.mine(2);
    const again = await adj.connect(chain.wallet(HUB)).forceClose(latest, { locks: [lock] });
    await chain.mine(3);
    await until(() => logs.some((l) => l.event === 'reorg'));
    await until(async () => (await adj.revealedAt(lock.hash)) !== 0n);
    expect(await adj.revealedAt(lock.hash)).toBeLessThanOrEqual(lock.expiry);

    // After the deadline and the lock's expiry the watchtower settles with the lock list: the lock is the device's.
    await chain.increaseTime(7_300n);
    expect(await chain.latestTimestamp()).toBeGreaterThan(again.forceClosed.deadline);
    await until(() => logs.some((l) => l.event === 'settled'));
    const settled = logs.find((l) => l.event === 'settled')!.fields;
    expect(settled['payoutDevice']).toBe(10_000n - 300n + 200n);
    expect(settled['payoutHub']).toBe(100n);
    expect((await new Adjudicator(adj.address, chain.provider).getChannel(channelId)).status).toBe('closed');
  }, 60_000);

  it('a force close seen in the logs while the node still reads the channel open is read again until it shows, and challenged', async () => {
    const relay = await laggingNode(chain.url);
    try {
      const { adj, params, channelId, sign } = await openChannel('b2');
      towersAdjudicator = adj.address;
      const { provider } = await connectChain(relay.url, { timeoutMs: 5_000, pollingIntervalMs: 50 });
      const logs: { event: string; fields: Record<string, unknown> }[] = [];
      const t = tower('lagging-read', logs, provider);
      await t.start();
      await t.addState({ params, latest: sign(2n, 300n) });
      const end = Date.now() + 45_000;
      const or = (what: string, cond: () => boolean | Promise<boolean>) => async () => {
        if (Date.now() > end) throw new Error(`${what}: ${logs.map((l) => l.event).join(', ')}`);
        return cond();
      };
      await until(or('open', () => t.status().caughtUp && t.channels()[0]?.dispute?.status === 'open'));

      // The backend answering calls is a block behind the one answering logs: the force close is seen, the channel
      // still reads open.
      relay.state.lagAt = (await chain.provider.send('eth_blockNumber', [])) as string; // not ethers' cached number
      const { forceClosed } = await adj.connect(chain.wallet(HUB)).forceClose(sign(1n, 100n));
      await until(or('seen', () => logs.some((l) => l.event === 'force-close-seen')));
      // Wait for the watchtower to have read the channel open after the event, twice (it keeps reading), rather than
      // for a fixed time: on a loaded machine the first read can take longer than any fixed wait.
      const readOpen = () =>
        logs.filter(
          (l) =>
            l.event === 'check-failed' &&
            /reads the channel open/.test(String((l.fields['err'] as Error | undefined)?.message)),
        ).length;
      await until(or('read open', () => readOpen() >= 2));
      expect(t.channels()[0]!.dispute!.status).toBe('open');
      expect((await new Adjudicator(adj.address, chain.provider).getChannel(channelId)).version).toBe(1n);
      relay.state.lagAt = undefined; // the lagging backend catches up

      const reader = new Adjudicator(adj.address, chain.provider);
      await until(or('challenged', async () => (await reader.getChannel(channelId)).version === 2n));
      expect(await chain.latestTimestamp()).toBeLessThan(forceClosed.deadline);
      // The watchtower records its challenge once it has read the receipt, after the chain shows it: wait for that.
      await until(or('recorded', () => t.channels()[0]!.dispute!.outcome === 'challenged'));
      expect(t.channels()[0]!.dispute).toMatchObject({ outcome: 'challenged', registeredVersion: 2n });
    } finally {
      relay.server.closeAllConnections(); // the watchtower's provider keeps its connections alive
      await new Promise((r) => relay.server.close(r));
    }
  }, 60_000);

  it('a backup or store record whose lock list does not match its state is refused MALFORMED (exit 1), nothing imported or sent; show still answers', async () => {
    const { adj, params, channelId, sign } = await openChannel('c3');
    const lock: Lock = {
      amount: 5n,
      hash: hashPreimage(`0x${'11'.repeat(32)}` as Bytes32),
      expiry: (await chain.latestTimestamp()) + 7_200n,
      payer: 'device',
    };
    const good: DeviceChannelRecord = {
      params,
      channelId,
      funding: { device: 10_000n, hub: 0n },
      latest: sign(3n, 100n, [lock]),
      locks: [lock],
      signedVersion: 3n,
    };
    writeFileSync(join(dir, 'key'), `${chain.accounts[DEVICE]}\n`, { mode: 0o600 });
    const trickle = (args: string[]) =>
      runTrickle([...args, '--json'], { rpcUrl: chain.url, adjudicator: adj.address });
    const nonce = () => chain.provider.getTransactionCount(chain.addresses[DEVICE]!);
    const before = await nonce();
    const broken: Record<string, string> = {
      missing: encodeChannelRecord({ ...good, locks: undefined }),
      wrong: encodeChannelRecord({ ...good, locks: [{ ...lock, amount: 6n }] }),
      garbage: encodeChannelRecord(good).replace(/"amount": "5"/, '"amount": "zz"'),
    };
    for (const [name, text] of Object.entries(broken)) {
      const file = join(dir, `backup-${name}.json`);
      writeFileSync(file, text);
      const store = join(dir, `store-import-${name}`);
      const r = await trickle(['import', file, '--store', store]);
      expect(r.code, `${name}: ${r.stdout}`).toBe(1);
      expect(r.json).toMatchObject({ ok: false, error: { code: 'MALFORMED', exitCode: 1 } });
      expect(existsSync(join(store, `${channelId}.channel`)), name).toBe(false);

      // The same record in the store (written by something else): refused before anything is sent; show answers.
      const held = join(dir, `store-held-${name}`);
      await fileChannelStore(held).save(good);
      writeFileSync(join(held, `${channelId}.json`), text);
      rmSync(join(held, `${channelId}.channel`));
      const fc = await trickle(['force-close', channelId, '--store', held, '--key-file', join(dir, 'key')]);
      expect(fc.code, `${name}: ${fc.stdout}`).toBe(1);
      expect(fc.json).toMatchObject({ ok: false, error: { code: 'MALFORMED', exitCode: 1 } });
      const show = await trickle(['show', channelId, '--store', held]);
      expect(show.code, `${name}: ${show.stdout}`).toBe(0);
      expect(show.json).toMatchObject({ ok: true, store: { verified: false } });
    }
    expect(await nonce()).toBe(before);
    expect((await adj.getChannel(channelId)).status).toBe('open');
    // The good backup imports, and force-closes.
    const file = join(dir, 'backup-good.json');
    writeFileSync(file, encodeChannelRecord(good));
    const store = join(dir, 'store-good');
    expect((await trickle(['import', file, '--store', store])).code).toBe(0);
    const fc = await trickle(['force-close', channelId, '--store', store, '--key-file', join(dir, 'key')]);
    expect(fc.code, fc.stdout).toBe(0);
  }, 60_000);

  it('packages/cli/README.md: the `trickle watch` command line it shows starts a watchtower; --help lists every command of its table', async () => {
    const readme = readFileSync(new URL('../packages/cli/README.md', import.meta.url), 'utf8');
    const snippet = /```\n(trickle watch [^`]*?)\n```/.exec(readme)![1]!;
    const adj = await deployAdjudicator(chain.wallet(0));
    writeFileSync(join(dir, 'gas.key'), `${chain.accounts[TOWER]}\n`, { mode: 0o600 });
    mkdirSync(join(dir, 'device-store'));
    const args = snippet
      .replace(/\\\n/g, ' ')
      .replace(/[[\]]/g, '')
      .split(/\s+/)
      .filter((a) => a !== '')
      .slice(1)
      .map((a) =>
        a === 'URL'
          ? chain.url
          : a === 'ADDR'
            ? adj.address
            : a === 'gas.key' || a.startsWith('./')
              ? join(dir, a)
              : a === '8548'
                ? '0' // any free port
                : a,
      );
    expect(args).toEqual(expect.arrayContaining(['--confirmations', '--tx-bump-blocks', '--tx-max-fee-gwei']));
    const watch = spawnTrickle(args, { rpcUrl: '', adjudicator: '' });
    try {
      await until(() => watch.lines.some((l) => l['event'] === 'started') || watch.child.exitCode !== null);
      const started = watch.lines.find((l) => l['event'] === 'started');
      expect(started, watch.stderr).toBeDefined();
      const health = (await (await fetch(`${started!['api']}/health`)).json()) as Record<string, unknown>;
      expect(health).toMatchObject({ status: 'ok', adjudicator: adj.address });
    } finally {
      watch.child.kill('SIGTERM');
    }
    expect(await watch.exited).toBe(0);

    const help = await runTrickle(['--help'], { rpcUrl: chain.url, adjudicator: adj.address });
    expect(help.code).toBe(0);
    const table = readme.slice(readme.indexOf('## Commands'), readme.indexOf('## Exit codes'));
    const commands = [...table.matchAll(/^\| `([a-z-]+)[ `]/gm)].map((m) => m[1]!);
    expect(commands.length).toBeGreaterThanOrEqual(11);
    for (const c of commands) expect(help.stdout, c).toMatch(new RegExp(`^  ${c} `, 'm'));
  }, 60_000);

  it('several channels force-closed at once with stale states while one RPC request in 4 fails: each is challenged in time', async () => {
    const relay = await laggingNode(chain.url);
    try {
      const adj = await deployAdjudicator(chain.wallet(0));
      const channels = [];
      for (const salt of ['d1', 'd2', 'd3', 'd4']) channels.push(await openChannel(salt, adj));
      towersAdjudicator = adj.address;
      const { provider } = await connectChain(relay.url, { timeoutMs: 5_000, pollingIntervalMs: 50 });
      const logs: { event: string; fields: Record<string, unknown> }[] = [];
      const t = tower('many', logs, provider);
      await t.start();
      for (const ch of channels) await t.addState({ params: ch.params, latest: ch.sign(5n, 500n) });
      relay.state.failEvery = 4;
      const deadlines = [];
      for (const ch of channels)
        deadlines.push((await ch.adj.connect(chain.wallet(HUB)).forceClose(ch.sign(1n, 100n))).forceClosed.deadline);
      const reader = new Adjudicator(adj.address, chain.provider);
      const end = Date.now() + 40_000;
      for (const ch of channels)
        await until(async () => {
          if (Date.now() > end)
            throw new Error(
              `not challenged: ${logs.map((l) => `${l.event} ${JSON.stringify(l.fields, (_k, v: unknown) => (typeof v === 'bigint' ? String(v) : v)).slice(0, 300)}`).join('\n')}`,
            );
          return (await reader.getChannel(ch.channelId)).version === 5n;
        });
      expect(relay.state.failed).toBeGreaterThan(0);
      expect(await chain.latestTimestamp()).toBeLessThan(deadlines.reduce((a, b) => (a < b ? a : b)));
      relay.state.failEvery = 0;
      // 'current' when the challenge landed but reading its receipt failed (the next read finds it registered).
      await until(() =>
        t.channels().every((c) => c.dispute?.outcome === 'challenged' || c.dispute?.outcome === 'current'),
      );
    } finally {
      relay.state.failEvery = 0;
      relay.server.closeAllConnections(); // the watchtower's provider keeps its connections alive
      await new Promise((r) => relay.server.close(r));
    }
  }, 60_000);

  it('a force close with locks registering a state newer than the one held (the hub withheld its signature from the device) is settled with the lock list of its transaction', async () => {
    const { adj, params, channelId, sign } = await openChannel('e5');
    towersAdjudicator = adj.address;
    const logs: { event: string; fields: Record<string, unknown> }[] = [];
    const t = tower('newer-registered', logs);
    await t.start();
    await t.addState({ params, latest: sign(2n, 300n) });
    const now = await chain.latestTimestamp();
    const lock: Lock = {
      amount: 50n,
      hash: hashPreimage(`0x${randomBytes(32).toString('hex')}` as Bytes32),
      expiry: now + 600n,
      payer: 'device',
    };
    const { forceClosed } = await adj.connect(chain.wallet(HUB)).forceClose(sign(3n, 300n, [lock]), { locks: [lock] });
    await until(() => t.channels()[0]?.dispute?.outcome === 'current');
    await chain.increaseTime(3_700n);
    expect(await chain.latestTimestamp()).toBeGreaterThan(forceClosed.deadline);
    const end = Date.now() + 10_000;
    await until(() => {
      if (Date.now() > end) throw new Error(`not settled: ${logs.map((l) => l.event).join(', ')}`);
      return logs.some((l) => l.event === 'settled');
    });
    // The lock was never revealed: back to the device, its payer.
    expect(logs.find((l) => l.event === 'settled')!.fields).toMatchObject({
      channelId,
      version: 3n,
      locks: 1,
      payoutDevice: 10_000n - 300n,
      payoutHub: 300n,
    });
  }, 30_000);
});
