import { describe, expect, it } from 'vitest';
import * as native from './native.js';
import * as browser from './native-browser.js';
import { nobleSigner } from './signer.js';
import { keccak256, toAddress } from './hex.js';
import { domainSeparator, trickleDomain, typedDataDigest } from './eip712.js';
import { randomBytes32 } from './random.js';

const KEY = `0x${'11'.repeat(32)}`;

describe('native-browser: what @trickle/protocol/native resolves to in a browser bundle', () => {
  it('exports the same names as the Node module', () => {
    expect(Object.keys(browser).sort()).toEqual(Object.keys(native).sort());
  });
  it('falls back to noble: the same address and byte-identical signatures', () => {
    const digest = typedDataDigest(
      domainSeparator(trickleDomain(1n, toAddress(`0x${'ab'.repeat(20)}`))),
      new Uint8Array(32).fill(7),
    );
    const s = browser.bestSigner(KEY);
    expect(s.address).toBe(nobleSigner(KEY).address);
    expect(s.signDigest(digest)).toEqual(nobleSigner(KEY).signDigest(digest));
    expect(browser.bestVerifier().recoverAddress(digest, s.signDigest(digest))).toBe(s.address);
    expect(browser.bestKeccak256()).toBe(keccak256);
    expect(() => browser.nativeSigner(KEY)).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
  });
});

describe('randomBytes32', () => {
  it('is 0x and 64 lowercase hex digits, fresh each call', () => {
    const seen = new Set<string>();
    for (let k = 0; k < 1000; k++) {
      const r = randomBytes32();
      expect(r).toMatch(/^0x[0-9a-f]{64}$/);
      seen.add(r);
    }
    expect(seen.size).toBe(1000);
  });
});
