import { TrickleError } from './errors.js';
import { concatBytes, fromHex, keccak256, keccakUtf8, toAddress, toHex, uintWord } from './hex.js';
import { typedDataDigest } from './eip712.js';
import { signatureFromHex, signatureToHex, type Signer, type Verifier } from './signer.js';
import { MAX_UINT256, MAX_UINT64, type Address, type Bytes32, type SignatureHex } from './types.js';

/**
 * Payment receipts: the hub's signed statement that a routed payment reached its payee. A service that sells
 * per request (x402's `trickle-channel` scheme) checks one offline, with nothing but the hub's address and the
 * Trickle domain (chain id, adjudicator): no chain call, no round trip to the hub.
 *
 * A receipt binds the payer, the payee, the token, the amount, the resource (keccak256 of its name), a nonce the
 * payer chose and an expiry, plus the routed payment's id. The hub signs one only for a routed payment whose route
 * instruction asked for it ({@link ReceiptRequest}), and only once the payee has countersigned the credit.
 */

/** The EIP-712 type string of {@link Receipt}, signed under the Trickle domain. */
export const RECEIPT_TYPE =
  'Receipt(address payer,address payee,address token,uint256 amount,bytes32 resource,bytes32 nonce,uint64 expiry,bytes32 paymentId)';

/** The EIP-712 `types` object for {@link RECEIPT_TYPE} (ethers / viem / eth_signTypedData_v4 form). */
export const RECEIPT_TYPES = {
  Receipt: [
    { name: 'payer', type: 'address' },
    { name: 'payee', type: 'address' },
    { name: 'token', type: 'address' },
    { name: 'amount', type: 'uint256' },
    { name: 'resource', type: 'bytes32' },
    { name: 'nonce', type: 'bytes32' },
    { name: 'expiry', type: 'uint64' },
    { name: 'paymentId', type: 'bytes32' },
  ],
} as const;

const RECEIPT_TYPEHASH = keccakUtf8(RECEIPT_TYPE);

/** What a payer asks the hub to sign for a routed payment (carried on the route instruction). */
export interface ReceiptRequest {
  /** keccak256 of the resource's name, from {@link resourceHash}. */
  readonly resource: Bytes32;
  /** Payer-chosen, unique per receipt: the service refuses a nonce it has seen until the receipt expires. */
  readonly nonce: Bytes32;
  /** Unix seconds after which the receipt is worthless. */
  readonly expiry: bigint;
}

/** A payment receipt, as the hub signs it. */
export interface Receipt extends ReceiptRequest {
  readonly payer: Address;
  readonly payee: Address;
  /** The channel token (ERC20 address, or the zero address for ETH). */
  readonly token: Address;
  readonly amount: bigint;
  /** The routed payment this receipt is for. */
  readonly paymentId: Bytes32;
}

/** A receipt with the hub's signature over {@link receiptDigest}. */
export interface SignedReceipt {
  readonly receipt: Receipt;
  readonly sig: SignatureHex;
}

/**
 * The hash a receipt binds for a resource name (a URL, or any name payer and service agree on).
 * @param resource - the resource's name, UTF-8
 * @returns keccak256 of its bytes
 */
export function resourceHash(resource: string): Bytes32 {
  return toHex(keccakUtf8(resource)) as string as Bytes32;
}

/**
 * The EIP-712 digest of a receipt under a domain separator (the Trickle domain of the hub's chain and adjudicator).
 * @param separator - `domainSeparator(trickleDomain(chainId, adjudicator))`
 * @param r - the receipt
 * @returns 32-byte digest the hub signs
 * @throws TrickleError INVALID_ARGUMENT when a field is out of range
 */
