/**
 * A development chain in this process: Hardhat 2.29's EDR network (the Rust EVM Hardhat runs), created directly
 * through its provider factory, so no Hardhat config file, project or compile step is involved. Automine on.
 * For a chain other processes can reach, see `startChainServer` (`./chainServer`) or the `trickle-chain` bin.
 */
import { JsonRpcApiProvider, Wallet } from 'ethers';
import { SerialWallet } from '@trickle/chain/serialWallet';
import { TrickleError } from '@trickle/protocol/errors';
import { keccakUtf8, toAddress, toHex } from '@trickle/protocol/hex';
import { toChainId, type ChainIdInput } from '@trickle/protocol/input';
import { nobleSigner } from '@trickle/protocol/signer';
import type { Address, Hex } from '@trickle/protocol/types';
import { Eip1193JsonRpcProvider, type Eip1193 } from './internal/eip1193Provider.js';
import { timeTravel, type TimeTravel } from './timeTravel.js';

/** Options of {@link startLocalChain}; every default is written out here. */
export interface LocalChainOptions {
  /** Chain id, a number or a bigint (default 31337; the EVM takes a safe integer). */
  readonly chainId?: ChainIdInput | undefined;
  /** Number of funded accounts (default 10, at most 1000). */
  readonly accounts?: number | undefined;
  /** Balance of each account in wei (default 10,000 ETH). */
  readonly balance?: bigint | undefined;
  /** EVM hardfork (default `osaka`, Hardhat 2.29's default; contracts are compiled for `cancun`, a subset). */
  readonly hardfork?: 'cancun' | 'prague' | 'osaka' | undefined;
  /** Block gas limit (default 60,000,000). */
  readonly blockGasLimit?: bigint | undefined;
  /** Timestamp of the genesis block (default: now). */
  readonly initialDate?: Date | undefined;
  /**
   * Hardhat's convenience (default true): a transaction that reverts is still mined, but its submission returns the
   * revert as an error. `false` behaves like a production node: it returns the hash and the receipt has status 0.
   */
  readonly throwOnTransactionFailures?: boolean | undefined;
}

type ResolvedOptions = { [K in keyof LocalChainOptions]-?: Exclude<LocalChainOptions[K], undefined> };

/** Defaults of {@link LocalChainOptions} (the genesis date defaults to now). */
export const LOCAL_CHAIN_DEFAULTS: Readonly<Omit<ResolvedOptions, 'initialDate'>> = {
  chainId: 31337,
  accounts: 10,
  balance: 10_000n * 10n ** 18n,
  hardfork: 'osaka',
  blockGasLimit: 60_000_000n,
  throwOnTransactionFailures: true,
};

/** A running in-process chain. */
export interface LocalChain extends TimeTravel {
  /** ethers provider (in process: no HTTP). */
  readonly provider: JsonRpcApiProvider;
  /** The raw EIP-1193 provider (for a JSON-RPC server, or other libraries). */
  readonly eip1193: Eip1193;
  readonly chainId: bigint;
  /** Private keys of the funded accounts (deterministic: the same on every start). TEST KEYS, never for value. */
  readonly accounts: readonly Hex[];
  /** Their addresses, in the same order. */
  readonly addresses: readonly Address[];
  /**
   * An ethers Wallet for account `index`, connected to {@link LocalChain.provider} (the same instance on every call).
   * Its transactions are serialized, so concurrent callers sharing the account never collide on a nonce.
   */
  wallet(index: number): Wallet;
  /** Stop using the chain (destroys the ethers provider; the EVM is freed with it). */
  close(): Promise<void>;
}

/**
 * The deterministic test keys of the local chain: keccak256("trickle/local-chain/account/<i>"). Fast to derive
 * (no mnemonic KDF), identical in every process, public by construction: never use them on a real network.
 * @param count - how many
 * @returns private keys and addresses
 */
