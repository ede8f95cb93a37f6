import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashPreimage } from '@trickle/protocol/locks';
import { Adjudicator } from '@trickle/chain/adjudicator';
import type { Bytes32, ChannelId } from '@trickle/protocol/types';
import type { Hub } from '@trickle/hub/hub';
import { adjudicatorHubChain, type HubChain } from '@trickle/hub/chain-watcher';
import { TrickleError } from '@trickle/protocol/errors';
import { createWorld, type World } from './helpers/harness.js';
import { waitFor } from './helpers/wait.js';

/** These tests run locks of seconds (to see them expire): their devices take locks that short (`minLockSeconds`). */
const SHORT_LOCKS = { minLockSeconds: 0 };

/**
 * The hub reveals a conditional route's preimage on-chain when the payer has not taken its claim `lockMarginSeconds`
 * before the lock expires — unless the adjudicator records it as revealed already: a second reveal changes nothing
 * on-chain and only costs the hub gas. A real EDR chain, a real hub over WebSocket and real device clients; nothing
 * is timed: the test waits for the hub's own log line.
 */
const newKey = () => `0x${randomBytes(32).toString('hex')}` as Bytes32;
const state = (hub: Hub, id: ChannelId) => hub.channels.get(id)!.latest.state;

function capture() {
  const lines: { msg?: string; [k: string]: unknown }[] = [];
  const logger = pino({ level: 'info' }, { write: (s: string) => void lines.push(JSON.parse(s)) });
  const count = (msg: string) => lines.filter((l) => l.msg === msg).length;
  return { lines, logger, count };
}

const SKIPPED = 'the preimage is revealed on-chain already: not revealing it again';
const REVEALING = 'the payer has not taken the hub’s claim: revealing the preimage on-chain';
const FAILED = 'revealing a preimage on-chain failed; retrying';

describe('a preimage already revealed on-chain', () => {
  let w: World;
  beforeAll(async () => {
    w = await createWorld({ accounts: 8, client: SHORT_LOCKS });
  });
  afterAll(() => w?.close());

  /**
   * A hub (its chain as given), devices A and B; A pays B 2,000 on a lock, B claims and is paid, A is away: A's lock
   * stays in its channel and the hub reveals its preimage `margin` seconds before the expiry unless it is revealed.
   */
  async function awayPayer(name: string, a: number, b: number, chain?: (c: HubChain) => HubChain) {
    const log = capture();
    const margin = 3;
    const hub = await w.startHub({
      storePath: join(w.dir, name),
      limits: { lockMarginSeconds: margin },
      more: { logger: log.logger, ...(chain && { chain: chain(realChain()) }) },
    });
    const payer = await w.client(a);
    const payee = await w.client(b);
    const ach = await payer.openChannel({ token: w.token, deposit: 1_000_000n, challengeDuration: 2n });
    const bch = await payee.openChannel({ token: w.token, deposit: 1_000_000n, challengeDuration: 2n });
    await w.hubDeposit(bch.channelId, 1_000_000n);
    const key = newKey();
    bch.onConditionalPayment((p) => void p.claim(key));
    const ahead = Number((await w.chain.provider.getBlock('latest'))!.timestamp) - Math.floor(Date.now() / 1000);
    const handle = ach.pay(2_000n, {
      to: payee.address,
      lock: { hash: hashPreimage(key), expiresIn: Math.max(ahead, 0) + 3 * margin + 10 },
    });
    await handle.locked;
    await payer.disconnect(); // A is gone before the hub can claim: its lock stays, and the hub guards it on-chain
    await waitFor(() => state(hub, bch.channelId).paidByHub === 2_000n, 30_000); // B was paid on its claim
    expect(hub.channels.get(ach.channelId)!.locks?.map((l) => l.hash)).toEqual([hashPreimage(key)]);
    const close = async () => {
      await payee.disconnect();
      await hub.close();
      w.hub = undefined;
    };
    return { log, key, close };
  }
  const realChain = () =>
    adjudicatorHubChain({
      provider: w.chain.provider,
      chainId: w.chain.chainId,
      adjudicator: w.adjudicator,
      runner: w.chain.wallet(1),
    });
  /** A bystander's account reveals the preimage. */
  const bystanderReveals = (key: Bytes32) => new Adjudicator(w.adjudicator, w.chain.wallet(7)).reveal(key);

  it('is not revealed again by the hub when the payer is away: no transaction, the reveal reported', async () => {
    const { log, key, close } = await awayPayer('hub-skip', 2, 3);
    const hubAddress = w.chain.addresses[1]!;
    const nonce = await w.chain.provider.getTransactionCount(hubAddress, 'latest');
    const other = await bystanderReveals(key);
    expect(other.revealed).toBeDefined();

    await waitFor(() => log.count(SKIPPED) + log.count(REVEALING) >= 1, 90_000);
    expect(log.count(REVEALING)).toBe(0);
    const skipped = log.lines.find((l) => l.msg === SKIPPED)!;
    expect(skipped).toMatchObject({ hash: hashPreimage(key), revealedAt: String(other.revealedAt) });
    expect(await w.chain.provider.getTransactionCount(hubAddress, 'latest')).toBe(nonce);
    expect(await w.chain.provider.getTransactionCount(hubAddress, 'pending')).toBe(nonce);
    await close();
  }, 180_000);

  it('a reveal of the hub that fails while another party’s lands counts as done: not retried, the reveal reported', async () => {
    let calls = 0;
    let other: { revealedAt: bigint } | undefined;
    const { log, key, close } = await awayPayer('hub-meanwhile', 4, 5, (c) => ({
      ...c,
      // The hub's send gives up (a fee cap, say) while a bystander's reveal is mined.
      reveal: async (preimage) => {
        calls++;
        other = await bystanderReveals(preimage);
        throw new TrickleError('LIMIT_EXCEEDED', 'reveal not mined at the fee cap');
      },
    }));
    await waitFor(() => log.count(SKIPPED) + log.count(FAILED) >= 1, 90_000);
    expect(log.count(FAILED)).toBe(0);
    expect(log.count(REVEALING)).toBe(1);
    expect(calls).toBe(1);
    expect(log.lines.find((l) => l.msg === SKIPPED)).toMatchObject({
      hash: hashPreimage(key),
      revealedAt: String(other!.revealedAt),
    });
    await close();
  }, 180_000);
});
