import { isTrickleError } from '@trickle/protocol/errors';
import { trickleDomain } from '@trickle/protocol/eip712';
import { toHex } from '@trickle/protocol/hex';
import { nobleSigner, nobleVerifier, type Signer } from '@trickle/protocol/signer';
import type { Address, Bytes32 } from '@trickle/protocol/types';
import { describe, expect, it } from 'vitest';
import { clearingDigest, publishedClearingDigest } from './clearingDigest.js';
import { clearRound } from './clearRound.js';
import { hashClearing } from './hashClearing.js';
import { hashOrder } from './hashOrder.js';
import { hashRefunds } from './hashRefunds.js';
import type { Order } from './order.js';
import type { PublishedClearing } from './published.js';
import type { ClearingRecord } from './record.js';
import { verifyPublished } from './verifyPublished.js';

const domain = trickleDomain(31337n, '0x5FbDB2315678afecb367f032d93F642f64180aa3' as Address);
const hub = nobleSigner(`0x${'11'.repeat(32)}`);
const [a, b, c] = [2, 3, 4].map((n) => nobleSigner(`0x${n.toString(16).padStart(2, '0').repeat(32)}`)) as [
  Signer,
  Signer,
  Signer,
];
const ROUND = 3n;
const order = (k: number, who: Signer, side: 'bid' | 'ask', quantity: bigint, price: bigint): Order => ({
  id: `0x${k.toString(16).padStart(64, '0')}` as Bytes32,
  participant: who.address,
  market: 'kwh',
  side,
  quantity,
  price,
  round: ROUND,
  arrival: BigInt(k),
});
const orders = [order(1, a, 'bid', 2n, 20n), order(2, b, 'ask', 1n, 10n), order(3, c, 'ask', 1n, 4n)];
const signed = (os: Order[], by: (o: Order) => Signer = (o) => [a, b, c].find((s) => s.address === o.participant)!) =>
  os.map((o) => {
    const { arrival: _a, ...terms } = o;
    return { ...o, sig: toHex(by(o).signDigest(hashOrder(domain, terms))) };
  });
const sign = (record: ClearingRecord, by: Signer = hub, refunds: PublishedClearing['refunds'] = []) =>
  by.signDigest(clearingDigest(domain, record.round, hashClearing(record), hashRefunds(refunds)));
const options = { domain, hub: hub.address, verifier: nobleVerifier, maxFeeBps: 30n };

function failure(p: PublishedClearing, sig: Uint8Array, o = options): string {
  try {
    verifyPublished(p, ROUND, sig, o);
  } catch (e) {
    if (!isTrickleError(e)) throw e;
    return `${e.code} ${String(e.details.path ?? '')}`;
  }
  return 'none';
}

