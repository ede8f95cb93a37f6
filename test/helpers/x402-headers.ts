/** What an x402 service's answer says in its headers, read with the stock @x402/core decoders. */
import { decodePaymentRequiredHeader, decodePaymentResponseHeader } from '@x402/core/http';
import type { PaymentRequirements } from '@x402/core/types';

/** The first requirements the 402 of the service at `url` lists (it asks without paying). */
export const requirementsOf = async (url: string): Promise<PaymentRequirements> =>
  decodePaymentRequiredHeader((await fetch(url)).headers.get('PAYMENT-REQUIRED')!).accepts[0]!;

/** The facilitator's reason for a refusal, from the PAYMENT-RESPONSE header (undefined without one). */
export const reasonOf = (res: Response): string | undefined => {
  const h = res.headers.get('PAYMENT-RESPONSE');
  return h ? decodePaymentResponseHeader(h).errorReason : undefined;
};
