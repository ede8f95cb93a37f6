import { domainSeparator, typedDataDigest } from '@trickle/protocol/eip712';
import { concatBytes, fromHex, keccak256, keccakUtf8, uintWord } from '@trickle/protocol/hex';
import type { Bytes32, Domain } from '@trickle/protocol/types';
import { hashClearing } from './hashClearing.js';
import { hashRefunds } from './hashRefunds.js';
import type { PublishedClearing } from './published.js';

/**
 * EIP-712 type the hub signs a round's clearing under: the record hash and the refunds hash, bound to the hub's chain
 * and adjudicator. (Before the refunds were signed it was `Clearing(uint64 round,bytes32 record)`: a relay could
 * alter the refunds of a record signed so.)
 */
export const CLEARING_TYPE = 'Clearing(uint64 round,bytes32 record,bytes32 refunds)';
const CLEARING_TYPEHASH = keccakUtf8(CLEARING_TYPE);

/**
 * The digest a hub signs for a round's clearing, so a record signed for one hub deployment (chain, adjudicator)
 * cannot be replayed as another's, and neither the record nor the refunds published with it can be altered.
 * @param domain - the Trickle domain of the hub's chain and adjudicator
 * @param round - the record's round
 * @param recordHash - `hashClearing(record)`
 * @param refundsHash - `hashRefunds(refunds)`
 * @example
 * ```ts
 * const sig = hubSigner.signDigest(clearingDigest(domain, round, hashClearing(record), hashRefunds(refunds)))
 * ```
 */
export function clearingDigest(domain: Domain, round: bigint, recordHash: Bytes32, refundsHash: Bytes32): Uint8Array {
  return typedDataDigest(
    domainSeparator(domain),
    keccak256(concatBytes(CLEARING_TYPEHASH, uintWord(round), fromHex(recordHash, 32), fromHex(refundsHash, 32))),
  );
}

/**
 * The digest of a published clearing (`clearingDigest` of its record and its refunds): what the hub signs for the
 * `clearing` frame of `round`, and what a device or auditor recovers the hub's address from.
 * @param domain - the Trickle domain of the hub's chain and adjudicator
 * @param round - the round of the `clearing` frame
 * @param published - the record and the refunds published with it
 * @throws TrickleError `BAD_CLEARING` when a field of the record or of a refund does not fit its word
 * @example
 * ```ts
 * const hubSig = hubSigner.signDigest(publishedClearingDigest(domain, round, published))
 * ```
 */
export function publishedClearingDigest(
  domain: Domain,
  round: bigint,
  published: Pick<PublishedClearing, 'record' | 'refunds'>,
): Uint8Array {
  return clearingDigest(domain, round, hashClearing(published.record), hashRefunds(published.refunds));
}

/**
 * EIP-712 type hubs of wire versions 1 and 2 sign a round's clearing under: the record hash only, the refunds unsigned.
 * A hub still signs it for a device connected with `trickle.v1` or `trickle.v2` (firmware from before the refunds were
 * signed), which verifies nothing else.
 */
export const CLEARING_TYPE_V2 = 'Clearing(uint64 round,bytes32 record)';
const CLEARING_TYPEHASH_V2 = keccakUtf8(CLEARING_TYPE_V2);

/**
 * The digest of a round's clearing as wire versions 1 and 2 sign it (`CLEARING_TYPE_V2`): the record only. A relay can
 * alter the refunds published with a record signed so; an auditor (`verifyPublished`) accepts only
 * {@link publishedClearingDigest}.
 * @param domain - the Trickle domain of the hub's chain and adjudicator
 * @param round - the record's round
 * @param recordHash - `hashClearing(record)`
 * @example
 * ```ts
 * const oldSig = hubSigner.signDigest(clearingDigestV2(domain, round, hashClearing(record)))
 * ```
 */
export function clearingDigestV2(domain: Domain, round: bigint, recordHash: Bytes32): Uint8Array {
  return typedDataDigest(
    domainSeparator(domain),
    keccak256(concatBytes(CLEARING_TYPEHASH_V2, uintWord(round), fromHex(recordHash, 32))),
  );
}
