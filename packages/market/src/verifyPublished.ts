import { TrickleError } from '@trickle/protocol/errors';
import { fromHex, toAddress } from '@trickle/protocol/hex';
import type { Verifier } from '@trickle/protocol/signer';
import { MAX_UINT256, type Address, type Domain } from '@trickle/protocol/types';
import { publishedClearingDigest } from './clearingDigest.js';
import { hashOrder } from './hashOrder.js';
import { validateOrder } from './order.js';
import type { Order } from './order.js';
import type { PublishedClearing } from './published.js';
import { verifyClearing } from './verifyClearing.js';

/** What an auditor of a published clearing knows independently of it (see {@link verifyPublished}). */
export interface AuditOptions {
  /** The Trickle domain of the hub's chain and adjudicator. */
  readonly domain: Domain;
  /** The hub's address: the record must carry its signature. */
  readonly hub: Address;
  /** Recovers signers (`nobleVerifier` of `@trickle/protocol/signer`). */
  readonly verifier: Verifier;
  /** The highest fee the auditor accepts (the one the hub announced); default: the published fee is taken as is. */
  readonly maxFeeBps?: bigint | undefined;
}

function bad(path: string, shortMessage: string): never {
  throw new TrickleError('BAD_CLEARING', shortMessage, { details: { path } });
}

function recovers(verifier: Verifier, digest: Uint8Array, sig: unknown, who: Address): boolean {
  if (typeof sig !== 'string' && !(sig instanceof Uint8Array)) return false;
  try {
    return verifier.recoverAddress(digest, typeof sig === 'string' ? fromHex(sig, 65) : sig) === who;
  } catch {
    return false;
  }
}

const REFUND_KEYS = ['amount', 'orderId', 'participant'];

/**
 * The refunds as the hub must publish them: each `{ participant, orderId, amount }` and nothing more, the participant
 * an EIP-55 address, the order id lowercase 32-byte hex, the amount in [1, 2^256); one refund per order id (an escrow
 * is keyed by its id, so a round pays it back once); a refund under the id of a published bid goes to the bid's
 * participant (the hub takes a bid only on its participant's escrow, and refunds what it paid above the bid's worst
 * case); and what each participant is owed, `credits[p] + Σ refunds[p]`, fits the uint256 of one channel payment.
 */
function checkRefunds(published: PublishedClearing): void {
  const { refunds } = published;
  if (!Array.isArray(refunds as unknown)) bad('refunds', 'not an array');
  const bidders = new Map<string, Address>();
  if (Array.isArray(published.orders as unknown))
    for (const o of published.orders) if (o?.side === 'bid') bidders.set(o.id, o.participant);
  const owed = new Map<string, bigint>();
  if (Array.isArray(published.record?.credits as unknown))
    for (const c of published.record.credits) if (typeof c?.amount === 'bigint') owed.set(c.participant, c.amount);
  const ids = new Set<string>();
  refunds.forEach((x: unknown, k) => {
    const at = `refunds[${k}]`;
    if (typeof x !== 'object' || x === null || Object.keys(x).sort().join() !== REFUND_KEYS.join()) {
      bad(at, 'not a refund { participant, orderId, amount }');
    }
    const { participant, orderId, amount } = x as Record<string, unknown>;
    let checksummed = false;
    try {
      checksummed = typeof participant === 'string' && toAddress(participant) === participant;
    } catch {
      // not an address
    }
    if (!checksummed) bad(`${at}.participant`, 'not an EIP-55 address');
    if (typeof orderId !== 'string' || !/^0x[0-9a-f]{64}$/.test(orderId))
      bad(`${at}.orderId`, 'not lowercase 32-byte hex');
    if (typeof amount !== 'bigint' || amount < 1n || amount > MAX_UINT256) bad(`${at}.amount`, 'not in [1, 2^256)');
    if (ids.has(orderId)) bad(`${at}.orderId`, 'a second refund under one order id');
    ids.add(orderId);
    const bidder = bidders.get(orderId);
    if (bidder !== undefined && bidder !== participant) {
      bad(`${at}.participant`, 'a bid’s escrow refunded to another participant than the bidder');
    }
    const total = (owed.get(participant as string) ?? 0n) + amount;
    if (total > MAX_UINT256) bad(`${at}.amount`, 'what the participant is owed exceeds 2^256 − 1');
    owed.set(participant as string, total);
  });
}

/**
 * Audit a round's published clearing (the `clearing` frame) without trusting the hub: the hub signed the record and
 * the refunds for this round (`publishedClearingDigest`), every order carries its participant's signature over its
 * terms, the fee is no higher than the auditor accepts, the record is the honest clearing of those orders at that fee
 * (`verifyClearing`), and the refunds are well formed and consistent with the orders (one per order id, a bid's
 * escrow to its bidder, each participant's total payable: see spec §7).
 *
 * What it cannot show, from what is published: that each bid's escrow was paid and each refund is what was paid
 * (only the device that paid knows: the device client checks its own), that no order or refund was left out or had
 * its arrival changed (only its owner knows: the device client checks its own), and that a participant is not the hub
 * under another key.
 *
 * @param published - the decoded `clearing` record (`PublishedClearing`)
 * @param round - the round of the `clearing` frame
 * @param sig - the hub's signature from the frame
 * @param options - {@link AuditOptions}
 * @returns nothing when the clearing passes
 * @throws TrickleError `BAD_CLEARING` (`details.path`) on a bad hub or order signature, a fee above `maxFeeBps`, a
 *   malformed or inconsistent refund (`refunds[k]…`) or a record that is not the clearing of its orders; `BAD_ORDER`
 *   for a malformed order
 * @example
 * ```ts
 * verifyPublished(published, frame.round, frame.sig, { domain, hub, verifier: nobleVerifier, maxFeeBps: 30n })
 * ```
 */
export function verifyPublished(
  published: PublishedClearing,
  round: bigint,
  sig: Uint8Array,
  options: AuditOptions,
): void {
  const { domain, hub, verifier, maxFeeBps } = options;
  const { record, feeBps } = published;
  if (typeof record !== 'object' || record === null || record.round !== round) bad('record.round', 'not this round');
  checkRefunds(published);
  if (!recovers(verifier, publishedClearingDigest(domain, round, published), sig, hub)) {
    bad('sig', 'the record and its refunds are not signed by the hub for this round');
  }
  if (typeof feeBps !== 'bigint' || (maxFeeBps !== undefined && feeBps > maxFeeBps)) {
    bad('feeBps', 'the fee is above the one accepted');
  }
  if (!Array.isArray(published.orders as unknown)) bad('orders', 'not an array');
  const orders: Order[] = published.orders.map(({ sig: orderSig, ...order }, k) => {
    validateOrder(order);
    const { arrival: _arrival, ...terms } = order;
    if (!recovers(verifier, hashOrder(domain, terms), orderSig, order.participant)) {
      bad(`orders[${k}].sig`, 'an order is not signed by its participant');
    }
    return order;
  });
  verifyClearing(record, orders, { feeBps, round });
}
