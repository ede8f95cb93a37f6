import { TrickleError } from '@trickle/protocol/errors';
import { fromHex } from '@trickle/protocol/hex';
import type { Verifier } from '@trickle/protocol/signer';
import type { Address, Domain } from '@trickle/protocol/types';
import { clearingDigest } from './clearingDigest.js';
import { hashClearing } from './hashClearing.js';
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

/**
 * Audit a round's published clearing (the `clearing` frame) without trusting the hub: the record carries the hub's
 * signature for this round, every order carries its participant's signature over its terms, the fee is no higher than
 * the auditor accepts, and the record is the honest clearing of those orders at that fee (`verifyClearing`).
 *
 * What it cannot show, from what is published: that each bid's escrow was paid and each refund is what was paid
 * (only the device that paid knows), that no order was left out or had its arrival changed (only its owner knows:
 * the device client checks its own), and that a participant is not the hub under another key.
 *
 * @param published - the decoded `clearing` record (`PublishedClearing`)
 * @param round - the round of the `clearing` frame
 * @param sig - the hub's signature from the frame
 * @param options - {@link AuditOptions}
 * @returns nothing when the clearing passes
 * @throws TrickleError `BAD_CLEARING` (`details.path`) on a bad hub or order signature, a fee above `maxFeeBps` or a
 *   record that is not the clearing of its orders; `BAD_ORDER` for a malformed order
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
  if (!recovers(verifier, clearingDigest(domain, round, hashClearing(record)), sig, hub)) {
    bad('sig', 'the record is not signed by the hub for this round');
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
