import { describe, expect, it } from 'vitest';
import { clearRound, hashOrder, type Order, type PublishedClearing } from '@trickle/market';
import type { Message } from '@trickle/protocol/codec';
import { stateDigest } from '@trickle/protocol/eip712';
import type { TrickleError } from '@trickle/protocol/errors';
import { toHex } from '@trickle/protocol/hex';
import type { Signer } from '@trickle/protocol/signer';
import type { Bytes32, State } from '@trickle/protocol/types';
import { standaloneChannel } from './channel.fixture.js';
import { ROUND, adjudicator, device, deviceMarket, domain, hubKey, other, sendClearing } from './market.fixture.js';

/**
 * Red team: a round credit refused after the market's check passed. The device's escrowed bid must stay kept until a
 * credit of its round is countersigned and durable: a hub that sends the honest credit with a bad signature (or any
 * credit the device then refuses: its store, its application's guard), then a second signed record of the round that
 * leaves the bid out and credits nothing, must get BAD_CLEARING — not the escrow. A real ClientChannel and market
 * session, wired as the client wires them (the credit guard runs the check, a round credit reported lands it); the hub
 * is played by this test with real keys and the real clearing.
 */
const signOrder = (o: Order, key: Signer) => {
  const { arrival: _a, ...terms } = o;
  return toHex(key.signDigest(hashOrder(domain, terms)));
};

async function world() {
  const market = deviceMarket(() => ({ t: 'accepted', id: 0, arrival: 7n }));
  const errors: TrickleError[] = [];
  market.onError((e) => errors.push(e));
  const { ch, ctx, sent } = await standaloneChannel({
    device,
    hub: hubKey.address,
    adjudicator,
    funding: { device: 10_000n, hub: 10_000n },
    // The hub acks the device's own payments (the escrow).
    onSend: (m, channel) => {
      if (m.t === 'update' && !m.lock && !m.unlock)
        setTimeout(() =>
          channel.receive({
            t: 'ack',
            id: m.id,
            channelId: channel.channelId,
            version: m.state.version,
            sig: hubKey.signDigest(stateDigest(ctx.separator, m.state)),
          }),
        );
    },
    deps: { creditGuard: async (credit) => market.check(credit) },
  });
  // As the client wires them: a round credit reported (countersigned and durable) lands it in the market.
  ch.onPayment((p) => {
    if (p.round !== undefined) market.credited(p.channelId, p.round);
  });
  market.onFrame({ t: 'round', id: 0, round: ROUND, feeBps: 0n });
  return { ch, ctx, market, sent, errors };
}

describe('red team: a round credit refused after its check', () => {
  it('keeps the escrowed bid, so a second record of the round that leaves it out is refused BAD_CLEARING', async () => {
    const { ch, ctx, market, sent, errors } = await world();
    const placed = await market.submitOrder(ch, { market: 'kwh', side: 'bid', quantity: 2n, price: 150n });
    await ch.flushWrites();
    expect(ch.latest.state.paidByDevice).toBe(300n); // the escrow
    const bid: Order = {
      id: placed.id,
      participant: device.address,
      market: 'kwh',
      side: 'bid',
      quantity: 2n,
      price: 150n,
      round: ROUND,
      arrival: 7n,
    };
    const ask: Order = {
      ...bid,
      id: `0x${'0a'.repeat(32)}` as Bytes32,
      participant: other.address,
      side: 'ask',
      price: 100n,
      arrival: 6n,
    };
    const publish = (orders: Order[]): bigint => {
      const record = clearRound(ROUND, orders);
      const withSigs = orders.map((o) => ({
        ...o,
        sig: signOrder(o, o.participant === device.address ? device : other),
      }));
      const published: PublishedClearing = { record, orders: withSigs, feeBps: 0n, refunds: [] };
      sendClearing(market, published);
      return record.credits.filter((c) => c.participant === device.address).reduce((s, c) => s + c.amount, 0n);
    };
    const credit = (amount: bigint, key: Signer, id: number) => {
      const base = ch.latest.state;
      const state: State = { ...base, version: base.version + 1n, paidByHub: base.paidByHub + amount, round: ROUND };
      ch.receive({
        t: 'update',
        id,
        state,
        sig: key.signDigest(stateDigest(ctx.separator, state)),
      });
    };
    const answer = async (id: number) => {
      for (let i = 0; i < 200; i++) {
        const a = sent.find((m) => (m.t === 'ack' || m.t === 'reject') && m.id === id);
        if (a) return a;
        await new Promise((r) => setTimeout(r, 5));
      }
      throw new Error(`no answer to ${id}`);
    };

    // The honest record: the bid fills 2 @ 125, so 50 of the escrow comes back. Its credit comes signed by another key.
    const owed = publish([bid, ask]);
    expect(owed).toBe(50n);
    credit(owed, other, 500);
    expect(await answer(500)).toMatchObject({ t: 'reject', code: 'BAD_SIGNATURE' });
    expect(market.pending().map((o) => o.id)).toEqual([placed.id]); // the check passed, and nothing landed

    // A second signed record of the round without the bid, and a round credit of nothing.
    expect(publish([ask])).toBe(0n);
    credit(0n, hubKey, 501);
    expect(await answer(501)).toMatchObject({ t: 'reject', code: 'BAD_CLEARING' });
    expect(ch.latest.state).toMatchObject({ round: 0n, paidByHub: 0n });
    expect(market.pending().map((o) => o.id)).toEqual([placed.id]);

    // The honest credit, signed by the hub: countersigned, durable, and only then is the bid settled.
    publish([bid, ask]);
    credit(owed, hubKey, 502);
    expect(await answer(502)).toMatchObject({ t: 'ack' });
    expect(ch.latest.state).toMatchObject({ round: ROUND, paidByHub: 50n });
    expect(market.pending()).toEqual([]);
    expect(errors).toEqual([]);
  });
});
