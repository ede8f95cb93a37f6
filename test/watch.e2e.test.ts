import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { startChainServer, type ChainServer } from '@trickle/devchain/chainServer';
import { deployAdjudicator, deployToken } from '@trickle/chain/deploy';
import { approve, balanceOf, mintTestToken } from '@trickle/chain/erc20';
import { Adjudicator } from '@trickle/chain/adjudicator';
import { nobleSigner } from '@trickle/protocol/signer';
import { parseJson, stringifyJson } from '@trickle/protocol/json';
import type { Address, ChannelId, SignedState } from '@trickle/protocol/types';
import { createHub, type Hub } from '@trickle/hub/hub';
import { openLmdbStore } from '@trickle/hub/store/lmdb';
import { adjudicatorHubChain } from '@trickle/hub/chain-watcher';
import { TrickleClient } from '@trickle/client/client';
import { fileChannelStore } from '@trickle/client/store';
import { adjudicatorClientChain } from '@trickle/client/chain';
import type { ClientChannel } from '@trickle/client/channel';
import { createWatchtower, type Watchtower } from '@trickle/cli/watch/watchtower';
import type { LogLevel } from '@trickle/cli/watch/log';

/**
 * The watchtower against a chain server process, a real hub and real device clients: a party that is offline when
 * its counterparty force-closes with an old state still gets every base unit of its latest state, because the
 * watchtower it handed that state to challenges before the deadline.
 */

const CHALLENGE = 3600n;
const HUB = 1;

