import { domainSeparator, typedDataDigest } from '@trickle/protocol/eip712';
import { concatBytes, fromHex, keccak256, keccakUtf8, uintWord } from '@trickle/protocol/hex';
import type { Domain } from '@trickle/protocol/types';
import type { Order } from './order.js';

/** The fields of an {@link Order} a participant signs: all but `arrival`, which the hub assigns on receipt. */
export type OrderTerms = Omit<Order, 'arrival'>;

/** The EIP-712 type string of an order. `side` is 0 for a bid, 1 for an ask. */
export const ORDER_TYPE =
  'Order(address participant,string market,uint8 side,uint256 quantity,uint256 price,uint64 round,bytes32 id)';

/** The EIP-712 `types` object for {@link ORDER_TYPE}, in the form ethers / viem / eth_signTypedData_v4 take. */
export const ORDER_TYPES = {
  Order: [
    { name: 'participant', type: 'address' },
    { name: 'market', type: 'string' },
    { name: 'side', type: 'uint8' },
    { name: 'quantity', type: 'uint256' },
    { name: 'price', type: 'uint256' },
    { name: 'round', type: 'uint64' },
    { name: 'id', type: 'bytes32' },
  ],
} as const;

const ORDER_TYPEHASH = keccakUtf8(ORDER_TYPE);
const SIDE_WORD = { bid: uintWord(0n), ask: uintWord(1n) } as const;

/**
 * EIP-712 `hashStruct` of an order's signed terms. It does not depend on the domain, which is why the round's
 * orders digest is built from it.
 *
 * @param order - the order (its `arrival`, if present, is ignored)
 * @param marketHashes - optional cache of keccak(market) per market name, for hashing many orders
 * @returns 32-byte struct hash
 * @throws MalformedError when `order.id` is not 32-byte hex (validate the order first)
 * @example
 * ```ts
 * const structHash = hashOrderStruct(order)
 * ```
 */
export function hashOrderStruct(order: OrderTerms, marketHashes?: Map<string, Uint8Array>): Uint8Array {
  let marketHash = marketHashes?.get(order.market);
  if (marketHash === undefined) {
    marketHash = keccakUtf8(order.market);
    marketHashes?.set(order.market, marketHash);
  }
  return keccak256(
    concatBytes(
      ORDER_TYPEHASH,
      uintWord(BigInt(order.participant)),
      marketHash,
      SIDE_WORD[order.side],
      uintWord(order.quantity),
      uintWord(order.price),
      uintWord(order.round),
      fromHex(order.id, 32),
    ),
  );
}

/**
 * The EIP-712 digest a participant signs for an order:
 * keccak256(0x1901 ‖ domainSeparator ‖ hashStruct(order)), with
 * domainSeparator = keccak256(typeHash(EIP712Domain(string name,string version,uint256 chainId,address
 * verifyingContract)) ‖ keccak(name) ‖ keccak(version) ‖ word(chainId) ‖ word(verifyingContract)).
 * Equal to ethers' `TypedDataEncoder.hash(domain, ORDER_TYPES, { ...order, side: 0 | 1 })`.
 *
 * @param domain - the EIP-712 domain (the hub's adjudicator and chain)
 * @param order - the order terms; `arrival` is not signed
 * @returns 32-byte digest, to pass to a `Signer.signDigest` / `Verifier.recoverAddress`
 * @throws MalformedError when `order.id` is not 32-byte hex (validate the order first)
 * @example
 * ```ts
 * const sig = signer.signDigest(hashOrder(domain, order))
 * ```
 */
export function hashOrder(domain: Domain, order: OrderTerms): Uint8Array {
  // Through @trickle/protocol's typedDataDigest, so a Trickle Signer recognises it as a Trickle typed message.
  return typedDataDigest(domainSeparator(domain), hashOrderStruct(order));
}