export function receiptDigest(separator: Uint8Array, r: Receipt): Uint8Array {
  if (r.amount <= 0n || r.amount > MAX_UINT256)
    throw new TrickleError('INVALID_ARGUMENT', 'receipt amount out of range');
  if (r.expiry < 0n || r.expiry > MAX_UINT64) throw new TrickleError('INVALID_ARGUMENT', 'receipt expiry out of range');
  return typedDataDigest(
    separator,
    keccak256(
      concatBytes(
        RECEIPT_TYPEHASH,
        uintWord(BigInt(r.payer)),
        uintWord(BigInt(r.payee)),
        uintWord(BigInt(r.token)),
        uintWord(r.amount),
        fromHex(r.resource, 32),
        fromHex(r.nonce, 32),
        uintWord(r.expiry),
        fromHex(r.paymentId, 32),
      ),
    ),
  );
}

/**
 * Sign a receipt (the hub does this).
 * @param signer - the hub's key
 * @param separator - the Trickle domain separator
 * @param r - the receipt
 * @returns the receipt and the hub's signature
 * @example
 * ```ts
 * const signed = signReceipt(hubSigner, separator, receipt);
 * recoverReceiptSigner(nobleVerifier, separator, signed) === hubSigner.address; // true
 * ```
 */
export function signReceipt(signer: Signer, separator: Uint8Array, r: Receipt): SignedReceipt {
  return { receipt: r, sig: signatureToHex(signer.signDigest(receiptDigest(separator, r))) };
}

/**
 * Who signed a receipt.
 * @returns the signer's address
 * @throws TrickleError BAD_SIGNATURE when the signature is malformed or recovers to nobody
 */
export function recoverReceiptSigner(verifier: Verifier, separator: Uint8Array, signed: SignedReceipt): Address {
  return verifier.recoverAddress(receiptDigest(separator, signed.receipt), signatureFromHex(signed.sig));
}

/** A signed receipt as JSON (amount and expiry as decimal strings), the form the x402 payload carries. */
export interface SignedReceiptJson {
  readonly payer: string;
  readonly payee: string;
  readonly token: string;
  readonly amount: string;
  readonly resource: string;
  readonly nonce: string;
  readonly expiry: string;
  readonly paymentId: string;
  readonly sig: string;
}

/** A signed receipt to its JSON form. */
export function signedReceiptToJson(s: SignedReceipt): SignedReceiptJson {
  const r = s.receipt;
  return {
    payer: r.payer,
    payee: r.payee,
    token: r.token,
    amount: r.amount.toString(),
    resource: r.resource,
    nonce: r.nonce,
    expiry: r.expiry.toString(),
    paymentId: r.paymentId,
    sig: s.sig,
  };
}

const HEX32 = /^0x[0-9a-fA-F]{64}$/;
const HEX65 = /^0x[0-9a-fA-F]{130}$/;
const DEC = /^(0|[1-9][0-9]{0,77})$/;

/**
 * Parse and validate a signed receipt from untrusted JSON (types, lengths, ranges; not the signature itself).
 * @throws TrickleError MALFORMED naming the offending field
 */
export function signedReceiptFromJson(v: unknown): SignedReceipt {
  const bad = (field: string): never => {
    throw new TrickleError('MALFORMED', `receipt.${field} is invalid`, { details: { field } });
  };
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return bad('(root)');
  const o = v as Record<string, unknown>;
  const str = (k: string): string => (typeof o[k] === 'string' ? (o[k] as string) : bad(k));
  const addr = (k: string): Address => {
    try {
      return toAddress(str(k));
    } catch {
      return bad(k);
    }
  };
  const b32 = (k: string): Bytes32 => (HEX32.test(str(k)) ? (str(k).toLowerCase() as Bytes32) : bad(k));
  const uint = (k: string, max: bigint): bigint => {
    const s = str(k);
    if (!DEC.test(s)) return bad(k);
    const n = BigInt(s);
    return n > max ? bad(k) : n;
  };
  const receipt: Receipt = {
    payer: addr('payer'),
    payee: addr('payee'),
    token: addr('token'),
    amount: uint('amount', MAX_UINT256),
    resource: b32('resource'),
    nonce: b32('nonce'),
    expiry: uint('expiry', MAX_UINT64),
    paymentId: b32('paymentId'),
  };
  if (receipt.amount === 0n) bad('amount');
  const sig = HEX65.test(str('sig')) ? (str('sig').toLowerCase() as SignatureHex) : bad('sig');
  return { receipt, sig };
}