/** Poll an async condition (bounded). */
async function until(what: string, cond: () => Promise<boolean> | boolean, timeoutMs = 15_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

interface LogRecord {
  level: LogLevel;
  event: string;
  fields: Record<string, unknown>;
}

describe('watchtower: challenges stale force closes for an offline party', () => {
  let server: ChainServer;
  let dir: string;
  let adjudicator: Address;
  let token: Address;
  const hubs: Hub[] = [];
  const clients: TrickleClient[] = [];
  const towers: Watchtower[] = [];

  beforeAll(async () => {
    server = await startChainServer({ accounts: 10 });
    dir = mkdtempSync(join(tmpdir(), 'trickle-watch-'));
    const deployer = server.wallet(0);
    adjudicator = (await deployAdjudicator(deployer)).address;
    token = (await deployToken(deployer, 'usdt')).address;
    for (const i of [1, 2, 3, 4, 5]) await mintTestToken(deployer, token, server.addresses[i]!, 10n ** 12n);
  });
  afterAll(async () => {
    // Every part is stopped whatever another's stop does (a tower or hub stopped by its test already: a no-op); a
    // failed stop then fails the file.
    const failed: unknown[] = [];
    for (const t of towers) await t.stop().catch((e: unknown) => failed.push(e));
    for (const c of clients) c.disconnect();
    for (const h of hubs) await h.close().catch((e: unknown) => failed.push(e));
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
    if (failed.length > 0) throw new AggregateError(failed, 'a watchtower or hub failed to stop');
  });

  async function startHub(name: string): Promise<Hub> {
    const hub = await createHub({
      signer: nobleSigner(server.accounts[HUB]!),
      store: openLmdbStore({ path: join(dir, `hub-${name}`) }),
      chain: adjudicatorHubChain({
        provider: server.provider,
        chainId: server.chainId,
        adjudicator,
        runner: server.wallet(HUB),
      }),
      logger: pino({ level: process.env['TRICKLE_TEST_LOG'] ?? 'silent' }),
      chainPollMs: 100,
    });
    hubs.push(hub);
    return hub;
  }

  async function connect(hub: Hub, device: number): Promise<TrickleClient> {
    const c = await TrickleClient.connect({
      url: hub.url,
      signer: nobleSigner(server.accounts[device]!),
      store: fileChannelStore(join(dir, `device-${device}`)),
      chain: adjudicatorClientChain({ wallet: server.wallet(device), chainId: server.chainId, adjudicator }),
    });
    clients.push(c);
    return c;
  }

  /** The hub tops up a channel and waits until it has seen the deposit. */
  async function hubDeposit(hub: Hub, channelId: ChannelId, amount: bigint): Promise<void> {
    await approve(server.wallet(HUB), token, adjudicator, amount);
    await new Adjudicator(adjudicator, server.wallet(HUB)).deposit(channelId, amount);
    await until('the hub sees its deposit', () => (hub.channels.get(channelId)?.funding.hub ?? 0n) >= amount);
  }

  function tower(opts: {
    name: string;
    sender: number;
    storeDir?: string;
    listen?: boolean;
    logs?: LogRecord[];
  }): Watchtower {
    const t = createWatchtower({
      provider: server.provider,
      adjudicator,
      sender: server.wallet(opts.sender),
      dbPath: join(dir, `tower-${opts.name}`),
      storeDir: opts.storeDir,
      listen: opts.listen ? { port: 0 } : undefined,
      confirmations: 0,
      pollMs: 100,
      storePollMs: 150,
      recheckMs: 300,
      retryInitialMs: 100,
      txTimeoutMs: 5_000,
      log: (level, event, fields = {}) => {
        opts.logs?.push({ level, event, fields });
        if (process.env['TRICKLE_TEST_LOG']) process.stderr.write(`${stringifyJson({ level, event, ...fields })}\n`);
      },
    });
    towers.push(t);
    return t;
  }

  async function registered(channelId: ChannelId): Promise<bigint> {
    return (await new Adjudicator(adjudicator, server.provider).getChannel(channelId)).version;
  }

  /** Advance past the deadline, settle, and return each party's token gain from the settlement. */
  async function settle(channelId: ChannelId, device: number): Promise<{ device: bigint; hub: bigint }> {
    const before = {
      device: await balanceOf(server.provider, token, server.addresses[device]!),
      hub: await balanceOf(server.provider, token, server.addresses[HUB]!),
    };
    await server.increaseTime(CHALLENGE + 1n);
    await new Adjudicator(adjudicator, server.wallet(0)).settle(channelId);
    return {
      device: (await balanceOf(server.provider, token, server.addresses[device]!)) - before.device,
      hub: (await balanceOf(server.provider, token, server.addresses[HUB]!)) - before.hub,
    };
  }

  /**
   * A channel where the hub paid the device after the "old" state was taken: device deposit 1,000,000, hub
   * deposit 500,000; the device pays 1,000 and 2,000 (old state), the hub credits 50,000 and 70,000, the device pays
   * 500 (latest). The old state is worth 117,500 more to the hub than the latest.
   */
  async function channelWithHistory(
    hub: Hub,
    device: number,
  ): Promise<{ client: TrickleClient; ch: ClientChannel; old: SignedState; latest: SignedState }> {
    const client = await connect(hub, device);
    const ch = await client.openChannel({ token, deposit: 1_000_000n, challengeDuration: CHALLENGE });
    await hubDeposit(hub, ch.channelId, 500_000n);
    await ch.pay(1_000n);
    await ch.pay(2_000n);
    const old = structuredClone(ch.latest);
    await hub.credit(ch.channelId, 50_000n);
    await hub.credit(ch.channelId, 70_000n);
    await ch.pay(500n);
    await until(
      'the device holds the latest state',
      () => ch.latest.state.paidByDevice === 3_500n && ch.latest.state.paidByHub === 120_000n,
    );
    expect(old.state.version).toBeLessThan(ch.latest.state.version);
    return { client, ch, old, latest: ch.latest };
  }

  it('hub force-closes with an old state while the device is offline; the watchtower reading the device store challenges', async () => {
    const hub = await startHub('1');
    const device = 2;
    const { client, ch, old, latest } = await channelWithHistory(hub, device);
    const logs: LogRecord[] = [];
    const t = tower({ name: '1', sender: 9, storeDir: join(dir, `device-${device}`), logs });
    await t.start();
    await until('the watchtower has read the latest state from the store', () =>
      t.channels().some((c) => c.channelId === ch.channelId && c.version === latest.state.version),
    );

    // The device goes offline; the hub (its honest watcher stopped too) cheats with the old state.
    client.disconnect();
    await hub.close();
    const cheat = await new Adjudicator(adjudicator, server.wallet(HUB)).forceClose(old);
    expect(cheat.forceClosed.version).toBe(old.state.version);

    await until('the watchtower challenged', async () => (await registered(ch.channelId)) === latest.state.version);
    await until('it logged the challenge', () =>
      logs.some((l) => l.event === 'challenge-mined' && l.fields['channelId'] === ch.channelId),
    );
    expect(t.status().disputes.find((d) => d.channelId === ch.channelId)).toMatchObject({
      outcome: 'challenged',
      challenges: 1,
    });

    const gain = await settle(ch.channelId, device);
    expect(gain.device).toBe(1_000_000n - latest.state.paidByDevice + latest.state.paidByHub);
    expect(gain.hub).toBe(500_000n - latest.state.paidByHub + latest.state.paidByDevice);
    await t.stop();
  });

  it('device force-closes with an old state while the hub is offline; a hub-side watchtower fed over HTTP challenges', async () => {
    const hub = await startHub('2');
    const device = 3;
    const client = await connect(hub, device);
    const ch = await client.openChannel({ token, deposit: 1_000_000n, challengeDuration: CHALLENGE });
    await ch.pay(1_000n);
    await ch.pay(2_000n);
    const old = structuredClone(ch.latest);
    await ch.pay(30_000n);
    await ch.pay(40_000n);
    const latest = ch.latest;
    await until(
      'the hub holds the latest state',
      () => hub.channels.get(ch.channelId)?.latest.state.version === latest.state.version,
    );
    const hubRecord = hub.channels.get(ch.channelId)!;

    const t = tower({ name: '2', sender: 8, listen: true });
    await t.start();
    const post = async (body: string) => {
      const res = await fetch(`${t.apiUrl}/states`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body,
      });
      return { status: res.status, body: parseJson<Record<string, any>>(await res.text()) };
    };
    // The hub hands over its record (params + latest both signed) as its LMDB store holds it.
    const accepted = await post(stringifyJson(hubRecord));
    expect(accepted).toMatchObject({
      status: 200,
      body: { ok: true, status: 'accepted', channelId: ch.channelId, version: latest.state.version },
    });
    expect((await post(stringifyJson(hubRecord))).body).toMatchObject({ ok: true, status: 'duplicate' });
    // Older, tampered, foreign, malformed and oversized submissions are refused with a code.
    expect(await post(stringifyJson({ params: hubRecord.params, signed: old }))).toMatchObject({
      status: 409,
      body: { ok: false, error: { code: 'STALE_VERSION' } },
    });
    const forged = {
      ...latest,
      state: { ...latest.state, version: latest.state.version + 1n, paidByDevice: 999_999n },
    };
    expect(await post(stringifyJson({ params: hubRecord.params, signed: forged }))).toMatchObject({
      status: 400,
      body: { error: { code: 'BAD_SIGNATURE' } },
    });
    const halfSigned = { state: forged.state, hubSig: latest.hubSig };
    expect(await post(stringifyJson({ params: hubRecord.params, signed: halfSigned }))).toMatchObject({
      status: 400,
      body: { error: { code: 'BAD_SIGNATURE' } },
    });
    expect(await post(stringifyJson({ params: { ...hubRecord.params, chainId: 1n }, signed: latest }))).toMatchObject({
      status: 400,
      body: { error: { code: 'WRONG_CHANNEL' } },
    });
    expect(await post('{"params": 1')).toMatchObject({ status: 400, body: { error: { code: 'MALFORMED' } } });
    expect(await post(`{"pad":"${'x'.repeat(70_000)}"}`)).toMatchObject({
      status: 413,
      body: { error: { code: 'FRAME_TOO_LARGE' } },
    });
    const health = await (await fetch(`${t.apiUrl}/health`)).json();
    expect(health).toMatchObject({ ok: true, status: 'ok', channels: 1, adjudicator });
    const listed = parseJson<{ channels: { channelId: string; version: bigint }[] }>(
      await (await fetch(`${t.apiUrl}/channels`)).text(),
    );
    expect(listed.channels).toEqual([
      expect.objectContaining({ channelId: ch.channelId, version: latest.state.version }),
    ]);

    // The hub goes offline; the device cheats with the state from before its last two payments.
    client.disconnect();
    await hub.close();
    await new Adjudicator(adjudicator, server.wallet(device)).forceClose(old);
    await until('the watchtower challenged', async () => (await registered(ch.channelId)) === latest.state.version);

    const gain = await settle(ch.channelId, device);
    expect(gain.hub).toBe(latest.state.paidByDevice);
    expect(gain.device).toBe(1_000_000n - latest.state.paidByDevice);
    await t.stop();
  });

  it('a watchtower that was down when the force close was mined catches up from its database and answers in time', async () => {
    const hub = await startHub('3');
    const device = 4;
    const { client, ch, old, latest } = await channelWithHistory(hub, device);
    const dbName = '3';
    const first = tower({ name: dbName, sender: 7, listen: true });
    await first.start();
    await first.addState({ params: ch.record.params, latest });
    const cursorBefore = first.status().cursor!.block;
    await first.stop();

    client.disconnect();
    await hub.close();
    const cheat = await new Adjudicator(adjudicator, server.wallet(HUB)).forceClose(old);
    await server.mine(5);
    expect(cheat.blockNumber).toBeGreaterThan(cursorBefore);

    // Restart on the same database, with no store and no API: the state and the cursor come from LMDB.
    const logs: LogRecord[] = [];
    const second = tower({ name: dbName, sender: 7, logs });
    await second.start();
    expect(second.channels().map((c) => [c.channelId, c.version])).toEqual([[ch.channelId, latest.state.version]]);
    await until(
      'the restarted watchtower challenged',
      async () => (await registered(ch.channelId)) === latest.state.version,
    );
    await until('it caught up on the events it missed', () =>
      logs.some((l) => l.event === 'force-close-seen' && l.fields['block'] === cheat.blockNumber),
    );
    expect(await server.latestTimestamp()).toBeLessThan(cheat.forceClosed.deadline);

    const gain = await settle(ch.channelId, device);
    expect(gain.device).toBe(1_000_000n - latest.state.paidByDevice + latest.state.paidByHub);
    await second.stop();
  });

  it('detects a reorg that replaced the force close and its challenge, and challenges again on the new chain', async () => {
    const hub = await startHub('4');
    const device = 5;
    const { client, ch, old, latest } = await channelWithHistory(hub, device);
    client.disconnect();
    await hub.close();
    const logs: LogRecord[] = [];
    const t = tower({ name: '4', sender: 6, logs });
    await t.start();
    await t.addState({ params: ch.record.params, latest });

    const fork = await server.snapshot();
    await new Adjudicator(adjudicator, server.wallet(HUB)).forceClose(old);
    await until('challenged on the first chain', () => logs.some((l) => l.event === 'challenge-mined'));
    await until(
      'the follower processed past the challenge',
      async () => t.status().cursor!.block >= (await server.provider.getBlockNumber()),
    );

    // Reorg: back to before the force close; the new chain has the cheat again (in a block with another hash).
    await server.revert(fork);
    await server.mine(1);
    const again = await new Adjudicator(adjudicator, server.wallet(HUB)).forceClose(old);
    await server.mine(3);
    expect(await registered(ch.channelId)).toBe(old.state.version);
    await until(
      'challenged again on the new chain',
      async () => (await registered(ch.channelId)) === latest.state.version,
    );
    await until('the reorg was detected', () => logs.some((l) => l.event === 'reorg'));
    await until(
      'both challenges were logged',
      () => logs.filter((l) => l.event === 'challenge-mined' && l.fields['channelId'] === ch.channelId).length === 2,
    );
    expect(again.forceClosed.deadline).toBeGreaterThan(await server.latestTimestamp());
    await t.stop();
  });
});
