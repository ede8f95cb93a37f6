import { describe, expect, it } from 'vitest';
import { clearRound, hashOrder, publishedClearingDigest, splitClearing, type Order } from '@trickle/market';
import type { Message } from '@trickle/protocol/codec';
import { toHex } from '@trickle/protocol/hex';
import { stringifyJson } from '@trickle/protocol/json';
import { nobleVerifier } from '@trickle/protocol/signer';
import type { Bytes32 } from '@trickle/protocol/types';
import type { ClientChannel } from './channel.js';
import { MarketSession } from './market.js';
import {
  ROUND,
  adjudicator,
  checkCredit,
  device,
  domain,
  hubKey,
  other,
  sendClearing,
  session,
} from './market.fixture.js';

/**
 * The device's check of a round credit against the hub's published clearing, with a hub played by this test: it signs
 * records and orders with real keys, and the clearing is `@trickle/market`'s.
 */

/** The hub publishes the clearing of `orders` at `feeBps`; returns what it credits the device. */
function publish(market: MarketSession, orders: Order[], feeBps: bigint): bigint {
  const signed = orders.map((o) => {
    const { arrival: _a, ...terms } = o;
    const key = o.participant === device.address ? device : other;
    return { ...o, sig: toHex(key.signDigest(hashOrder(domain, terms))) };
  });
  const record = clearRound(ROUND, orders, { feeBps });
  sendClearing(market, { record, orders: signed, feeBps, refunds: [] });
  expect(market.clearing(ROUND)).toBeDefined();
  return record.credits.find((c) => c.participant === device.address)!.amount;
}

const check = checkCredit;

const buyer = (price: bigint, arrival: bigint): Order => ({
  id: `0x${'0b'.repeat(32)}` as Bytes32,
  participant: other.address,
  market: 'kwh',
  side: 'bid',
  quantity: 2n,
  price,
  round: ROUND,
  arrival,
});

describe('MarketSession.submitOrder', () => {
  it('refuses an order the hub would refuse (BAD_ORDER) before paying its escrow', async () => {
    const { market } = await session(0n);
    const paid: bigint[] = [];
    const channel = { pay: async (amount: bigint) => void paid.push(amount) } as unknown as ClientChannel;
    for (const bad of [
      { market: 'kwh', side: 'bid' as const, quantity: 1n, price: 2n ** 128n }, // value above 2^128 − 1
      { market: 'KWh!', side: 'bid' as const, quantity: 1n, price: 5n }, // not a market name
    ])
      await expect(market.submitOrder(channel, bad)).rejects.toMatchObject({ code: 'BAD_ORDER' });
    expect(paid).toEqual([]);
  });
});

describe('MarketSession.check', () => {
  it('accepts the credit of an honest clearing', async () => {
    const { market, mine } = await session(30n);
    const credit = publish(market, [mine, buyer(100n, 8n)], 30n);
    expect(credit).toBe(200n - 0n); // 200 × 0.3% = 0.6: no fee
    expect(() => check(market, credit)).not.toThrow();
    expect(() => check(market, credit + 1n)).toThrow(expect.objectContaining({ code: 'BAD_CLEARING' }));
  });

  it('refuses a clearing at a higher fee than the hub announced when the order was placed', async () => {
    // The record is consistent with the fee it names (5,000 bps), but the device placed its ask under 30 bps: half
    // of its proceeds would go to the hub. Before, the device verified the record against the fee the hub
    // published in it, and accepted 100 instead of 200.
    const { market, mine } = await session(30n);
    const credit = publish(market, [mine, buyer(100n, 8n)], 5_000n);
    expect(credit).toBe(100n);
    expect(() => check(market, credit)).toThrow(expect.objectContaining({ code: 'BAD_CLEARING' }));
  });

  it('refuses a clearing that changed the arrival of one of its orders', async () => {
    // Another seller at the same price arrived after the device (arrival 9 > 7); the hub publishes the device's ask
    // with arrival 10 so that the other fills first and the device not at all.
    const { market, mine } = await session(0n);
    const rival: Order = { ...mine, id: `0x${'0c'.repeat(32)}` as Bytes32, participant: other.address, arrival: 9n };
    const credit = publish(market, [{ ...mine, arrival: 10n }, rival, buyer(100n, 8n)], 0n);
    expect(credit).toBe(0n);
    expect(() => check(market, credit)).toThrow(expect.objectContaining({ code: 'BAD_CLEARING' }));
  });
});

