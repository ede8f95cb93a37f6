import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { bytesToHex } from '@noble/hashes/utils.js';
import { fromHex, toHex, uintWord, writeHex, writeUintWord } from './hex.js';
import { MalformedError } from './errors.js';

// The reference the table-driven decoder replaced: a regular expression, then @noble/hashes' decoder.
const reference = (hex: string): Uint8Array | 'malformed' => {
  if (!/^0x([0-9a-fA-F]{2})*$/.test(hex)) return 'malformed';
  return Uint8Array.from(Buffer.from(hex.slice(2), 'hex'));
};

describe('fromHex', () => {
  it('decodes exactly what the regular-expression decoder did, and refuses the rest', () => {
    const hexChar = fc.constantFrom(...'0123456789abcdefABCDEFxXgG /'.split(''));
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string({ unit: hexChar }).map((s) => `0x${s}`),
          fc.string(),
        ),
        (s) => {
          const want = reference(s);
          if (want === 'malformed') expect(() => fromHex(s)).toThrow(MalformedError);
          else expect(fromHex(s)).toEqual(want);
        },
      ),
      { numRuns: 2000 },
    );
  });

  it('refuses a wrong length, non-strings, a missing prefix and non-ASCII digits', () => {
    expect(() => fromHex('0x0011', 3)).toThrow('expected 3 bytes, got 2');
    expect(() => fromHex(12 as unknown as string)).toThrow('not 0x-prefixed hex');
    expect(() => fromHex('0011')).toThrow('not 0x-prefixed hex');
    expect(() => fromHex('0X0011')).toThrow('not 0x-prefixed hex');
    expect(() => fromHex('0x0\u0661')).toThrow('not 0x-prefixed hex');
    expect(() => fromHex('0x1\u0130')).toThrow('not 0x-prefixed hex');
    expect(fromHex('0x')).toEqual(new Uint8Array(0));
  });

  it('writeHex writes in place and refuses what fromHex refuses, bad digits before a wrong length', () => {
    const out = new Uint8Array(6).fill(9);
    writeHex(out, 1, '0xA0b1C2d3', 4);
    expect([...out]).toEqual([9, 0xa0, 0xb1, 0xc2, 0xd3, 9]);
    expect(() => writeHex(out, 0, '0xzz', 2)).toThrow('not 0x-prefixed hex');
    expect(() => writeHex(out, 0, '0x00', 2)).toThrow('expected 2 bytes, got 1');
    expect(() => writeHex(out, 0, '0x0g00', 2)).toThrow('not 0x-prefixed hex');
    expect(() => writeHex(out, 4, '0x000000', 3)).toThrow(MalformedError);
  });
});

describe('uintWord', () => {
  it('is the big-endian 32-byte word of every uint256, on both sides of the number fast path', () => {
    const word = (v: bigint) => v.toString(16).padStart(64, '0');
    fc.assert(
      fc.property(
        fc.oneof(
          fc.bigInt({ min: 0n, max: (1n << 256n) - 1n }),
          fc.bigInt({ min: 0n, max: 1n << 49n }),
          fc.constantFrom(0n, 1n, 255n, 256n, (1n << 48n) - 1n, 1n << 48n, (1n << 53n) + 1n, (1n << 256n) - 1n),
        ),
        (v) => {
          expect(bytesToHex(uintWord(v))).toBe(word(v));
          const out = new Uint8Array(40);
          writeUintWord(out, 4, v);
          expect(bytesToHex(out.subarray(4, 36))).toBe(word(v));
          expect([...out.subarray(0, 4), ...out.subarray(36)]).toEqual(new Array(8).fill(0));
        },
      ),
      { numRuns: 2000 },
    );
    expect(uintWord(-5n)).toEqual(new Uint8Array(32));
  });
  it('toHex gives 0x and two lowercase digits per byte, for every length (short ones as one flat string)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 0, maxLength: 1500 }), (b) => {
        expect(toHex(b)).toBe(`0x${Buffer.from(b).toString('hex')}`);
      }),
      { numRuns: 300 },
    );
    expect(toHex(new Uint8Array(0))).toBe('0x');
    expect(toHex(Uint8Array.from([0, 9, 10, 15, 16, 255]))).toBe('0x00090a0f10ff');
  });
});
