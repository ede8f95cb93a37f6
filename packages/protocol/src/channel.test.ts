import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  channelContext,
  checkTransition,
  checkLockTransition,
  zeroState,
  payouts,
  checkFullySigned,
} from './channel.js';
import { lockCommitment, type Lock } from './locks.js';
import { nobleSigner, nobleVerifier, signatureFromHex } from './signer.js';
import { stateDigest } from './eip712.js';
import type { ChannelParams, Funding, State, Role } from './types.js';
import type { ErrorCode } from './errors.js';

const device = nobleSigner('0x' + '11'.repeat(32));
const hub = nobleSigner('0x' + '22'.repeat(32));
const mallory = nobleSigner('0x' + '33'.repeat(32));
const params: ChannelParams = {
  chainId: 31337n,
  adjudicator: '0x5FbDB2315678afecb367f032d93F642f64180aa3' as never,
  device: device.address,
  hub: hub.address,
  token: '0x0000000000000000000000000000000000000000' as never,
  challengeDuration: 3600n,
  salt: ('0x' + '00'.repeat(32)) as never,
};
const funding: Funding = { device: 1000n, hub: 500n };
const ctx = channelContext(params, funding);
const s0 = zeroState(ctx.channelId);
const at = (o: Partial<State>): State => ({ ...s0, version: 1n, ...o });

const expectCode = (fn: () => unknown, code: ErrorCode) => expect(fn).toThrow(expect.objectContaining({ code }));

describe('checkTransition: every rule has its code', () => {
  const prev = at({ version: 5n, paidByDevice: 100n, paidByHub: 50n, round: 2n });
  it('accepts a valid device payment', () => {
    expect(checkTransition(prev, { ...prev, version: 6n, paidByDevice: 150n }, funding, 'device')).toBe('new');
  });
  it('WRONG_CHANNEL', () =>
    expectCode(
      () =>
        checkTransition(
          prev,
          { ...prev, version: 6n, channelId: ('0x' + '01'.repeat(32)) as never },
          funding,
          'device',
        ),
      'WRONG_CHANNEL',
    ));
  it('STALE_VERSION', () =>
    expectCode(
      () => checkTransition(prev, { ...prev, version: 4n, paidByDevice: 200n }, funding, 'device'),
      'STALE_VERSION',
    ));
  it('duplicate replay of the current state is idempotent', () =>
    expect(checkTransition(prev, { ...prev }, funding, 'device')).toBe('duplicate'));
  it('EQUIVOCATION', () =>
    expectCode(() => checkTransition(prev, { ...prev, paidByDevice: 101n }, funding, 'device'), 'EQUIVOCATION'));
  it('CHANNEL_FINAL', () =>
    expectCode(
      () => checkTransition({ ...prev, isFinal: true }, { ...prev, version: 6n }, funding, 'device'),
      'CHANNEL_FINAL',
    ));
  it('COUNTER_DECREASED', () =>
    expectCode(
      () => checkTransition(prev, { ...prev, version: 6n, paidByDevice: 99n }, funding, 'device'),
      'COUNTER_DECREASED',
    ));
  it('WRONG_PAYER: the device cannot raise what the hub paid', () =>
    expectCode(
      () => checkTransition(prev, { ...prev, version: 6n, paidByHub: 51n }, funding, 'device'),
      'WRONG_PAYER',
    ));
  it('WRONG_PAYER: the hub cannot raise what the device paid', () =>
    expectCode(
      () => checkTransition(prev, { ...prev, version: 6n, paidByDevice: 101n }, funding, 'hub'),
      'WRONG_PAYER',
    ));
  it('INSUFFICIENT_FUNDS at one base unit over the limit, accepted exactly at it', () => {
    // device can pay deposit + what it received: 1000 + 50
    expect(checkTransition(prev, { ...prev, version: 6n, paidByDevice: 1050n }, funding, 'device')).toBe('new');
    expectCode(
      () => checkTransition(prev, { ...prev, version: 6n, paidByDevice: 1051n }, funding, 'device'),
      'INSUFFICIENT_FUNDS',
    );
    expectCode(
      () => checkTransition(prev, { ...prev, version: 6n, paidByHub: 601n }, funding, 'hub'),
      'INSUFFICIENT_FUNDS',
    );
  });
  it('BAD_ROUND: rounds never fall and only the hub raises them', () => {
    expectCode(() => checkTransition(prev, { ...prev, version: 6n, round: 1n }, funding, 'hub'), 'BAD_ROUND');
    expectCode(() => checkTransition(prev, { ...prev, version: 6n, round: 3n }, funding, 'device'), 'BAD_ROUND');
    expect(checkTransition(prev, { ...prev, version: 6n, round: 3n, paidByHub: 60n }, funding, 'hub')).toBe('new');
  });
  it('BAD_FINAL: a final state moves no money', () => {
    expectCode(
      () => checkTransition(prev, { ...prev, version: 6n, paidByDevice: 101n, isFinal: true }, funding, 'device'),
      'BAD_FINAL',
    );
    expect(checkTransition(prev, { ...prev, version: 6n, isFinal: true }, funding, 'device')).toBe('new');
  });
  it('a state that breaks several rules gets the code of the first one in the spec’s order (§2, rules 1–8)', () => {
    const next = (o: Partial<State>): State => ({ ...prev, version: 6n, ...o });
    const overspent = 1_051n; // the device has 1000 + 50 received
    // 6 before 7 and 8: a device's overspending state that also raises the round, or is final.
    expectCode(
      () => checkTransition(prev, next({ paidByDevice: overspent, round: 3n }), funding, 'device'),
      'INSUFFICIENT_FUNDS',
    );
    expectCode(
      () => checkTransition(prev, next({ paidByDevice: overspent, isFinal: true }), funding, 'device'),
      'INSUFFICIENT_FUNDS',
    );
    // 7 before 8: a final state of the device's that moves money and raises the round.
    expectCode(
      () => checkTransition(prev, next({ paidByDevice: 101n, round: 3n, isFinal: true }), funding, 'device'),
      'BAD_ROUND',
    );
    // 3 before 4, 2 before 3, 1 before 2.
    const fin = { ...prev, isFinal: true };
    expectCode(
      () => checkTransition(fin, next({ paidByDevice: 1n, isFinal: true }), funding, 'device'),
      'CHANNEL_FINAL',
    );
    expectCode(() => checkTransition(fin, { ...fin, version: 4n }, funding, 'device'), 'STALE_VERSION');
    expectCode(
      () =>
        checkTransition(
          prev,
          { ...prev, version: 4n, channelId: s0.channelId.replace('0x', '0xff').slice(0, 66) as never },
          funding,
          'device',
        ),
      'WRONG_CHANNEL',
    );
  });
});

