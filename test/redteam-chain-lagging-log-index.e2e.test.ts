import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startChainServer, type ChainServer } from '@trickle/devchain/chainServer';
import { Adjudicator } from '@trickle/chain/adjudicator';
import { connectChain } from '@trickle/chain/rpc';
import { isTrickleError } from '@trickle/protocol/errors';
import { logHidingRelay } from './helpers/rpc-relay.js';
import { runTrickle } from './helpers/trickle-bin.js';
import { openWatchedChannel } from './helpers/watched-channel.js';

/**
 * A load-balanced node whose log index lags behind its state: the adjudicator's record of a closing channel names the
 * block of its registration, and `eth_getLogs` over that block comes back empty for a moment. Reading the channel
 * (`getChannel`, and so `trickle settle`, `show`, the watchtower and the device's guards) took that empty answer as
 * final and failed (`INTERNAL`, exit 4 from the CLI); run again a moment later it worked. The read is made again a few
 * times (~4 s in all) before it fails.
 */
const DEVICE = 1;
const HUB = 2;
const SENDER = 3;

describe('red team (chain): a node whose log index lags behind its state', () => {
  let chain: ChainServer;
  let relay: Awaited<ReturnType<typeof logHidingRelay>>;
  let dir: string;

  beforeAll(async () => {
    chain = await startChainServer({ accounts: 4 });
    relay = await logHidingRelay(chain.url);
    dir = mkdtempSync(join(tmpdir(), 'trickle-rt-lagging-index-'));
    writeFileSync(join(dir, 'gas.key'), `${chain.accounts[SENDER]}\n`, { mode: 0o600 });
  });
  afterAll(async () => {
    await new Promise((r) => relay?.server.close(r));
    await chain?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('reads a closing channel once the index has the registration, and settles it; fails INTERNAL only if it never does', async () => {
    const { adj, channelId, sign } = await openWatchedChannel(chain, { device: DEVICE, hub: HUB, salt: 'd4' });
    const { blockNumber } = await adj.connect(chain.wallet(DEVICE)).forceClose(sign(1n, 100n));
    const { provider } = await connectChain(relay.url, { timeoutMs: 5_000, pollingIntervalMs: 50 });
    const reader = new Adjudicator(adj.address, provider);

    relay.state.block = blockNumber;
    relay.state.times = 2;
    expect(await reader.getChannel(channelId)).toMatchObject({ status: 'closing', version: 1n, payoutHub: 100n });
    expect(relay.state.hidden).toBe(2);

    // An index that never catches up: a typed error after the retries, not a wrong answer.
    relay.state.hidden = 0;
    relay.state.times = Infinity;
    const err = await reader.getChannel(channelId).catch((e: unknown) => e);
    expect(isTrickleError(err, 'INTERNAL')).toBe(true);
    expect(relay.state.hidden).toBe(5);

    // `trickle settle` after the deadline, through the lagging node: paid out.
    await chain.increaseTime(3_601n);
    relay.state.hidden = 0;
    relay.state.times = 1;
    const settled = await runTrickle(
      ['settle', channelId, '--key-file', join(dir, 'gas.key'), '--json'],
      { rpcUrl: relay.url, adjudicator: adj.address },
      {},
    );
    expect(settled).toMatchObject({ code: 0, json: { ok: true, payoutDevice: '9900', payoutHub: '100' } });
    expect(relay.state.hidden).toBe(1);
  });
});