describe('verifyPublished: an auditor of a published clearing', () => {
  const record = clearRound(ROUND, orders, { feeBps: 30n });
  const honest: PublishedClearing = { record, orders: signed(orders), feeBps: 30n, refunds: [] };

  it('accepts the honest clearing, signed by the hub, every order by its participant', () => {
    expect(failure(honest, sign(record))).toBe('none');
  });

  it('refuses a record not signed by the hub, or for another round', () => {
    expect(failure(honest, sign(record, a))).toBe('BAD_CLEARING sig');
    expect(failure({ ...honest, record: { ...record, round: 4n } }, sign(record))).toMatch(/^BAD_CLEARING record/);
  });

  it('refuses a forged order: one in a participant’s name that it did not sign', () => {
    // The hub adds a bid in a's name (a high bid that raises the price the sellers get); it can sign only with
    // another key.
    const fake = order(4, a, 'bid', 1n, 30n);
    const all = [...orders, fake];
    const forged = clearRound(ROUND, all, { feeBps: 30n });
    const p = {
      ...honest,
      record: forged,
      orders: signed(all, (o) => (o.id === fake.id ? hub : [a, b, c].find((s) => s.address === o.participant)!)),
    };
    expect(failure(p, sign(forged))).toBe('BAD_CLEARING orders[3].sig');
  });

  it('refuses a fee above the one accepted, and a suboptimal record the hub signed', () => {
    const dearer = clearRound(ROUND, orders, { feeBps: 100n });
    expect(failure({ ...honest, record: dearer, feeBps: 100n }, sign(dearer))).toBe('BAD_CLEARING feeBps');
    // The cheaper seller left out: consistent sums, the hub's signature, but not the clearing of the orders.
    const favoured = clearRound(ROUND, orders.slice(0, 2), { feeBps: 30n, ordersDigest: record.ordersDigest });
    const p = {
      ...honest,
      record: {
        ...favoured,
        nets: [...favoured.nets, { participant: c.address, net: 0n }],
        credits: [...favoured.credits, { participant: c.address, amount: 0n }],
      },
    };
    expect(failure(p, sign(p.record))).toMatch(/^BAD_CLEARING record\./);
  });

  describe('refunds: signed with the record, and consistent with the orders', () => {
    const escrow = (k: number) => `0x${k.toString(16).padStart(64, '0')}` as Bytes32;
    // b paid an escrow under id 9 and never placed its order; a's bid (id 1) paid 5 above its worst case.
    const refunds = [
      { participant: b.address, orderId: escrow(9), amount: 40n },
      { participant: a.address, orderId: orders[0]!.id, amount: 5n },
    ];
    const withRefunds: PublishedClearing = { ...honest, refunds };
    const sig = hub.signDigest(publishedClearingDigest(domain, ROUND, withRefunds));

    it('accepts the refunds the hub signed with the record', () => {
      expect(failure(withRefunds, sig)).toBe('none');
    });

    it('refuses refunds altered after the hub signed them: an amount, a payee, one left out, one added', () => {
      const altered = (rs: PublishedClearing['refunds']) => failure({ ...withRefunds, refunds: rs }, sig);
      expect(altered([{ ...refunds[0]!, amount: 4n }, refunds[1]!])).toBe('BAD_CLEARING sig');
      expect(altered([{ ...refunds[0]!, participant: c.address }, refunds[1]!])).toBe('BAD_CLEARING sig');
      expect(altered([refunds[1]!])).toBe('BAD_CLEARING sig');
      expect(altered([...refunds, { participant: c.address, orderId: escrow(10), amount: 1n }])).toBe(
        'BAD_CLEARING sig',
      );
      // A record signed the old way (Clearing(uint64 round,bytes32 record)) covers no refund: not the hub's word.
      expect(failure(withRefunds, sign(record))).toBe('BAD_CLEARING sig');
    });

    it('refuses malformed or inconsistent refunds, even signed by the hub', () => {
      const signed = (rs: unknown[]) => {
        const p = { ...honest, refunds: rs } as PublishedClearing;
        let s: Uint8Array;
        try {
          s = hub.signDigest(publishedClearingDigest(domain, ROUND, p));
        } catch {
          s = sign(record); // cannot even be encoded: checked before the signature
        }
        return failure(p, s);
      };
      expect(signed([{ ...refunds[0]!, amount: 0n }])).toBe('BAD_CLEARING refunds[0].amount');
      expect(signed([{ ...refunds[0]!, participant: b.address.toLowerCase() }])).toBe(
        'BAD_CLEARING refunds[0].participant',
      );
      expect(signed([{ ...refunds[0]!, orderId: `0x${'AB'.repeat(32)}` }])).toBe('BAD_CLEARING refunds[0].orderId');
      expect(signed([{ ...refunds[0]!, note: 'x' }])).toBe('BAD_CLEARING refunds[0]');
      // One escrow paid back twice.
      expect(signed([refunds[0]!, { ...refunds[0]!, amount: 1n }])).toBe('BAD_CLEARING refunds[1].orderId');
      // a's bid's escrow paid back to c: a bid is taken only on its bidder's escrow.
      expect(signed([{ ...refunds[1]!, participant: c.address }])).toBe('BAD_CLEARING refunds[0].participant');
      // More than one channel payment can carry.
      const credit = record.credits.find((x) => x.participant === b.address)!.amount;
      expect(signed([{ ...refunds[0]!, amount: (1n << 256n) - credit }])).toBe('BAD_CLEARING refunds[0].amount');
      expect(signed({} as unknown[])).toBe('BAD_CLEARING refunds');
    });
  });
});
