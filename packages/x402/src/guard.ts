/** {@link paymentHeaderGuard}'s bounds. */
export interface PaymentHeaderGuardOptions {
  /** Longest payment header kept, in characters of its base64 (default 8,192; a Trickle payment is about 1,500). */
  readonly maxBytes?: number;
  /** Deepest nesting of objects and arrays kept in the decoded payment (default 8; a Trickle payment nests 3 deep). */
  readonly maxDepth?: number;
}

/** The headers a payment travels in: x402 v2's, and v1's. */
const PAYMENT_HEADERS = ['payment-signature', 'x-payment'] as const;

/** The request part {@link paymentHeaderGuard} reads and edits (an Express or Node `IncomingMessage`). */
export interface GuardedRequest {
  headers: Record<string, string | string[] | undefined>;
}

/**
 * Express middleware to put in front of the stock `paymentMiddleware`: it drops a payment header that is too long or
 * whose decoded JSON nests too deep (or is not base64 JSON), so the request reads as unpaid and gets the stock 402.
 * Why: the stock server (`@x402/core` 2.27.0) compares the buyer's `accepted` with each requirement by re-serialising
 * it at every level of nesting, before any scheme sees it — time quadratic in the depth: a 6 KB header nested 2,000
 * deep held the seller's event loop for ~2.5 s, every other buyer waiting. The guard's own cost is linear.
 * @example
 * ```ts
 * app.use(paymentHeaderGuard(), paymentMiddleware(routes, server));
 * ```
 */
export function paymentHeaderGuard(
  options: PaymentHeaderGuardOptions = {},
): (req: GuardedRequest, res: unknown, next: () => void) => void {
  const maxBytes = options.maxBytes ?? 8192;
  const maxDepth = options.maxDepth ?? 8;
  if (!Number.isSafeInteger(maxBytes) || maxBytes < 1 || !Number.isSafeInteger(maxDepth) || maxDepth < 1)
    throw new RangeError('paymentHeaderGuard: maxBytes and maxDepth must be positive integers');
  return (req, _res, next) => {
    for (const name of PAYMENT_HEADERS) {
      const value = req.headers[name];
      if (value !== undefined && !acceptable(value, maxBytes, maxDepth)) delete req.headers[name];
    }
    next();
  };
}

/** Whether a payment header is one string of at most `maxBytes`, base64 of JSON nesting at most `maxDepth` deep. */
function acceptable(value: string | string[], maxBytes: number, maxDepth: number): boolean {
  if (typeof value !== 'string' || value.length > maxBytes) return false;
  const text = Buffer.from(value, 'base64').toString('utf8');
  // Depth by brackets outside strings: linear, and no parse of a hostile document.
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c)
        i++; // a backslash escapes the next character
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x7b || c === 0x5b) {
      if (++depth > maxDepth) return false;
    } else if (c === 0x7d || c === 0x5d) depth--;
  }
  return true;
}
