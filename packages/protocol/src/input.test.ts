import { describe, expect, it } from 'vitest';
import { isTrickleError } from './errors.js';
import { toAddressInput, toChainId, typed } from './input.js';

describe('toChainId', () => {
  it('takes a number or a bigint and gives a bigint', () => {
    expect(toChainId(31337)).toBe(31337n);
    expect(toChainId(31337n)).toBe(31337n);
    expect(toChainId(Number.MAX_SAFE_INTEGER)).toBe(BigInt(Number.MAX_SAFE_INTEGER));
  });

  it.each([0, -1, 1.5, Number.NaN, 2 ** 60, 0n, -5n])('refuses %s', (v) => {
    expect(() => toChainId(v)).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
  });

  it('refuses what is neither (a string from an untyped caller)', () => {
    const e = (() => {
      try {
        toChainId('31337' as never, 'expectChainId');
      } catch (x) {
        return x;
      }
    })();
    expect(isTrickleError(e, 'INVALID_ARGUMENT')).toBe(true);
    expect((e as { details: Record<string, unknown> }).details).toEqual({ expectChainId: 'string', type: 'string' });
  });
});

describe('toAddressInput', () => {
  const lower = '0x2b5ad5c4795c026514f8317c7a215e218dccd6cf';
  const checksummed = '0x2B5AD5c4795c026514f8317c7a215E218DcCD6cF';

  it('accepts a plain 0x literal and returns it checksummed', () => {
    expect(toAddressInput(lower, 'hub')).toBe(checksummed);
    expect(toAddressInput(checksummed, 'hub')).toBe(checksummed);
  });

  it('refuses a wrong checksum and a wrong length, naming the option', () => {
    const bad = `0x2B5AD5c4795c026514f8317c7a215E218DcCD6cf` as const; // last letter's case flipped
    for (const v of [bad, '0x1234'] as const) {
      let err: unknown;
      try {
        toAddressInput(v, 'adjudicator');
      } catch (e) {
        err = e;
      }
      expect(isTrickleError(err, 'INVALID_ARGUMENT')).toBe(true);
      expect((err as { shortMessage: string }).shortMessage).toMatch(/^adjudicator is not an address/);
    }
  });
});

describe('typed', () => {
  it('shows the type beside the value', () => {
    expect(typed(31337)).toBe('31337 (number)');
    expect(typed(31337n)).toBe('31337 (bigint)');
  });
});
