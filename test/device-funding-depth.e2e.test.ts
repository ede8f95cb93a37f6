import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { WebSocket } from 'ws';
import { Adjudicator } from '@trickle/chain/adjudicator';
import { adjudicatorClientChain } from '@trickle/client/chain';
import type { ClientChannel } from '@trickle/client/channel';
import type { ClientChain, TrickleClient } from '@trickle/client/client';
import { payouts } from '@trickle/protocol/channel';
import { decodeFrame, type Message } from '@trickle/protocol/codec';
import type { ChannelId } from '@trickle/protocol/types';
import { createWorld, type World } from './helpers/harness.js';
import { waitFor } from './helpers/wait.js';

/**
 * Red team: a hub credits a device against a deposit still in the newest blocks. The hub here counts its deposits at
 * the head (confirmations 0, as a hostile hub would whatever it is configured with), so it routes a payment against
 * a top-up at once; the device's chain counts deposits only 2 blocks deep (`fundingConfirmations: 2`). A credit above
 * the deposit 2 blocks deep is refused INSUFFICIENT_FUNDS until the top-up is that deep: a top-up reorganised away
 * before then leaves the device with no state above the deposits (one the adjudicator would refuse to register, so
 * the credit, paid for in goods, would be lost).
 */
describe('a hub credit against a deposit not yet fundingConfirmations deep', () => {
  let w: World;
  let payee: TrickleClient;
  let payeeChain: ClientChain;
  let pch: ClientChannel;
  let ech: ClientChannel;
  /** Every frame sent on a WebSocket in this process (devices and hub). */
  const frames: Message[] = [];
  /** The codes the payee refused hub proposals of its channel with. */
  const refusals = () =>
    frames.flatMap((f) => (f.t === 'reject' && f.channelId === ech.channelId ? [(f as { code: string }).code] : []));
  const onChain = async (id: ChannelId) => {
    const c = await new Adjudicator(w.adjudicator, w.chain.provider).getChannel(id);
    return { device: c.depositDevice, hub: c.depositHub };
  };
  /** A routed payment to the payee: 'paid', or the code it was refused with. */
  const pay = (amount: bigint) =>
    pch.pay(amount, { to: payee.address }).then(
      () => 'paid',
      (e: unknown) => (e as { code?: string }).code ?? String(e),
    );

  beforeAll(async () => {
    const send = WebSocket.prototype.send;
    vi.spyOn(WebSocket.prototype, 'send').mockImplementation(function (this: WebSocket, data: unknown, ...rest) {
      try {
        frames.push(decodeFrame(data as Uint8Array));
      } catch {
        /* not a frame of ours */
      }
      return (send as (...a: unknown[]) => void).call(this, data, ...rest);
    });
    w = await createWorld({ accounts: 5 });
    await w.startHub();
    payeeChain = adjudicatorClientChain({
      wallet: w.chain.wallet(3),
      chainId: w.chain.chainId,
      adjudicator: w.adjudicator,
      fundingConfirmations: 2,
    });
    const payer = await w.client(2);
    payee = await w.client(3, { chain: payeeChain });
    pch = await payer.openChannel({ token: w.token, deposit: 1_000_000n });
    ech = await payee.openChannel({ token: w.token, deposit: 1_000n });
    // A first deposit of the hub, already deep: the device counts it and takes a credit from it.
    await w.hubDeposit(ech.channelId, 500n);
    await w.chain.mine(2);
    expect(await pay(300n)).toBe('paid');
    await waitFor(() => ech.latest.state.paidByHub === 300n);
  });
  afterAll(async () => {
    vi.restoreAllMocks();
    await w?.close();
  });

  it('refuses a credit above the deep deposit (INSUFFICIENT_FUNDS) until the top-up is 2 blocks deep', async () => {
    await w.hubDeposit(ech.channelId, 1_000n); // the hub sees it at the head, and routes against it at once
    expect(await onChain(ech.channelId)).toEqual({ device: 1_000n, hub: 1_500n });
    expect(refusals()).toEqual([]);
    expect(await pay(1_000n)).toBe('NO_ROUTE'); // 1,300 > 500: the payee refused the hub's credit
    expect(refusals()).toEqual(['INSUFFICIENT_FUNDS']);
    expect(ech.latest.state.paidByHub).toBe(300n);
    expect(await payeeChain.readFunding(ech.channelId)).toEqual({ device: 1_000n, hub: 500n });

    await w.chain.mine(1);
    expect(await pay(1_000n)).toBe('NO_ROUTE'); // 1 block on top of it: not yet
    expect(refusals()).toEqual(['INSUFFICIENT_FUNDS', 'INSUFFICIENT_FUNDS']);
    expect(ech.latest.state.paidByHub).toBe(300n);

    await w.chain.mine(1);
    expect(await payeeChain.readFunding(ech.channelId)).toEqual({ device: 1_000n, hub: 1_500n });
    expect(await pay(1_000n)).toBe('paid');
    await waitFor(() => ech.latest.state.paidByHub === 1_300n);
    expect(refusals()).toHaveLength(2);
  });

  it('a top-up reorganised away before it is deep leaves the device no state above the deposits', async () => {
    const snapshot = await w.chain.snapshot();
    await w.hubDeposit(ech.channelId, 1_000n); // the hub: 2,500 at the head
    expect(await pay(1_000n)).toBe('NO_ROUTE'); // 2,300 > 1,500 two blocks deep
    expect(refusals()).toHaveLength(3);
    const latest = ech.latest;
    expect(latest.state.paidByHub).toBe(1_300n);

    await w.chain.revert(snapshot); // the top-up is gone
    await w.chain.mine(3);
    const funding = await onChain(ech.channelId);
    expect(funding).toEqual({ device: 1_000n, hub: 1_500n });
    // The device's latest state is within the deposits: the adjudicator takes it (a force close of the device).
    expect(payouts(latest.state, funding).hub).toBeGreaterThanOrEqual(0n);
    const { hash } = await payeeChain.forceClose(latest);
    expect(hash).toMatch(/^0x/);
    expect((await new Adjudicator(w.adjudicator, w.chain.provider).getChannel(ech.channelId)).version).toBe(
      latest.state.version,
    );
  });
});
