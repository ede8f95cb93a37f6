/**
 * Time travel and snapshots over JSON-RPC (`evm_increaseTime`, `evm_setNextBlockTimestamp`, `evm_mine`,
 * `hardhat_mine`, `evm_snapshot`, `evm_revert`): the same helpers for the in-process chain and the server process.
 */
import { TrickleError } from '@trickle/protocol/errors';

/** Anything that can send a raw JSON-RPC request (ethers' `JsonRpcApiProvider.send` fits). */
export interface RpcSender {
  send(method: string, params: unknown[]): Promise<unknown>;
}

/** Time-travel and snapshot helpers for a development chain (Hardhat/EDR semantics). */
export interface TimeTravel {
  /**
   * Move the clock forward by `seconds` and mine a block, so the new time is visible to calls at once.
   * @returns the new latest block timestamp
   */
  increaseTime(seconds: number | bigint): Promise<bigint>;
  /** Fix the timestamp of the next block (mined by the next transaction, or by {@link TimeTravel.mine}). */
  setNextBlockTimestamp(timestamp: number | bigint): Promise<void>;
  /** Mine `blocks` empty blocks (default 1). */
  mine(blocks?: number): Promise<void>;
  /** Timestamp of the latest block, in seconds. */
  latestTimestamp(): Promise<bigint>;
  /** Snapshot the chain (state, blocks, clock); returns an id for {@link TimeTravel.revert}. */
  snapshot(): Promise<string>;
  /** Go back to a snapshot. A snapshot can be reverted to once: take a new one afterwards. */
  revert(snapshotId: string): Promise<void>;
}

const quantity = (n: number | bigint): string => `0x${BigInt(n).toString(16)}`;

/**
 * Bind the time-travel helpers to a JSON-RPC sender.
 * @param rpc - e.g. an ethers `JsonRpcProvider` pointed at a local node
 * @returns the helpers
 * @example
 * ```ts
 * const time = timeTravel(new JsonRpcProvider(url, undefined, { batchMaxCount: 1, staticNetwork: true }));
 * await time.increaseTime(3600);
 * ```
 */
export function timeTravel(rpc: RpcSender): TimeTravel {
  const latestTimestamp = async (): Promise<bigint> => {
    const block = (await rpc.send('eth_getBlockByNumber', ['latest', false])) as { timestamp: string };
    return BigInt(block.timestamp);
  };
  return {
    async increaseTime(seconds) {
      if (BigInt(seconds) < 0n)
        throw new TrickleError('INVALID_ARGUMENT', 'time only moves forward', { details: { seconds } });
      await rpc.send('evm_increaseTime', [quantity(seconds)]);
      await rpc.send('evm_mine', []);
      return latestTimestamp();
    },
    async setNextBlockTimestamp(timestamp) {
      await rpc.send('evm_setNextBlockTimestamp', [quantity(timestamp)]);
    },
    async mine(blocks = 1) {
      if (!Number.isInteger(blocks) || blocks < 1)
        throw new TrickleError('INVALID_ARGUMENT', 'blocks must be a positive integer', { details: { blocks } });
      if (blocks === 1) await rpc.send('evm_mine', []);
      else await rpc.send('hardhat_mine', [quantity(blocks)]);
    },
    latestTimestamp,
    async snapshot() {
      return (await rpc.send('evm_snapshot', [])) as string;
    },
    async revert(snapshotId) {
      const ok = await rpc.send('evm_revert', [snapshotId]);
      if (ok !== true)
        throw new TrickleError('INVALID_ARGUMENT', 'unknown or already used snapshot', { details: { snapshotId } });
    },
  };
}