describe('MarketSession: a clearing record in parts', () => {
  /** The device's ask and 200 bids of other participants (about 100 KB published: 2 frames); the record's frames. */
  async function big() {
    const { market, mine } = await session(0n);
    const bids = Array.from({ length: 200 }, (_, k) => ({
      ...buyer(100n, 100n + BigInt(k)),
      id: `0xb0${k.toString(16).padStart(62, '0')}` as Bytes32,
      quantity: 1n,
    }));
    const orders = [mine, ...bids];
    const signed = orders.map((o) => {
      const { arrival: _a, ...terms } = o;
      const key = o.participant === device.address ? device : other;
      return { ...o, sig: toHex(key.signDigest(hashOrder(domain, terms))) };
    });
    const record = clearRound(ROUND, orders, { feeBps: 0n });
    const bytes = new TextEncoder().encode(stringifyJson({ record, orders: signed, feeBps: 0n, refunds: [] }));
    const sig = hubKey.signDigest(publishedClearingDigest(domain, ROUND, { record, refunds: [] }));
    const frames = splitClearing(ROUND, bytes, sig);
    const credit = record.credits.find((c) => c.participant === device.address)!.amount;
    return { market, frames, credit };
  }

  it('is held until its last part, then verified and checked like a whole one', async () => {
    const { market, frames, credit } = await big();
    expect(frames.length).toBe(2);
    expect(credit).toBe(200n);
    market.onFrame(frames[1]!);
    expect(market.clearing(ROUND)).toBeUndefined();
    expect(() => check(market, credit)).toThrow(expect.objectContaining({ code: 'BAD_CLEARING' })); // not whole yet
    market.onFrame(frames[0]!);
    expect(market.clearing(ROUND)?.orders).toHaveLength(201);
    expect(() => check(market, credit)).not.toThrow();
  });

  it('parts that join into a record the hub did not sign are dropped: nothing kept, a good re-send then lands', async () => {
    const { market, frames, credit } = await big();
    // the same length, the record's fee changed: valid JSON, not the record the signature covers
    const text = new TextDecoder().decode(frames[0]!.record);
    const at = text.indexOf('"fee":"0"');
    expect(at).toBeGreaterThan(0);
    const forged = new TextEncoder().encode(`${text.slice(0, at)}"fee":"1"${text.slice(at + 9)}`);
    expect(forged.length).toBe(frames[0]!.record.length);
    market.onFrame({ ...frames[0]!, record: forged });
    market.onFrame(frames[1]!);
    expect(market.clearing(ROUND)).toBeUndefined();
    expect(() => check(market, credit)).toThrow(expect.objectContaining({ code: 'BAD_CLEARING' }));
    // a part out of range is ignored too; then the hub sends the record again
    market.onFrame({ ...frames[0]!, part: 2 });
    market.onFrame(frames[0]!); // alone it is not whole: the forged record's parts were dropped
    expect(market.clearing(ROUND)).toBeUndefined();
    market.onFrame(frames[1]!);
    expect(() => check(market, credit)).not.toThrow();
  });
});

describe('MarketSession: the clearing records it keeps', () => {
  /** A hub-signed record of round `round` with no orders (what a hub sends to make a device keep something). */
  const empty = (round: bigint, parts?: number): Message[] => {
    const record = clearRound(round, []);
    const bytes = new TextEncoder().encode(stringifyJson({ record, orders: [], feeBps: 0n, refunds: [] }));
    const sig = hubKey.signDigest(publishedClearingDigest(domain, round, { record, refunds: [] }));
    if (parts === undefined) return [{ t: 'clearing', id: 0, round, record: bytes, sig }];
    // a record padded to `parts` blobs: JSON ignores trailing spaces
    const padded = new Uint8Array(parts * 61_440 - 100).fill(0x20);
    padded.set(bytes);
    return splitClearing(round, padded, sig);
  };
  const kept = (market: MarketSession, rounds: bigint[]) => rounds.filter((r) => market.clearing(r) !== undefined);

  it('keeps the last 64 received, whatever their round numbers', async () => {
    const { market } = await session(0n);
    // Before, only rounds more than 64 below the newest were dropped: a hub sending rounds downwards was kept for ever.
    const rounds = Array.from({ length: 80 }, (_, k) => 1_000n - BigInt(k));
    for (const r of rounds) for (const f of empty(r)) market.onFrame(f);
    expect(kept(market, rounds)).toEqual(rounds.slice(16));
  });

  it('keeps fewer after a record in parts: 64 / its parts', async () => {
    const { market } = await session(0n);
    const rounds = Array.from({ length: 40 }, (_, k) => 100n + BigInt(k));
    for (const r of rounds) for (const f of empty(r)) market.onFrame(f);
    const frames = empty(500n, 4);
    expect(frames).toHaveLength(4);
    for (const f of frames) market.onFrame(f);
    expect(market.clearing(500n)?.record.round).toBe(500n);
    expect(kept(market, [...rounds, 500n])).toEqual([...rounds.slice(-15), 500n]); // 16 in all
  });
});

describe('a market session whose client was disconnected', () => {
  it('answers nextRound() and ready() waiting DISCONNECTED at once, and later calls too', async () => {
    const { market } = await session(0n);
    const waiting = market.nextRound(60_000);
    market.stop();
    await expect(waiting).rejects.toMatchObject({ code: 'DISCONNECTED' });
    await expect(market.nextRound()).rejects.toMatchObject({ code: 'DISCONNECTED' });
    const fresh = new MarketSession({
      signer: device,
      verifier: nobleVerifier,
      hub: () => ({ hub: hubKey.address, chainId: 31337n, adjudicator }),
      request: () => Promise.reject(new Error('not asked')),
    });
    const ready = fresh.ready(60_000); // no round announced yet
    fresh.stop();
    await expect(ready).rejects.toMatchObject({ code: 'DISCONNECTED' });
  });
});
