/**
 * Shared setup for the contract tests: an in-process EDR chain, a deployed adjudicator, a USDT-like token funded
 * and approved for the device and the hub, signing helpers, and snapshot-based reset between tests.
 */
import type { Wallet } from 'ethers';
import { expect } from 'vitest';
import { Adjudicator } from '@trickle/chain/adjudicator';
import { deployAdjudicator, deployToken, type TestToken } from '@trickle/chain/deploy';
import { approve, balanceOf, mintTestToken } from '@trickle/chain/erc20';
import { decodeChainError, isChainRevert } from '@trickle/chain/errors';
import { startLocalChain, type LocalChain } from '@trickle/devchain/localChain';
import { channelIdOf, domainSeparator, stateDigest, trickleDomain } from '@trickle/protocol/eip712';
import { toBytes32 } from '@trickle/protocol/hex';
import { hashPreimage, lockCommitment, type Lock } from '@trickle/protocol/locks';
import { nobleSigner, signatureToHex, type Signer } from '@trickle/protocol/signer';
import {
  ETH_TOKEN,
  NO_LOCKS,
  type Bytes32,
  type Address,
  type ChannelId,
  type ChannelParams,
  type SignedState,
  type State,
} from '@trickle/protocol/types';

export const MAX_UINT256 = (1n << 256n) - 1n;
export const ETH = ETH_TOKEN;
export const CHALLENGE = 1000n;
export const ONE_ETH = 10n ** 18n;
export const USDT = 1_000_000n; // one USDT-like token (6 decimals)

/** A lock with its preimage (the preimage is derived from `seed`, so tests can make several distinct ones). */
export interface TestLock {
  readonly lock: Lock;
  readonly preimage: Bytes32;
}

/** A lock of `amount` paid by `payer`, claimable until `expiry`, on the hash of a preimage made from `seed`. */
export function makeLock(amount: bigint, payer: Lock['payer'], expiry: bigint, seed = 1): TestLock {
  const preimage = toBytes32(`0x${seed.toString(16).padStart(2, '0').repeat(32)}`);
  return { lock: { amount, hash: hashPreimage(preimage), expiry, payer }, preimage };
}

/** `state` committing to `locks` (root and per-payer totals). */
export function withLocks(state: State, locks: readonly TestLock[]): State {
  return { ...state, ...lockCommitment(locks.map((l) => l.lock)) };
}

export interface Fixture {
  readonly chain: LocalChain;
  /** The adjudicator, bound to the deployer. */
  readonly adj: Adjudicator;
  readonly usdt: TestToken;
  readonly deployer: Wallet;
  readonly device: Wallet;
  readonly hub: Wallet;
  /** A third party: submits closes and settles, so the parties' ETH balances move only by payouts. */
  readonly relayer: Wallet;
  /** Someone else entirely (a recipient, a wrong signer). */
  readonly outsider: Wallet;
  readonly deviceKey: Signer;
  readonly hubKey: Signer;
  readonly outsiderKey: Signer;
  readonly sep: Uint8Array;
  /** Fresh channel params (unique salt) for `token`. */
  params(token: Address, overrides?: Partial<ChannelParams>): ChannelParams;
  /** A state of channel `id` (zero counters, non-final unless overridden). */
  state(id: ChannelId, fields?: Partial<State>): State;
  /** Sign a state by the device and the hub (or the given keys) under this adjudicator's domain. */
  sign(state: State, keys?: { device?: Signer; hub?: Signer; sep?: Uint8Array }): SignedState;
  /** Open a channel funded by both: the device opens, the hub tops up. */
  open(
    token: Address,
    deviceDeposit: bigint,
    hubDeposit: bigint,
    overrides?: Partial<ChannelParams>,
  ): Promise<{ id: ChannelId; params: ChannelParams }>;
  /** Balance of an account in ETH or a token. */
  balance(token: Address, account: string): Promise<bigint>;
  /** Back to the state right after setup (or the last {@link Fixture.rebase}). */
  reset(): Promise<void>;
  /** Make the current state the one {@link Fixture.reset} returns to (after extra setup in a test file). */
  rebase(): Promise<void>;
  close(): Promise<void>;
}

