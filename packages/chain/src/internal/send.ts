import type { BaseContract, ContractTransactionResponse, Overrides, TransactionReceipt } from 'ethers';
import type { Hex } from '@trickle/protocol/types';
import { decodeChainError, revertDataOf } from '../errors.js';
import { parseLogs } from '../events.js';
import type { TxOptions, TxResult } from '../types.js';

/** Gas limits tried, in order, when the node cannot estimate (the last is EIP-7825's transaction gas cap). */
const PROBE_LIMITS = [500_000n, 2_000_000n, 8_000_000n, 1n << 24n];

/**
 * The node's gas estimate; if the node fails to estimate without a revert (Hardhat's EDR, whose block gas limit is
 * above the per-transaction cap, probes limits it then refuses for calls that forward a fixed amount of gas, like
 * the adjudicator's payout pushes), the smallest of {@link PROBE_LIMITS} at which the call succeeds. A revert is
 * thrown as it comes.
 */
async function estimate(
  fn: ReturnType<BaseContract['getFunction']>,
  args: readonly unknown[],
  overrides: Overrides,
): Promise<bigint> {
  try {
    return await fn.estimateGas(...args, overrides);
  } catch (e) {
    if (revertDataOf(e) !== undefined) throw e;
    for (const gasLimit of PROBE_LIMITS) {
      try {
        await fn.staticCall(...args, { ...overrides, gasLimit });
        return gasLimit;
      } catch (probe) {
        const data: string | undefined = revertDataOf(probe);
        if (data !== undefined && data !== '0x') throw probe;
      }
    }
    throw e;
  }
}

/**
 * Send a contract transaction, wait for it to be mined, and return its receipt and adjudicator events. Reverts
 * (at gas estimation, at submission, or mined with status 0) come back as decoded TrickleErrors.
 */
export async function sendTx(
  contract: BaseContract,
  method: string,
  args: readonly unknown[],
  opts: TxOptions & { value?: bigint | undefined } = {},
): Promise<TxResult> {
  const overrides: Overrides & { value?: bigint } = {};
  if (opts.gasLimit !== undefined) overrides.gasLimit = opts.gasLimit;
  if (opts.nonce !== undefined) overrides.nonce = opts.nonce;
  if (opts.value !== undefined && opts.value !== 0n) overrides.value = opts.value;
  let tx: ContractTransactionResponse;
  try {
    const fn = contract.getFunction(method);
    if (overrides.gasLimit === undefined) overrides.gasLimit = await estimate(fn, args, overrides);
    tx = await fn.send(...args, overrides);
  } catch (e) {
    throw decodeChainError(e);
  }
  let receipt: TransactionReceipt | null;
  try {
    receipt = await tx.wait();
  } catch (e) {
    throw decodeChainError(revertDataOf(e) === undefined ? await replayRevert(tx, e) : e);
  }
  if (receipt === null) throw decodeChainError(new Error(`transaction ${tx.hash} was dropped`));
  return {
    hash: receipt.hash as Hex,
    blockNumber: receipt.blockNumber,
    gasUsed: receipt.gasUsed,
    events: parseLogs(receipt.logs, await contract.getAddress()),
    receipt,
  };
}

/**
 * A mined transaction that reverted carries no revert data in its receipt; replay it as a call on the state before
 * its block to recover the error (best effort: other transactions earlier in the same block are not replayed).
 */
async function replayRevert(tx: ContractTransactionResponse, original: unknown): Promise<unknown> {
  const receipt = (original as { receipt?: TransactionReceipt }).receipt;
  const provider = tx.provider;
  if (receipt === undefined) return original;
  try {
    await provider.call({
      from: tx.from,
      to: tx.to,
      data: tx.data,
      value: tx.value,
      gasLimit: tx.gasLimit,
      blockTag: Math.max(0, receipt.blockNumber - 1),
    });
  } catch (e) {
    return revertDataOf(e) === undefined ? original : e;
  }
  return original;
}

/** Run a read-only contract call, decoding reverts. */
export async function callView<T>(contract: BaseContract, method: string, args: readonly unknown[]): Promise<T> {
  try {
    return (await contract.getFunction(method).staticCall(...args)) as T;
  } catch (e) {
    throw decodeChainError(e);
  }
}
