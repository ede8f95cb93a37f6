import { keccakUtf8 } from '@trickle/protocol/hex';
import type { Bytes32 } from '@trickle/protocol/types';
import { Words } from './hashClearing.js';
import type { Refund } from './published.js';

/** First word of the encoding (as keccak256 of it): separates refund-list hashes from every other Trickle hash. */
export const REFUNDS_TAG = 'trickle.market.Refunds.v1';

const TAG_HASH = keccakUtf8(REFUNDS_TAG);

/**
 * The hash of a round's refunds (the escrows it pays back whole or in part, see `PublishedClearing.refunds`), which the
 * hub signs with the clearing record (`clearingDigest`): keccak256 of these 32-byte words (integers big-endian,
 * addresses left-padded), in the order the hub published them:
 *
 *     keccak("trickle.market.Refunds.v1"), #refunds, then per refund: participant, orderId, amount
 *
 * @param refunds - the published refunds
 * @returns the 32-byte hash as lowercase hex
 * @throws TrickleError `BAD_CLEARING` (`details.path`, e.g. `refunds[0].amount`) when a field does not fit its word
 * @example
 * ```ts
 * const sig = hubSigner.signDigest(clearingDigest(domain, round, hashClearing(record), hashRefunds(refunds)))
 * ```
 */
export function hashRefunds(refunds: readonly Refund[]): Bytes32 {
  const w = new Words(2 + 3 * refunds.length);
  w.raw(TAG_HASH);
  w.small(refunds.length);
  refunds.forEach((x, k) => {
    w.address(x.participant, `refunds[${k}].participant`);
    w.bytes32(x.orderId, `refunds[${k}].orderId`);
    w.uint(x.amount, `refunds[${k}].amount`);
  });
  return w.digest();
}
