import { describe, expect, it } from 'vitest';
import { paymentHeaderGuard, type GuardedRequest } from './guard.js';

const b64 = (text: string) => Buffer.from(text).toString('base64');
/** A payment whose `accepted` carries `junk` nested `depth` arrays deep (the shape that stalls the stock matcher). */
const nested = (depth: number) =>
  `{"x402Version":2,"accepted":{"scheme":"trickle-channel","junk":${'['.repeat(depth)}${']'.repeat(depth)}},"payload":{}}`;

/** What the guard leaves of a request with these headers. */
function guarded(headers: GuardedRequest['headers'], options?: Parameters<typeof paymentHeaderGuard>[0]) {
  const req: GuardedRequest = { headers: { ...headers } };
  let nexts = 0;
  paymentHeaderGuard(options)(req, undefined, () => nexts++);
  expect(nexts).toBe(1);
  return req.headers;
}

describe('paymentHeaderGuard', () => {
  it('keeps a payment nesting up to maxDepth (8) and drops a deeper one, in both header names; other headers untouched', () => {
    // nested(d): { accepted: { junk: d arrays } } is d + 2 levels deep.
    expect(guarded({ 'payment-signature': b64(nested(6)), accept: '*/*' })).toEqual({
      'payment-signature': b64(nested(6)),
      accept: '*/*',
    });
    expect(guarded({ 'payment-signature': b64(nested(7)), accept: '*/*' })).toEqual({ accept: '*/*' });
    expect(guarded({ 'x-payment': b64(nested(2_000)) })).toEqual({});
    expect(guarded({ 'payment-signature': b64(nested(3)) }, { maxDepth: 4 })).toEqual({});
  });

  it('counts brackets inside strings (escaped quotes too) as text, not nesting', () => {
    const text = `{"a":"${'[{'.repeat(50)}\\"${'['.repeat(50)}","b":[1]}`;
    expect(guarded({ 'payment-signature': b64(text) })).toEqual({ 'payment-signature': b64(text) });
  });

  it('drops a header longer than maxBytes, and a repeated one', () => {
    const long = b64(`{"a":"${'x'.repeat(7_000)}"}`);
    expect(long.length).toBeGreaterThan(8192);
    expect(guarded({ 'payment-signature': long })).toEqual({});
    expect(guarded({ 'payment-signature': long }, { maxBytes: 20_000 })).toEqual({ 'payment-signature': long });
    expect(guarded({ 'payment-signature': [b64('{}'), b64('{}')] })).toEqual({});
  });

  it('refuses bounds that are not positive integers', () => {
    expect(() => paymentHeaderGuard({ maxDepth: 0 })).toThrow(RangeError);
    expect(() => paymentHeaderGuard({ maxBytes: 1.5 })).toThrow(RangeError);
  });
});