describe('checkLockTransition: an add (spec §2 Locks)', () => {
  const lock = (n: number): Lock => ({
    amount: 10n,
    hash: `0x${n.toString(16).padStart(64, '0')}` as never,
    expiry: 2_000_000_000n,
    payer: 'device',
  });
  const held = [lock(1), lock(2)];
  const prev = at({ version: 3n, ...lockCommitment(held) });
  const adding = (l: Lock): State => ({ ...prev, version: 4n, ...lockCommitment([...held, l]) });
  const add = (l: Lock, maxLocks = 32) =>
    checkLockTransition(prev, held, adding(l), { kind: 'add', lock: l }, funding, 'device', { maxLocks });
  it('takes a new hash at the end of the list', () => expect(add(lock(3)).locks).toEqual([...held, lock(3)]));
  it('a hash already pending: MALFORMED', () => expectCode(() => add({ ...lock(2), amount: 5n }), 'MALFORMED'));
  it('past maxLocks: TOO_MANY_LOCKS', () => expectCode(() => add(lock(3), 2), 'TOO_MANY_LOCKS'));
  it('more than the payer has: INSUFFICIENT_FUNDS', () =>
    expectCode(() => add({ ...lock(3), amount: 1_000n }), 'INSUFFICIENT_FUNDS'));
});

describe('properties', () => {
  const move = fc.record({
    who: fc.constantFrom<Role>('device', 'hub'),
    amount: fc.bigInt({ min: 0n, max: 400n }),
    round: fc.boolean(),
  });
  it('random valid sequences conserve money and keep counters monotonic; invalid moves change nothing', () => {
    fc.assert(
      fc.property(fc.array(move, { maxLength: 40 }), (moves) => {
        let cur = s0;
        for (const m of moves) {
          const next: State = {
            ...cur,
            version: cur.version + 1n,
            paidByDevice: cur.paidByDevice + (m.who === 'device' ? m.amount : 0n),
            paidByHub: cur.paidByHub + (m.who === 'hub' ? m.amount : 0n),
            round: cur.round + (m.round && m.who === 'hub' ? 1n : 0n),
          };
          let ok = true;
          try {
            checkTransition(cur, next, funding, m.who);
          } catch {
            ok = false;
          }
          const affordable = payouts(next, funding)[m.who] >= 0n;
          expect(ok).toBe(affordable);
          if (!ok) continue;
          expect(next.paidByDevice >= cur.paidByDevice && next.paidByHub >= cur.paidByHub).toBe(true);
          cur = next;
          const p = payouts(cur, funding);
          expect(p.device + p.hub).toBe(funding.device + funding.hub);
          expect(p.device >= 0n && p.hub >= 0n).toBe(true);
        }
      }),
      { numRuns: 500 },
    );
  });
});

describe('parameters and helpers', () => {
  it('validateParams mirrors the adjudicator', async () => {
    const { validateParams, isZeroState, signState } = await import('./channel.js');
    expect(() => validateParams(params)).not.toThrow();
    expectCode(() => validateParams({ ...params, hub: params.device }), 'INVALID_ARGUMENT');
    expectCode(() => validateParams({ ...params, challengeDuration: 0n }), 'INVALID_ARGUMENT');
    expectCode(() => validateParams({ ...params, challengeDuration: 3600n * 1000n * 24n * 365n }), 'INVALID_ARGUMENT');
    expect(isZeroState(s0)).toBe(true);
    expect(isZeroState({ ...s0, isFinal: true })).toBe(true);
    expect(isZeroState(at({ paidByDevice: 1n }))).toBe(false);
    const next = at({ paidByDevice: 3n });
    const both = signState(hub, ctx.separator, next, 'hub', signState(device, ctx.separator, next, 'device'));
    checkFullySigned(ctx, both, nobleVerifier);
  });
});
