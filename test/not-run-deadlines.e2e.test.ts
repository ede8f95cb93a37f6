/**
 * A device whose process does not run for a while (a blocked event loop, a long GC, a device or VM suspended) may
 * wake up past a deadline with the hub's answer already in its socket. Timers run before I/O in a turn of the event
 * loop, so a deadline judged in its timer's own callback judged that answer missing: a request failed TIMEOUT, a
 * cooperative close went to a force close on-chain, a routed payment that was delivered was answered TIMEOUT. The
 * client now judges each deadline after the I/O already waiting. The hub runs as its own process here (so it answers
 * while the device's process is held) on a JSON-RPC chain server process.
 */
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WebSocket } from 'ws';
import { startChainServer, type ChainServer } from '@trickle/devchain/chainServer';
import { deployAdjudicator, deployToken } from '@trickle/chain/deploy';
import { approve, mintTestToken } from '@trickle/chain/erc20';
import { Adjudicator } from '@trickle/chain/adjudicator';
import { decodeFrame, type Message } from '@trickle/protocol/codec';
import { isTrickleError } from '@trickle/protocol/errors';
import { nobleSigner } from '@trickle/protocol/signer';
import type { Address, ChannelId } from '@trickle/protocol/types';
import { TrickleClient, type ClientOptions } from '@trickle/client/client';
import { memoryChannelStore } from '@trickle/client/store';
import { adjudicatorClientChain } from '@trickle/client/chain';
import { freePort, startHubProcess, type HubProcess } from './helpers/hub-process.js';
import { holdEventLoop } from './helpers/wait.js';

/** How long the device's process does not run: well past each deadline below, and time for the hub to answer. */
const HOLD_MS = 3_000;

/**
 * The first frame this process sends that `match` picks goes out; then, once the code that sent it has armed its
 * deadline, this process stops running for {@link HOLD_MS}. @returns whether it happened
 */
function holdAfterSending(match: (m: Message) => boolean): () => boolean {
  let held = false;
  const send = WebSocket.prototype.send;
  const spy = vi.spyOn(WebSocket.prototype, 'send').mockImplementation(function (
    this: WebSocket,
    ...args: Parameters<WebSocket['send']>
  ) {
    send.apply(this, args);
    if (held || !match(decodeFrame(args[0] as Uint8Array))) return;
    held = true;
    spy.mockRestore();
    process.nextTick(() => holdEventLoop(HOLD_MS));
  });
  return () => held;
}

describe('deadlines that pass while the device does not run', () => {
  let server: ChainServer;
  let dir: string;
  let hub: HubProcess | undefined;
  let token: Address;
  let adjudicator: Address;
  const clients: TrickleClient[] = [];

  beforeAll(async () => {
    server = await startChainServer({ accounts: 6 });
    dir = mkdtempSync(join(tmpdir(), 'trickle-not-run-'));
    const deployer = server.wallet(0);
    adjudicator = (await deployAdjudicator(deployer)).address;
    token = (await deployToken(deployer, 'usdt')).address;
    for (const i of [1, 2, 3, 4, 5]) await mintTestToken(deployer, token, server.addresses[i]!, 10n ** 12n);
    const keyFile = join(dir, 'hub.key');
    writeFileSync(keyFile, `${server.accounts[1]}\n`, { mode: 0o600 });
    hub = await startHubProcess({
      rpc: server.url,
      adjudicator,
      keyFile,
      store: join(dir, 'hub-store'),
      port: await freePort(),
    });
  }, 60_000);
  afterAll(async () => {
    vi.restoreAllMocks();
    for (const c of clients) c.disconnect();
    await hub?.kill();
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  /** The hub puts `amount` of its own funds into a channel (what it pays the payee from). */
  async function hubDeposit(channelId: ChannelId, amount: bigint): Promise<void> {
    const wallet = server.wallet(1);
    await approve(wallet, token, adjudicator, amount);
    await new Adjudicator(adjudicator, wallet).deposit(channelId, amount);
  }

  async function device(i: number, options: Partial<ClientOptions> = {}): Promise<TrickleClient> {
    const c = await TrickleClient.connect({
      url: hub!.url,
      signer: nobleSigner(server.accounts[i]!),
      store: memoryChannelStore(),
      chain: adjudicatorClientChain({ wallet: server.wallet(i), chainId: server.chainId, adjudicator }),
      ...options,
    });
    clients.push(c);
    return c;
  }

  it('a request answered while the device did not run past requestTimeoutMs resolves with the answer', async () => {
    const c = await device(2, { requestTimeoutMs: 500 });
    const held = holdAfterSending((m) => m.t === 'open');
    const ch = await c.openChannel({ token, deposit: 1_000_000n });
    expect(held()).toBe(true);
    expect((await ch.pay(3n)).paidByDevice).toBe(3n);
  });

  it('a close countersigned while the device did not run past its timeout closes cooperatively, not by force', async () => {
    const c = await device(3);
    const ch = await c.openChannel({ token, deposit: 1_000_000n });
    await ch.pay(7n);
    const held = holdAfterSending((m) => m.t === 'close');
    const closed = await c.close(ch.channelId, { timeoutMs: 1_000 });
    expect(held()).toBe(true);
    expect(closed.mode).toBe('cooperative');
    expect(closed.state.state.paidByDevice).toBe(7n);
  });

  it('a routed payment whose receipt came while the payer did not run past routeTimeoutMs resolves delivered', async () => {
    const payer = await device(4, { routeTimeoutMs: 1_000 });
    const payee = await device(5);
    const from = await payer.openChannel({ token, deposit: 1_000_000n });
    const to = await payee.openChannel({ token, deposit: 1_000_000n });
    await hubDeposit(to.channelId, 1_000n);
    // The hold starts once the payee has countersigned its credit: the hub then commits and sends the receipt.
    const held = holdAfterSending((m) => m.t === 'ack' && m.channelId === to.channelId);
    let paid;
    for (let attempt = 0; ; attempt++) {
      try {
        paid = await from.pay(11n, { to: payee.address });
        break;
      } catch (e) {
        // The hub's deposit is seen by its chain watcher a poll later.
        if (!isTrickleError(e, 'HUB_LIQUIDITY') || attempt > 50) throw e;
        await new Promise((r) => setTimeout(r, 200));
      }
    }
    expect(held()).toBe(true);
    expect(paid.paidByDevice).toBe(11n);
    expect(to.latest.state.paidByHub).toBe(11n);
  });
});
