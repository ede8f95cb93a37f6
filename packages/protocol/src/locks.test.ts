import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { AbiCoder, keccak256 as ethersKeccak } from 'ethers';
import {
  checkLock,
  encodeLock,
  hashPreimage,
  lockCommitment,
  lockOutcome,
  locksRoot,
  revealDue,
  type Lock,
} from './locks.js';
import { toHex } from './hex.js';
import { ZERO_ROOT, type Bytes32 } from './types.js';

const file = JSON.parse(
  readFileSync(new URL('../../../protocol-spec/vectors/locks.json', import.meta.url), 'utf8'),
) as {
  preimages: { preimage: Bytes32; hash: Bytes32 }[];
  vectors: {
    locks: { amount: string; hash: Bytes32; expiry: string; payer: 'device' | 'hub' }[];
    encoded: string[];
    locksRoot: Bytes32;
    lockedByDevice: string;
    lockedByHub: string;
  }[];
};
const revive = (l: (typeof file.vectors)[number]['locks'][number]): Lock => ({
  ...l,
  amount: BigInt(l.amount),
  expiry: BigInt(l.expiry),
});
const expectCode = (fn: () => unknown, code: string) => expect(fn).toThrow(expect.objectContaining({ code }));

describe('lock commitment', () => {
  it('reproduces every vector of protocol-spec/vectors/locks.json (root, totals, encodings)', () => {
    expect(file.vectors.length).toBeGreaterThanOrEqual(3);
    for (const v of file.vectors) {
      const locks = v.locks.map(revive);
      expect(locks.map((l) => toHex(encodeLock(l)))).toEqual(v.encoded);
      expect(lockCommitment(locks)).toEqual({
        locksRoot: v.locksRoot,
        lockedByDevice: BigInt(v.lockedByDevice),
        lockedByHub: BigInt(v.lockedByHub),
      });
    }
    for (const p of file.preimages) expect(hashPreimage(p.preimage)).toBe(p.hash);
  });

  it('matches an independent ABI encoder (ethers): keccak256 of the concatenated abi.encode of each lock', () => {
    const locks = file.vectors.at(-1)!.locks.map(revive);
    const coder = AbiCoder.defaultAbiCoder();
    const body = locks
      .map((l) =>
        coder
          .encode(['uint256', 'bytes32', 'uint64', 'uint8'], [l.amount, l.hash, l.expiry, l.payer === 'hub' ? 1 : 0])
          .slice(2),
      )
      .join('');
    expect(locksRoot(locks)).toBe(ethersKeccak(`0x${body}`));
  });

  it('no locks is the zero root with zero totals; order is part of the root', () => {
    expect(lockCommitment([])).toEqual({ locksRoot: ZERO_ROOT, lockedByDevice: 0n, lockedByHub: 0n });
    const locks = file.vectors.at(-1)!.locks.map(revive);
    expect(locksRoot([...locks].reverse())).not.toBe(locksRoot(locks));
  });

  it('refuses locks out of range with MALFORMED', () => {
    const ok: Lock = { amount: 1n, hash: file.preimages[0]!.hash, expiry: 10n, payer: 'device' };
    expect(() => checkLock(ok)).not.toThrow();
    expectCode(() => locksRoot([{ ...ok, amount: 0n }]), 'MALFORMED');
    expectCode(() => locksRoot([{ ...ok, amount: 1n << 256n }]), 'MALFORMED');
    expectCode(() => locksRoot([{ ...ok, expiry: 1n << 64n }]), 'MALFORMED');
    expectCode(() => locksRoot([{ ...ok, expiry: -1n }]), 'MALFORMED');
    expectCode(() => locksRoot([{ ...ok, payer: 'relay' as never }]), 'MALFORMED');
    expectCode(() => locksRoot([{ ...ok, hash: '0x1234' as Bytes32 }]), 'MALFORMED');
    expectCode(() => hashPreimage('0x12' as Bytes32), 'MALFORMED');
  });
});

describe('lockOutcome (the adjudicator rule, to the second)', () => {
  const lock: Lock = { amount: 5n, hash: file.preimages[0]!.hash, expiry: 1000n, payer: 'hub' };
  it('revealed at or before expiry: the payee, whenever settled', () => {
    expect(lockOutcome(lock, 1000n, 5000n)).toBe('payee');
    expect(lockOutcome(lock, 1n, 2n)).toBe('payee');
  });
  it('revealed one second late, or never: the payer once expiry has passed', () => {
    expect(lockOutcome(lock, 1001n, 1001n)).toBe('payer');
    expect(lockOutcome(lock, 0n, 1001n)).toBe('payer');
    expect(lockOutcome(lock, undefined, 1001n)).toBe('payer');
  });
  it('unrevealed up to and including expiry: pending', () => {
    expect(lockOutcome(lock, 0n, 1000n)).toBe('pending');
    expect(lockOutcome(lock, undefined, 999n)).toBe('pending');
  });
});

describe('revealDue (when a payee takes its claim on-chain)', () => {
  const lock: Lock = { amount: 5n, hash: file.preimages[0]!.hash, expiry: 1000n, payer: 'hub' };
  it('in an open channel: from `margin` seconds before the expiry, to the second, through the expiry', () => {
    expect(revealDue(lock, 939n, false, 60n)).toBe(false);
    expect(revealDue(lock, 940n, false, 60n)).toBe(true);
    expect(revealDue(lock, 1000n, false, 60n)).toBe(true);
  });
  it('while the channel is being force-closed: at once', () => {
    expect(revealDue(lock, 1n, true, 60n)).toBe(true);
    expect(revealDue(lock, 1000n, true, 0n)).toBe(true);
  });
  it('never past the expiry, closing or not', () => {
    expect(revealDue(lock, 1001n, true, 60n)).toBe(false);
    expect(revealDue(lock, 1001n, false, 600n)).toBe(false);
  });
});