export async function createFixture(): Promise<Fixture> {
  const chain = await startLocalChain({ accounts: 6 });
  const [deployer, device, hub, relayer, outsider] = [0, 1, 2, 3, 4].map((i) => chain.wallet(i)) as [
    Wallet,
    Wallet,
    Wallet,
    Wallet,
    Wallet,
  ];
  const adj = await deployAdjudicator(deployer);
  const usdt = await deployToken(deployer, 'usdt');
  for (const w of [device, hub]) {
    await mintTestToken(deployer, usdt.address, w.address as Address, 1_000_000n * USDT);
    await approve(w, usdt.address, adj.address, MAX_UINT256);
  }
  const deviceKey = nobleSigner(chain.accounts[1]!);
  const hubKey = nobleSigner(chain.accounts[2]!);
  const outsiderKey = nobleSigner(chain.accounts[4]!);
  const sep = domainSeparator(trickleDomain(chain.chainId, adj.address));
  let snap = await chain.snapshot();
  let salt = 0n;

  const fx: Fixture = {
    chain,
    adj,
    usdt,
    deployer,
    device,
    hub,
    relayer,
    outsider,
    deviceKey,
    hubKey,
    outsiderKey,
    sep,
    params(token, overrides = {}) {
      salt += 1n;
      return {
        chainId: chain.chainId,
        adjudicator: adj.address,
        device: device.address as Address,
        hub: hub.address as Address,
        token,
        challengeDuration: CHALLENGE,
        salt: toBytes32(`0x${salt.toString(16).padStart(64, '0')}`),
        ...overrides,
      };
    },
    state(id, fields = {}) {
      return {
        channelId: id,
        version: 0n,
        paidByDevice: 0n,
        paidByHub: 0n,
        round: 0n,
        ...NO_LOCKS,
        isFinal: false,
        ...fields,
      };
    },
    sign(state, keys = {}) {
      const digest = stateDigest(keys.sep ?? sep, state);
      return {
        state,
        deviceSig: signatureToHex((keys.device ?? deviceKey).signDigest(digest)),
        hubSig: signatureToHex((keys.hub ?? hubKey).signDigest(digest)),
      };
    },
    async open(token, deviceDeposit, hubDeposit, overrides = {}) {
      const params = fx.params(token, overrides);
      const r = await adj.connect(device).open(params, deviceDeposit);
      expect(r.channelId).toBe(channelIdOf(params));
      if (hubDeposit > 0n) await adj.connect(hub).deposit(r.channelId, hubDeposit, { token });
      return { id: r.channelId, params };
    },
    balance(token, account) {
      return balanceOf(chain.provider, token, account as Address);
    },
    async reset() {
      await chain.revert(snap);
      snap = await chain.snapshot();
    },
    async rebase() {
      snap = await chain.snapshot();
    },
    close() {
      return chain.close();
    },
  };
  return fx;
}

/** Assert that `p` rejects with a decoded revert of custom error `name`; returns the error's named args. */
export async function expectRevert(p: Promise<unknown>, name: string): Promise<Record<string, unknown>> {
  let caught: unknown;
  try {
    await p;
  } catch (e) {
    caught = e;
  }
  expect(caught, `expected a revert with ${name}`).toBeDefined();
  if (!isChainRevert(caught, name)) {
    throw new Error(
      `expected revert ${name}, got ${String((caught as { details?: { error?: string } }).details?.error ?? caught)}`,
    );
  }
  return (caught.details as { namedArgs: Record<string, unknown> }).namedArgs;
}

/** Run `fn` and return how the given accounts' balances in `token` changed. */
export async function deltas(
  fx: Fixture,
  token: Address,
  accounts: string[],
  fn: () => Promise<unknown>,
): Promise<bigint[]> {
  const before = await Promise.all(accounts.map((a) => fx.balance(token, a)));
  await fn();
  const after = await Promise.all(accounts.map((a) => fx.balance(token, a)));
  return after.map((v, i) => v - before[i]!);
}

/** Decode reverts of a raw ethers call (bypassing the typed wrapper) into TrickleErrors. */
export function decoded<T>(p: Promise<T>): Promise<T> {
  return p.catch((e: unknown) => {
    throw decodeChainError(e);
  });
}
