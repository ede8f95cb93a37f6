/**
 * `trickle deploy --chain-id <n> [--test-token]`: deploy the adjudicator (and a USDT-like test token) to the chain of
 * `--rpc` from `--key-file`, after checking that the endpoint is the chain the operator meant.
 */
import { Command, Option } from 'commander';
import { deployAdjudicator, deployToken } from '@trickle/chain/deploy';
import { mintTestToken } from '@trickle/chain/erc20';
import type { Address } from '@trickle/protocol/types';
import { addressArg, type CliIo, type CommandContext } from '../context.js';
import { CliError, EXIT, usageError } from '../exit.js';
import { withContext, withExitCodes } from '../run.js';

interface DeployFlags {
  readonly chainId?: string | undefined;
  readonly testToken?: boolean | undefined;
  readonly mint?: readonly string[] | undefined;
}

/** Parse `--mint <address>=<amount>` (amount in base units). @throws CliError exit 1 */
function mintArg(value: string): { to: Address; amount: bigint } {
  const m = /^([^=]+)=(\d+)$/.exec(value);
  if (!m) throw usageError(`--mint takes <address>=<amount in base units>, got '${value}'`);
  return { to: addressArg(m[1]!, '--mint address'), amount: BigInt(m[2]!) };
}

/** The `deploy` command. */
export function deployCommand(io: CliIo): Command {
  return withExitCodes(
    new Command('deploy')
      .description(
        'deploy the adjudicator (and with --test-token a USDT-like test token anyone may mint) to the chain of --rpc, paid by --key-file',
      )
      .addOption(
        new Option(
          '--chain-id <n>',
          'the chain id the endpoint must have: a deployment to any other chain is refused',
        ).env('TRICKLE_CHAIN_ID'),
      )
      .option(
        '--test-token',
        'also deploy a USDT-like test token (6 decimals, public mint): for development and test chains only',
      )
      .option(
        '--mint <address=amount>',
        'with --test-token: mint this many base units of it to the address (repeatable)',
        (v: string, all: string[] = []) => [...all, v],
      )
      .action(async (flags: DeployFlags, command: Command) => {
        await withContext(command, io, (ctx) => deploy(ctx, flags));
      }),
  );
}

async function deploy(ctx: CommandContext, flags: DeployFlags): Promise<void> {
  if (flags.chainId === undefined || flags.chainId === '') {
    throw usageError('--chain-id <n> is required: the chain id you expect at --rpc (e.g. 31337 for a local chain)');
  }
  if (!/^[1-9]\d*$/.test(flags.chainId))
    throw usageError(`--chain-id must be a positive integer, got '${flags.chainId}'`);
  const expected = BigInt(flags.chainId);
  const mints = (flags.mint ?? []).map(mintArg);
  if (mints.length > 0 && flags.testToken !== true)
    throw usageError('--mint needs --test-token (it mints the test token deployed with it)');
  const { chainId, url } = await ctx.rpc();
  if (chainId !== expected) {
    throw new CliError(
      EXIT.USAGE,
      'INVALID_ARGUMENT',
      `the chain at ${url} has chain id ${chainId}, not ${expected}: nothing deployed`,
      {
        hint: 'check --rpc, or pass the chain id you mean to deploy to',
        details: { expected, actual: chainId, url },
      },
    );
  }
  const wallet = await ctx.wallet();
  ctx.progress(`deploying the adjudicator to chain ${chainId} from ${wallet.address}…`);
  const adjudicator = await deployAdjudicator(wallet);
  ctx.progress(`adjudicator at ${adjudicator.address}`);
  let token: { address: string; decimals: number } | undefined;
  if (flags.testToken === true) {
    ctx.progress('deploying the USDT-like test token…');
    const t = await deployToken(wallet, 'usdt');
    token = { address: t.address, decimals: t.decimals };
    ctx.progress(`test token at ${t.address}`);
    for (const { to, amount } of mints) {
      await mintTestToken(wallet, t.address, to, amount);
      ctx.progress(`minted ${amount} to ${to}`);
    }
  }
  ctx.print(
    {
      chainId,
      deployer: wallet.address,
      adjudicator: adjudicator.address,
      ...(token ? { testToken: { ...token, minted: mints } } : {}),
    },
    [
      `adjudicator ${adjudicator.address}`,
      ...(token ? [`test token  ${token.address} (USDT-like, ${token.decimals} decimals, public mint)`] : []),
      `chain id    ${chainId}, deployed by ${wallet.address}`,
    ].join('\n'),
  );
}
