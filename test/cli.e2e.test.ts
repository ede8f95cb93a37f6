import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startChainServer, type ChainServer } from '@trickle/devchain/chainServer';
import { deployAdjudicator, deployToken } from '@trickle/chain/deploy';
import { approve, balanceOf, mintTestToken } from '@trickle/chain/erc20';
import { Adjudicator } from '@trickle/chain/adjudicator';
import { channelContext } from '@trickle/protocol/channel';
import { channelIdOf, stateDigest } from '@trickle/protocol/eip712';
import { nobleSigner, signatureToHex } from '@trickle/protocol/signer';
import {
  NO_LOCKS,
  type Address,
  type Bytes32,
  type ChannelId,
  type ChannelParams,
  type Funding,
  type SignedState,
} from '@trickle/protocol/types';
import { runTrickle, spawnTrickle, watchTestFlags } from './helpers/trickle-bin.js';
import { encodeChannelRecord, fileChannelStore, type DeviceChannelRecord } from '@trickle/client/store';

/**
 * The `trickle` bin as a child process, as an operator runs it, against a chain server process. Channel states are
 * signed here with both keys and written to device stores exactly as the device SDK writes them.
 */

const HUB = 1;
const CHALLENGE = 3600n;

describe('trickle CLI', () => {
  let server: ChainServer;
  let dir: string;
  let adjudicator: Address;
  let token: Address;
  const keyFile = (i: number) => join(dir, `key-${i}`);

  beforeAll(async () => {
    server = await startChainServer({ accounts: 10 });
    dir = mkdtempSync(join(tmpdir(), 'trickle-cli-'));
    const deployer = server.wallet(0);
    adjudicator = (await deployAdjudicator(deployer)).address;
    token = (await deployToken(deployer, 'usdt')).address;
    for (const i of [1, 2, 3, 4, 5, 6]) await mintTestToken(deployer, token, server.addresses[i]!, 10n ** 12n);
    for (let i = 0; i < 10; i++) writeFileSync(keyFile(i), `${server.accounts[i]}\n`, { mode: 0o600 });
  });
  afterAll(async () => {
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const trickle = (args: string[], env: Record<string, string> = {}) =>
    runTrickle(args, { rpcUrl: server.url, adjudicator }, env);

  /** Open a token channel on-chain: the device deposits, the hub optionally tops up. */
  async function openChannel(
    device: number,
    deposit: bigint,
    hubDeposit = 0n,
  ): Promise<{ params: ChannelParams; channelId: ChannelId; funding: Funding }> {
    const params: ChannelParams = {
      chainId: server.chainId,
      adjudicator,
      device: server.addresses[device]!,
      hub: server.addresses[HUB]!,
      token,
      challengeDuration: CHALLENGE,
      salt: `0x${randomBytes(32).toString('hex')}` as Bytes32,
    };
    await approve(server.wallet(device), token, adjudicator, deposit);
    const { channelId } = await new Adjudicator(adjudicator, server.wallet(device)).open(params, deposit);
    if (hubDeposit > 0n) {
      await approve(server.wallet(HUB), token, adjudicator, hubDeposit);
      await new Adjudicator(adjudicator, server.wallet(HUB)).deposit(channelId, hubDeposit);
    }
    expect(channelId).toBe(channelIdOf(params));
    return { params, channelId, funding: { device: deposit, hub: hubDeposit } };
  }

  /** A state signed by both the device and the hub. */
  function sign(
    params: ChannelParams,
    device: number,
    s: { version: bigint; paidByDevice: bigint; paidByHub: bigint; isFinal?: boolean },
  ): SignedState {
    const ctx = channelContext(params, { device: 0n, hub: 0n });
    const state = {
      channelId: ctx.channelId,
      version: s.version,
      paidByDevice: s.paidByDevice,
      paidByHub: s.paidByHub,
      round: 0n,
      ...NO_LOCKS,
      isFinal: s.isFinal ?? false,
    };
    const digest = stateDigest(ctx.separator, state);
    return {
      state,
      deviceSig: signatureToHex(nobleSigner(server.accounts[device]!).signDigest(digest)),
      hubSig: signatureToHex(nobleSigner(server.accounts[HUB]!).signDigest(digest)),
    };
  }

  function record(
    ch: { params: ChannelParams; channelId: ChannelId; funding: Funding },
    latest: SignedState,
  ): DeviceChannelRecord {
    return {
      params: ch.params,
      channelId: ch.channelId,
      funding: ch.funding,
      latest,
      signedVersion: latest.state.version,
    };
  }

  const balances = async (device: number) => ({
    device: await balanceOf(server.provider, token, server.addresses[device]!),
    hub: await balanceOf(server.provider, token, server.addresses[HUB]!),
  });

  it('show --json, export/import round trip, force-close, challenge refused (exit 3), settle after time travel', async () => {
    const device = 2;
    const ch = await openChannel(device, 1_000_000n, 200_000n);
    const store = join(dir, 'store-a');
    const v2 = sign(ch.params, device, { version: 2n, paidByDevice: 25_000n, paidByHub: 0n });
    const v3 = sign(ch.params, device, { version: 3n, paidByDevice: 25_000n, paidByHub: 5_000n });
    await fileChannelStore(store).save(record(ch, v3));

    // show --json: on-chain view and the store's state, bigints as decimal strings.
    const shown = await trickle(['show', ch.channelId, '--store', store, '--json']);
    expect(shown.code).toBe(0);
    expect(shown.json).toMatchObject({
      ok: true,
      channelId: ch.channelId,
      chainId: 31337n,
      onChain: {
        status: 'open',
        depositDevice: '1000000',
        depositHub: '200000',
        device: server.addresses[device],
        hub: server.addresses[HUB],
      },
      store: {
        version: 3n,
        paidByDevice: 25_000n,
        paidByHub: 5_000n,
        verified: true,
        payoutDevice: '980000',
        payoutHub: '220000',
      },
      shouldChallenge: false,
    });
    const human = await trickle(['show', ch.channelId, '--store', store]);
    expect(human.code).toBe(0);
    expect(human.stdout).toMatch(/status\s+open/);
    expect(human.stdout).toMatch(/version 3, paidByDevice 25000, paidByHub 5000/);

    // export to a file and to stdout; import into an empty store; the same again is nothing to do (3).
    const backup = join(dir, 'a-backup.json');
    expect((await trickle(['export', ch.channelId, '--store', store, '--out', backup])).code).toBe(0);
    expect(readFileSync(backup, 'utf8')).toBe(encodeChannelRecord(record(ch, v3)));
    expect((await trickle(['export', ch.channelId, '--store', store])).stdout).toBe(
      encodeChannelRecord(record(ch, v3)),
    );
    const restored = join(dir, 'store-a-restored');
    const imported = await trickle(['import', backup, '--store', restored, '--json']);
    expect(imported).toMatchObject({ code: 0, json: { ok: true, channelId: ch.channelId, version: 3n } });
    expect(await fileChannelStore(restored).load(ch.channelId)).toEqual(record(ch, v3));
    expect((await trickle(['import', backup, '--store', restored])).code).toBe(3);
    // An older backup is refused; a forged one does not verify.
    const older = join(dir, 'a-v2.json');
    writeFileSync(older, encodeChannelRecord(record(ch, v2)));
    const refused = await trickle(['import', older, '--store', restored]);
    expect(refused.code).toBe(3);
    expect(refused.stderr).toMatch(/refusing to import version 2: the store already holds version 3/);
    const forged = join(dir, 'a-forged.json');
    writeFileSync(
      forged,
      encodeChannelRecord(record(ch, { ...v3, state: { ...v3.state, version: 9n, paidByHub: 900_000n } })),
    );
    const bad = await trickle(['import', forged, '--store', restored, '--json']);
    expect(bad.code).toBe(1);
    expect(bad.json).toMatchObject({ ok: false, error: { code: 'BAD_SIGNATURE', exitCode: 1 } });
    expect(bad.stderr).toMatch(/does not verify/);

    // Nothing to challenge while open; force-close with the store's latest; nothing newer to challenge (exit 3).
    expect((await trickle(['challenge', ch.channelId, '--store', store, '--key-file', keyFile(device)])).code).toBe(3);
    const closed = await trickle([
      'force-close',
      ch.channelId,
      '--store',
      store,
      '--key-file',
      keyFile(device),
      '--json',
    ]);
    expect(closed.code).toBe(0);
    expect(closed.json).toMatchObject({ ok: true, version: 3n });
    expect(closed.stderr).toMatch(/sending forceClose .* at version 3/);
    expect((await fileChannelStore(store).load(ch.channelId))?.closing).toBe('force');
    const nothingNewer = await trickle(['challenge', ch.channelId, '--store', store, '--key-file', keyFile(device)]);
    expect(nothingNewer.code).toBe(3);
    expect(nothingNewer.stderr).toMatch(
      /nothing newer to challenge with: the registered version is 3, the store's latest is 3/,
    );
    expect(nothingNewer.stderr).toMatch(/trickle settle/);
    const early = await trickle(['settle', ch.channelId, '--key-file', keyFile(device)]);
    expect(early.code).toBe(3);
    expect(early.stderr).toMatch(/too early to settle/);

    // After the deadline: challenging is over (3, pointing at settle), settling pays exactly the latest state.
    await server.increaseTime(CHALLENGE + 1n);
    const late = await trickle(['challenge', ch.channelId, '--store', store, '--key-file', keyFile(device)]);
    expect(late.code).toBe(3);
    expect(late.stderr).toMatch(/challenge period ended at \d{4}-\d\d-\d\dT[\d:.]+Z; nothing to challenge/);
    expect(late.stderr).toMatch(/run `trickle settle 0x[0-9a-f]{64}`/);
    const before = await balances(device);
    const settled = await trickle(['settle', ch.channelId, '--key-file', keyFile(9), '--json']);
    expect(settled.code).toBe(0);
    expect(settled.json).toMatchObject({ ok: true, version: 3n, payoutDevice: '980000', payoutHub: '220000' });
    const after = await balances(device);
    expect(after.device - before.device).toBe(1_000_000n - 25_000n + 5_000n);
    expect(after.hub - before.hub).toBe(200_000n - 5_000n + 25_000n);
    expect((await trickle(['settle', ch.channelId, '--key-file', keyFile(9)])).code).toBe(3);
    expect((await trickle(['show', ch.channelId, '--json'])).json).toMatchObject({ onChain: { status: 'closed' } });
  });

  it("challenge replaces a stale force close with the store's newer state; show says so first", async () => {
    const device = 3;
    const ch = await openChannel(device, 1_000_000n, 100_000n);
    const old = sign(ch.params, device, { version: 2n, paidByDevice: 1_000n, paidByHub: 0n });
    const latest = sign(ch.params, device, { version: 4n, paidByDevice: 1_000n, paidByHub: 60_000n });
    const store = join(dir, 'store-b');
    await fileChannelStore(store).save(record(ch, latest));
    await new Adjudicator(adjudicator, server.wallet(HUB)).forceClose(old);

    const shown = await trickle(['show', ch.channelId, '--store', store, '--json']);
    expect(shown.json).toMatchObject({ shouldChallenge: true, onChain: { status: 'closing', version: 2n } });
    expect(BigInt(shown.json.onChain.secondsLeft)).toBeGreaterThan(3000n);
    expect((await trickle(['show', ch.channelId, '--store', store])).stdout).toMatch(
      /you should challenge: your latest state \(version 4\) is newer than the registered one \(version 2\)/,
    );

    // Anyone may challenge: the sender here is neither party.
    const challenged = await trickle(['challenge', ch.channelId, '--store', store, '--key-file', keyFile(9), '--json']);
    expect(challenged.code).toBe(0);
    expect(challenged.json).toMatchObject({ ok: true, registered: '2', version: 4n });
    expect((await new Adjudicator(adjudicator, server.provider).getChannel(ch.channelId)).version).toBe(4n);
    expect((await trickle(['show', ch.channelId, '--store', store, '--json'])).json).toMatchObject({
      shouldChallenge: false,
    });
  });

  it('close pays out a final state at once, and explains force-close when there is none', async () => {
    const device = 4;
    const ch = await openChannel(device, 500_000n);
    const store = join(dir, 'store-c');
    await fileChannelStore(store).save(
      record(ch, sign(ch.params, device, { version: 1n, paidByDevice: 7_000n, paidByHub: 0n })),
    );
    const notFinal = await trickle(['close', ch.channelId, '--store', store, '--key-file', keyFile(device)]);
    expect(notFinal.code).toBe(4);
    expect(notFinal.stderr).toMatch(/no final state both signed/);
    expect(notFinal.stderr).toMatch(/trickle force-close/);

    await fileChannelStore(store).save(
      record(ch, sign(ch.params, device, { version: 2n, paidByDevice: 7_000n, paidByHub: 0n, isFinal: true })),
    );
    const before = await balances(device);
    const closed = await trickle(['close', ch.channelId, '--store', store, '--key-file', keyFile(device), '--json']);
    expect(closed).toMatchObject({
      code: 0,
      json: { ok: true, version: 2n, payoutDevice: '493000', payoutHub: '7000' },
    });
    expect((await balances(device)).device - before.device).toBe(493_000n);
    expect((await trickle(['close', ch.channelId, '--store', store, '--key-file', keyFile(device)])).code).toBe(3);
  });

  it('force-close names a state the device signed and the hub refused but holds, and what it pays the hub more', async () => {
    const device = 4;
    const ch = await openChannel(device, 300_000n, 50_000n);
    const store = join(dir, 'store-refused');
    const v2 = sign(ch.params, device, { version: 2n, paidByDevice: 10_000n, paidByHub: 1_000n });
    // Version 3, the device's alone: the hub refused it (as the device SDK records it), paying the hub 7,000 more.
    const refused = { ...v2.state, version: 3n, paidByDevice: 17_000n };
    await fileChannelStore(store).save({ ...record(ch, v2), signedVersion: 3n, refused });

    const closed = await trickle([
      'force-close',
      ch.channelId,
      '--store',
      store,
      '--key-file',
      keyFile(device),
      '--json',
    ]);
    expect(closed.code).toBe(0);
    expect(closed.json).toMatchObject({ ok: true, version: 2n, unvoided: { version: 3n, exposure: '7000' } });
    expect(closed.stderr).toMatch(
      /warning: the hub refused but holds version 3, signed by this device, paying it 7000 more than version 2/,
    );
    // The marker stays with the record: the exposure lasts until the challenge period ends.
    expect(await fileChannelStore(store).load(ch.channelId)).toMatchObject({ closing: 'force', refused });

    // A record whose latest state is above the refused one (voided) shows none, in the text output too.
    const other = await openChannel(device, 300_000n, 50_000n);
    const otherStore = join(dir, 'store-voided');
    const w4 = sign(other.params, device, { version: 4n, paidByDevice: 10_000n, paidByHub: 0n });
    await fileChannelStore(otherStore).save({
      ...record(other, w4),
      refused: { ...w4.state, version: 3n, paidByDevice: 17_000n },
    });
    const plain = await trickle(['force-close', other.channelId, '--store', otherStore, '--key-file', keyFile(device)]);
    expect(plain.code).toBe(0);
    expect(plain.stdout).toMatch(/force-closed .* at version 4/);
    expect(plain.stdout + plain.stderr).not.toMatch(/refused|exposed/);
  });

  it('errors say what to do, with documented exit codes', async () => {
    const unknown = `0x${'ab'.repeat(32)}`;
    const notFound = await trickle(['show', unknown, '--json']);
    expect(notFound.code).toBe(4);
    expect(notFound.json).toMatchObject({ ok: false, error: { code: 'WRONG_CHANNEL', exitCode: 4 } });

    const device = 6;
    const ch = await openChannel(device, 100_000n);
    const empty = join(dir, 'store-empty');
    const noState = await trickle(['force-close', ch.channelId, '--store', empty, '--key-file', keyFile(device)]);
    expect(noState.code).toBe(4);
    expect(noState.stderr).toMatch(/no state for channel .* in the store/);
    const noStore = await trickle(['force-close', ch.channelId, '--key-file', keyFile(device)]);
    expect(noStore.code).toBe(1);
    expect(noStore.stderr).toMatch(/--store <dir> \(or TRICKLE_STORE\) is required/);
    // Only a participant may force-close: refused locally with a hint, before any transaction.
    const store = join(dir, 'store-d');
    await fileChannelStore(store).save(
      record(ch, sign(ch.params, device, { version: 1n, paidByDevice: 1n, paidByHub: 0n })),
    );
    const stranger = await trickle(['force-close', ch.channelId, '--store', store, '--key-file', keyFile(9)]);
    expect(stranger.code).toBe(1);
    expect(stranger.stderr).toMatch(/only the channel's device .* or hub .* may force-close/);
    // A state both signed that pays the device more than the channel holds: the contract refuses it (exit 2).
    await fileChannelStore(store).save(
      record(ch, sign(ch.params, device, { version: 2n, paidByDevice: 1n, paidByHub: 5_000n })),
    );
    const reverted = await trickle([
      'force-close',
      ch.channelId,
      '--store',
      store,
      '--key-file',
      keyFile(device),
      '--json',
    ]);
    expect(reverted.code).toBe(2);
    expect(reverted.stderr).toMatch(/the adjudicator refused the transaction: StateExceedsDeposits\(/);
    expect(reverted.json).toMatchObject({
      ok: false,
      error: { code: 'CHAIN_REVERTED', exitCode: 2, details: { error: 'StateExceedsDeposits' } },
    });
    expect((await trickle(['withdraw', '--token', token, '--key-file', keyFile(device)])).code).toBe(3);
    expect((await trickle(['show', 'not-an-id'])).code).toBe(1);
    expect((await trickle(['frobnicate'])).code).toBe(1);
    const help = await trickle(['challenge', '--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/Exit codes:[\s\S]*3 {2}nothing to do/);
    const offline = await trickle(['show', ch.channelId], { TRICKLE_RPC_URL: 'http://127.0.0.1:9' });
    expect(offline.code).toBe(5);
    expect(offline.stderr).toMatch(/cannot reach the chain at http:\/\/127\.0\.0\.1:9/);
  });

  it('`trickle watch` started after a stale force close reads the device store, challenges, and stops on SIGTERM', async () => {
    const device = 5;
    const ch = await openChannel(device, 1_000_000n, 300_000n);
    const old = sign(ch.params, device, { version: 1n, paidByDevice: 10_000n, paidByHub: 0n });
    const latest = sign(ch.params, device, { version: 3n, paidByDevice: 10_000n, paidByHub: 250_000n });
    const store = join(dir, 'store-e');
    await fileChannelStore(store).save(record(ch, latest));
    const cheat = await new Adjudicator(adjudicator, server.wallet(HUB)).forceClose(old);

    const watch = spawnTrickle(
      ['watch', '--db', join(dir, 'watch-db'), '--store', store, '--key-file', keyFile(8), ...watchTestFlags(100)],
      { rpcUrl: server.url, adjudicator },
    );
    const { child, lines, exited } = watch;
    try {
      const end = Date.now() + 20_000;
      while (!lines.some((l) => l['event'] === 'challenge-mined')) {
        if (Date.now() > end || child.exitCode !== null)
          throw new Error(
            `watch did not challenge: ${watch.stderr}\n${lines.map((l) => JSON.stringify(l)).join('\n')}`,
          );
        await new Promise((r) => setTimeout(r, 50));
      }
      expect(lines.find((l) => l['event'] === 'challenge-mined')).toMatchObject({
        channelId: ch.channelId,
        version: '3',
        replaced: '1',
      });
      expect((await new Adjudicator(adjudicator, server.provider).getChannel(ch.channelId)).version).toBe(3n);
      const api = lines.find((l) => l['event'] === 'started')!['api'] as string;
      const listed = (await (await fetch(`${api}/channels`)).json()) as { channels: Record<string, any>[] };
      expect(listed.channels).toEqual([
        expect.objectContaining({
          channelId: ch.channelId,
          version: '3',
          source: 'store',
          dispute: expect.objectContaining({ outcome: 'challenged' }),
        }),
      ]);
      expect(await server.latestTimestamp()).toBeLessThan(cheat.forceClosed.deadline);
    } finally {
      child.kill('SIGTERM');
    }
    expect(await exited).toBe(0);
    expect(lines.at(-1)).toMatchObject({ event: 'stopped' });
  });
});
