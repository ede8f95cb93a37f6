/**
 * Deploy the compiled adjudicator and the test tokens (tests, demo, local chains). Production deployments use the
 * same bytecode (`./generated/artifacts`).
 */
import { Contract, ContractFactory, type Signer } from 'ethers';
import { TrickleError } from '@trickle/protocol/errors';
import type { Address } from '@trickle/protocol/types';
import { Adjudicator } from './adjudicator.js';
import { decodeChainError } from './errors.js';
import {
  AdjudicatorArtifact,
  BlockingTokenArtifact,
  FalseReturningTokenArtifact,
  FeeOnTransferTokenArtifact,
  GasBurningTokenArtifact,
  LyingBalanceTokenArtifact,
  RebasingTokenArtifact,
  ReentrantTokenArtifact,
  UsdtLikeTokenArtifact,
  type Artifact,
} from './generated/artifacts.js';

/** Options of deploy functions. */
export interface DeployOptions {
  readonly gasLimit?: bigint | undefined;
}

async function deployArtifact(
  signer: Signer,
  artifact: Artifact,
  args: readonly unknown[],
  opts: DeployOptions,
): Promise<Address> {
  try {
    const factory = new ContractFactory(artifact.abi as never, artifact.bytecode, signer);
    const overrides = opts.gasLimit === undefined ? {} : { gasLimit: opts.gasLimit };
    const contract = await factory.deploy(...args, overrides);
    await contract.waitForDeployment();
    return (await contract.getAddress()) as Address;
  } catch (e) {
    throw decodeChainError(e);
  }
}

/**
 * Deploy a new adjudicator.
 * @param signer - deployer (pays gas; has no privileges afterwards: the adjudicator has no owner)
 * @param opts - gas limit
 * @returns the adjudicator bound to `signer`
 * @throws TrickleError `CHAIN_REVERTED` / `INTERNAL` when the deployment fails
 * @example
 * ```ts
 * const adjudicator = await deployAdjudicator(chain.wallet(0));
 * ```
 */
export async function deployAdjudicator(signer: Signer, opts: DeployOptions = {}): Promise<Adjudicator> {
  return new Adjudicator(await deployArtifact(signer, AdjudicatorArtifact, [], opts), signer);
}

/**
 * Test tokens (contracts/src/test), all with a public `mint`:
 * - `usdt`: USDT-like, 6 decimals, `transfer`/`transferFrom`/`approve` return nothing;
 * - `feeOnTransfer`: 18 decimals, burns `feeBps` of every transfer;
 * - `blocking`: 18 decimals, reverts transfers to one `blocked` recipient (changeable with `setBlocked`);
 * - `reentrant`: 18 decimals, calls a configured target mid-transfer once armed (`arm(target, payload, bubble)`);
 * - `falseReturning`: 18 decimals, transfers from or to one account return `false` and move nothing while it is
 *   refused (`setRefused(account, refusing)`), as early tokens report failure (supported: a push is owed);
 * - `lyingBalance`: 18 decimals, `balanceOf` misreports one account (`setLie(account, offset, bonusPerTransferIn)`);
 * - `rebasing`: 18 decimals, balances are shares × an index that `rebase(index)` changes (1e18 = 1.0);
 * - `gasBurning`: 18 decimals, transfers to one `victim` (`setVictim`) burn all the gas they are given.
 * These last three are the token classes Trickle does not support (see contracts/README.md); they exist to test
 * that the adjudicator contains the damage.
 */
export type TestTokenKind =
  'usdt' | 'feeOnTransfer' | 'blocking' | 'reentrant' | 'lyingBalance' | 'rebasing' | 'gasBurning' | 'falseReturning';

/** Options of {@link deployToken}. */
export interface DeployTokenOptions extends DeployOptions {
  /** `feeOnTransfer`: fee in basis points (default 100 = 1%). */
  readonly feeBps?: bigint | undefined;
  /** `blocking`: the recipient whose transfers revert (default: nobody, the zero address). */
  readonly blocked?: Address | undefined;
}

/** A deployed test token. */
export interface TestToken {
  readonly kind: TestTokenKind;
  readonly address: Address;
  readonly decimals: number;
  /** The token contract with its full test ABI (mint, arm, setBlocked, ...), bound to the deployer. */
  readonly contract: Contract;
}

const TOKENS = {
  usdt: { artifact: UsdtLikeTokenArtifact, decimals: 6 },
  feeOnTransfer: { artifact: FeeOnTransferTokenArtifact, decimals: 18 },
  blocking: { artifact: BlockingTokenArtifact, decimals: 18 },
  reentrant: { artifact: ReentrantTokenArtifact, decimals: 18 },
  lyingBalance: { artifact: LyingBalanceTokenArtifact, decimals: 18 },
  rebasing: { artifact: RebasingTokenArtifact, decimals: 18 },
  gasBurning: { artifact: GasBurningTokenArtifact, decimals: 18 },
  falseReturning: { artifact: FalseReturningTokenArtifact, decimals: 18 },
} as const satisfies Record<TestTokenKind, { artifact: Artifact; decimals: number }>;

/**
 * Deploy a test token.
 * @param signer - deployer
 * @param kind - which token (see {@link TestTokenKind})
 * @param opts - `feeBps` for `feeOnTransfer`, `blocked` for `blocking`, gas limit
 * @returns the token's address, decimals and contract
 * @throws TrickleError `INVALID_ARGUMENT` for an unknown kind or a fee above 10,000 bps
 * @example
 * ```ts
 * const usdt = await deployToken(chain.wallet(0), 'usdt');
 * await mintTestToken(chain.wallet(0), usdt.address, device, 100_000_000n);
 * ```
 */
export async function deployToken(
  signer: Signer,
  kind: TestTokenKind,
  opts: DeployTokenOptions = {},
): Promise<TestToken> {
  const spec = TOKENS[kind];
  if (spec === undefined) throw new TrickleError('INVALID_ARGUMENT', `unknown test token kind: ${String(kind)}`);
  let args: unknown[] = [];
  if (kind === 'feeOnTransfer') {
    const feeBps = opts.feeBps ?? 100n;
    if (feeBps < 0n || feeBps > 10_000n)
      throw new TrickleError('INVALID_ARGUMENT', 'feeBps must be in [0, 10000]', { details: { feeBps } });
    args = [feeBps];
  } else if (kind === 'blocking') {
    args = [opts.blocked ?? '0x0000000000000000000000000000000000000000'];
  }
  const address = await deployArtifact(signer, spec.artifact, args, opts);
  return {
    kind,
    address,
    decimals: spec.decimals,
    contract: new Contract(address, spec.artifact.abi as never, signer),
  };
}
