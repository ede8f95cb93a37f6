// Receipt purchases (`payForReceipt`) as a device's store keeps them, with no I/O: the encoding and the in-memory
// store. The file store's copy, on node:fs, is in purchases-file.ts.
import { TrickleError } from '@trickle/protocol/errors';
import { signedReceiptFromJson, signedReceiptToJson, type Receipt } from '@trickle/protocol/receipt';
import type { Bytes32, SignatureHex } from '@trickle/protocol/types';

/**
 * Where a device keeps its receipt purchases (the receipt each will be, all but the hub's signature): written before
 * the payment leaves the device, so a restarted device can still ask the hub for the receipt of a payment it made
 * (`receiptFor`), and forgotten once the receipt expired.
 */
export interface PurchaseStore {
  /** Record a purchase; resolves once it is durable. */
  savePurchase(purchase: Receipt): Promise<void>;
  /** The purchase of this payment id, if recorded. */
  loadPurchase(paymentId: Bytes32): Promise<Receipt | undefined>;
  /** Every recorded purchase. */
  listPurchases(): Promise<Receipt[]>;
  /** Forget a purchase (one not recorded is fine). */
  forgetPurchase(paymentId: Bytes32): Promise<void>;
}

/** A 65-byte placeholder: a purchase is a receipt without its signature, parsed with the receipt's own checks. */
const NO_SIG = `0x${'00'.repeat(65)}` as SignatureHex;

/** A purchase as stored: the receipt's JSON form (amount and expiry as decimal strings) without `sig`. */
export function encodePurchase(purchase: Receipt): string {
  const { sig: _, ...json } = signedReceiptToJson({ receipt: purchase, sig: NO_SIG });
  return `${JSON.stringify(json)}\n`;
}

/** Parse a purchase written by {@link encodePurchase}. @throws TrickleError('MALFORMED') */
export function decodePurchase(text: string): Receipt {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (cause) {
    throw new TrickleError('MALFORMED', 'not a receipt purchase record', { cause });
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v))
    throw new TrickleError('MALFORMED', 'not a receipt purchase record');
  return signedReceiptFromJson({ ...v, sig: NO_SIG }).receipt;
}

/** Purchases in memory (the memory channel store's): nothing survives the process. */
export function memoryPurchases(): PurchaseStore {
  const m = new Map<Bytes32, string>();
  return {
    async savePurchase(p) {
      m.set(p.paymentId, encodePurchase(p));
    },
    async loadPurchase(id) {
      const t = m.get(id);
      return t === undefined ? undefined : decodePurchase(t);
    },
    async listPurchases() {
      return [...m.values()].map(decodePurchase);
    },
    async forgetPurchase(id) {
      m.delete(id);
    },
  };
}
