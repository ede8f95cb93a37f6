/**
 * ERC20 and ETH helpers for tests, the demo and the CLI: balances, allowances, approvals, test-token minting.
 * The zero address (`ETH_TOKEN`) stands for ETH wherever a token is expected.
 */
import { Contract, type ContractRunner, type Provider, type Signer } from 'ethers';
import { TrickleError } from '@trickle/protocol/errors';
import { toAddressInput, type AddressInput } from '@trickle/protocol/input';
import type { Address, Hex } from '@trickle/protocol/types';
import { decodeChainError } from './errors.js';

// `approve`/`transfer` are declared without return values: USDT-style tokens return nothing, and ethers does not
// decode a transaction's return value anyway.
const ERC20_ABI = [
  'function balanceOf(address) view returns (uint256)',
  'function allowance(address owner, address spender) view returns (uint256)',
  'function decimals() view returns (uint8)',
  'function approve(address spender, uint256 amount)',
  'function transfer(address to, uint256 amount)',
  'function mint(address to, uint256 amount)',
] as const;

function isEth(token: string): boolean {
  return BigInt(token) === 0n;
}

function providerOf(runner: ContractRunner): Provider {
  const provider = (runner as { provider?: Provider | null }).provider ?? (runner as Provider);
  if (typeof (provider as Partial<Provider>).getBalance !== 'function') {
    throw new TrickleError('INVALID_ARGUMENT', 'runner has no provider');
  }
  return provider;
}

/*
 * Addresses may be given as any `0x…` literal (checksum-checked when mixed-case); a malformed one is an
 * INVALID_ARGUMENT naming the parameter.
 */

/**
 * Balance of `owner` in `token` (ETH for the zero address).
 * @param runner - a provider or a signer with one
 * @example
 * ```ts
 * const before = await balanceOf(provider, usdt.address, device);
 * ```
 */
export async function balanceOf(runner: ContractRunner, token: AddressInput, owner: AddressInput): Promise<bigint> {
  const [t, o] = [toAddressInput(token, 'token'), toAddressInput(owner, 'owner')];
  try {
    if (isEth(t)) return await providerOf(runner).getBalance(o);
    return (await new Contract(t, ERC20_ABI, runner).getFunction('balanceOf').staticCall(o)) as bigint;
  } catch (e) {
    throw decodeChainError(e);
  }
}

/** Allowance `owner` gave `spender` in `token`. */
export async function allowance(
  runner: ContractRunner,
  token: AddressInput,
  owner: AddressInput,
  spender: AddressInput,
): Promise<bigint> {
  const [t, o, s] = [
    toAddressInput(token, 'token'),
    toAddressInput(owner, 'owner'),
    toAddressInput(spender, 'spender'),
  ];
  try {
    return (await new Contract(t, ERC20_ABI, runner).getFunction('allowance').staticCall(o, s)) as bigint;
  } catch (e) {
    throw decodeChainError(e);
  }
}

async function send(signer: Signer, token: Address, method: string, args: unknown[]): Promise<Hex> {
  try {
    const tx = await new Contract(token, ERC20_ABI, signer).getFunction(method).send(...args);
    const receipt = await tx.wait();
    return (receipt?.hash ?? tx.hash) as Hex;
  } catch (e) {
    throw decodeChainError(e);
  }
}

/**
 * Approve `spender` (typically the adjudicator) for `amount` of `token` and wait for it to be mined.
 * @returns the transaction hash
 * @example
 * ```ts
 * await approve(deviceWallet, usdt.address, adjudicator.address, 2n ** 256n - 1n);
 * ```
 */
export function approve(signer: Signer, token: AddressInput, spender: AddressInput, amount: bigint): Promise<Hex> {
  const t = toAddressInput(token, 'token');
  if (isEth(t)) throw new TrickleError('INVALID_ARGUMENT', 'ETH needs no approval');
  return send(signer, t, 'approve', [toAddressInput(spender, 'spender'), amount]);
}

/** Transfer `amount` of `token` (or ETH) from the signer to `to`; waits for it to be mined. */
export async function transfer(signer: Signer, token: AddressInput, to: AddressInput, amount: bigint): Promise<Hex> {
  const [t, recipient] = [toAddressInput(token, 'token'), toAddressInput(to, 'to')];
  if (!isEth(t)) return send(signer, t, 'transfer', [recipient, amount]);
  try {
    const tx = await signer.sendTransaction({ to: recipient, value: amount });
    return ((await tx.wait())?.hash ?? tx.hash) as Hex;
  } catch (e) {
    throw decodeChainError(e);
  }
}

/** Mint `amount` of a test token (contracts/src/test: anyone may mint) to `to`. */
export function mintTestToken(signer: Signer, token: AddressInput, to: AddressInput, amount: bigint): Promise<Hex> {
  return send(signer, toAddressInput(token, 'token'), 'mint', [toAddressInput(to, 'to'), amount]);
}
