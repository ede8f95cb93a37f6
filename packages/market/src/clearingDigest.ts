import { domainSeparator, typedDataDigest } from '@trickle/protocol/eip712';
import { concatBytes, fromHex, keccak256, keccakUtf8, uintWord } from '@trickle/protocol/hex';
import type { Bytes32, Domain } from '@trickle/protocol/types';

/** EIP-712 type the hub signs a clearing record under: the record hash bound to the hub's chain and adjudicator. */
export const CLEARING_TYPE = 'Clearing(uint64 round,bytes32 record)';
const CLEARING_TYPEHASH = keccakUtf8(CLEARING_TYPE);

/**
 * The digest a hub signs for a round's clearing record, so a record signed for one hub deployment (chain,
 * adjudicator) cannot be replayed as another's.
 * @param domain - the Trickle domain of the hub's chain and adjudicator
 * @param round - the record's round
 * @param recordHash - `hashClearing(record)`
 */
export function clearingDigest(domain: Domain, round: bigint, recordHash: Bytes32): Uint8Array {
  return typedDataDigest(
    domainSeparator(domain),
    keccak256(concatBytes(CLEARING_TYPEHASH, uintWord(round), fromHex(recordHash, 32))),
  );
}