export function localAccounts(count: number): { privateKeys: Hex[]; addresses: Address[] } {
  const privateKeys: Hex[] = [];
  const addresses: Address[] = [];
  for (let i = 0; i < count; i++) {
    const key = toHex(keccakUtf8(`trickle/local-chain/account/${i}`));
    privateKeys.push(key);
    addresses.push(nobleSigner(key).address);
  }
  return { privateKeys, addresses };
}

interface HardhatProviderModule {
  createHardhatNetworkProvider(config: Record<string, unknown>, logger: { enabled: boolean }): Promise<Eip1193>;
}

/**
 * Start an EDR chain in this process (about 0.3 s), with funded deterministic accounts and automine.
 * @param opts - see {@link LocalChainOptions}
 * @returns the chain: provider, keys, wallets, time travel, snapshots
 * @throws TrickleError `INVALID_ARGUMENT` for out-of-range options
 * @example
 * ```ts
 * const chain = await startLocalChain();
 * const adjudicator = await deployAdjudicator(chain.wallet(0));
 * await chain.increaseTime(3600);
 * await chain.close();
 * ```
 */
export async function startLocalChain(opts: LocalChainOptions = {}): Promise<LocalChain> {
  const o: Omit<ResolvedOptions, 'initialDate'> & { initialDate?: Date } = {
    ...LOCAL_CHAIN_DEFAULTS,
    ...stripUndefined(opts),
  };
  const chainId = toChainId(o.chainId);
  if (chainId > BigInt(Number.MAX_SAFE_INTEGER))
    throw new TrickleError('INVALID_ARGUMENT', 'chainId must be a safe integer for the EVM', { details: { chainId } });
  if (!Number.isInteger(o.accounts) || o.accounts < 1 || o.accounts > 1000) {
    throw new TrickleError('INVALID_ARGUMENT', 'accounts must be an integer in [1, 1000]', {
      details: { accounts: o.accounts },
    });
  }
  if (o.balance < 0n) throw new TrickleError('INVALID_ARGUMENT', 'balance must not be negative');
  const { privateKeys, addresses } = localAccounts(o.accounts);

  // Hardhat 2 has no public API for a bare network provider; this is the factory its own runtime and `hardhat node`
  // use (pinned by the ~2.29 dependency range). Loaded lazily: importing this module stays cheap.
  const mod =
    (await import('hardhat/internal/hardhat-network/provider/provider.js')) as unknown as HardhatProviderModule & {
      default?: HardhatProviderModule;
    };
  const create = mod.createHardhatNetworkProvider ?? mod.default?.createHardhatNetworkProvider;
  const eip1193 = await create(
    {
      hardfork: o.hardfork,
      chainId: Number(chainId),
      networkId: Number(chainId),
      blockGasLimit: Number(o.blockGasLimit),
      minGasPrice: 0n,
      automine: true,
      intervalMining: 0,
      mempoolOrder: 'priority',
      chains: new Map(),
      genesisAccounts: privateKeys.map((privateKey) => ({ privateKey, balance: o.balance })),
      allowUnlimitedContractSize: false,
      throwOnTransactionFailures: o.throwOnTransactionFailures,
      throwOnCallFailures: true,
      allowBlocksWithSameTimestamp: false,
      initialDate: o.initialDate,
      enableTransientStorage: false,
      enableRip7212: false,
    },
    { enabled: false },
  );
  const provider = new Eip1193JsonRpcProvider(eip1193, chainId);
  const wallets = new Map<number, Wallet>();
  return {
    ...timeTravel(provider),
    provider,
    eip1193,
    chainId,
    accounts: privateKeys,
    addresses: addresses.map((a) => toAddress(a)),
    wallet(index) {
      const key = privateKeys[index];
      if (key === undefined)
        throw new TrickleError('INVALID_ARGUMENT', `no account ${index}`, {
          details: { index, accounts: privateKeys.length },
        });
      let w = wallets.get(index);
      if (w === undefined) {
        w = new SerialWallet(key, provider);
        wallets.set(index, w);
      }
      return w;
    },
    async close() {
      provider.destroy();
    },
  };
}

function stripUndefined<T extends object>(o: T): { [K in keyof T]-?: Exclude<T[K], undefined> } {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as never;
}
