/**
 * Helpers the channel commands share: read the on-chain record, read and check the store's record, send a
 * transaction with progress lines.
 */
import type { ReplaceOptions, TxResult, OnChainChannel } from '@trickle/chain/types';
import { channelContext, checkFullySigned } from '@trickle/protocol/channel';
import { commitsTo } from '@trickle/protocol/engine';
import { isTrickleError } from '@trickle/protocol/errors';
import { nobleVerifier } from '@trickle/protocol/signer';
import type { ChannelId, SignedState } from '@trickle/protocol/types';
import type { DeviceChannelRecord } from '@trickle/client/store';
import type { ChainHandle, CommandContext } from './context.js';
import { CliError, EXIT } from './exit.js';
import { fileStuckCopies, stateDir } from './stuck-copies.js';

/**
 * The channel's on-chain record.
 * @throws CliError exit 4 when the adjudicator never saw the id
 */
export async function readOnChain(chain: ChainHandle, channelId: ChannelId): Promise<OnChainChannel> {
  const c = await chain.adjudicator.getChannel(channelId);
  if (c.status === 'none') {
    throw new CliError(
      EXIT.NOT_FOUND,
      'WRONG_CHANNEL',
      `no channel ${channelId} on adjudicator ${chain.adjudicator.address}`,
      {
        hint: 'check the channel id, --adjudicator and --rpc',
      },
    );
  }
  return c;
}

/**
 * The store's record of a channel, checked: it belongs to this chain and adjudicator, and its latest state carries
 * both signatures (or is the unsigned zero state).
 * @param ctx - the command context (`--store` is required)
 * @param channelId - the channel
 * @param purpose - for the error message when `--store` is missing ("force-close a channel")
 * @param chain - when given, the record must be for this chain and adjudicator
 * @throws CliError exit 4 when the store has no record, exit 1 when it is for another adjudicator or does not verify
 */
export async function readRecord(
  ctx: CommandContext,
  channelId: ChannelId,
  purpose: string,
  chain?: ChainHandle,
): Promise<DeviceChannelRecord> {
  const store = ctx.store(purpose);
  let record: DeviceChannelRecord | undefined;
  try {
    record = await store.load(channelId);
  } catch (cause) {
    throw new CliError(
      EXIT.USAGE,
      'MALFORMED',
      `the store's record of ${channelId} cannot be read: ${(cause as Error).message}`,
      { cause },
    );
  }
  if (record === undefined) {
    throw new CliError(
      EXIT.NOT_FOUND,
      'WRONG_CHANNEL',
      `no state for channel ${channelId} in the store ${ctx.options.store}`,
      {
        hint: 'check --store, or restore a backup with `trickle import <file>`',
      },
    );
  }
  if (
    chain &&
    (record.params.chainId !== chain.chainId ||
      record.params.adjudicator.toLowerCase() !== chain.adjudicator.address.toLowerCase())
  ) {
    throw new CliError(
      EXIT.USAGE,
      'WRONG_CHANNEL',
      `the stored channel is on chain ${record.params.chainId}, adjudicator ${record.params.adjudicator}`,
      {
        hint: `this command is talking to chain ${chain.chainId}, adjudicator ${chain.adjudicator.address}: check --rpc and --adjudicator`,
      },
    );
  }
  verifyLatest(record);
  return record;
}

/**
 * Check that a record's latest state is fully signed by its channel's device and hub, and that its lock list is the
 * one the state commits to (force close, challenge and settle pass it to the adjudicator).
 * @throws CliError exit 1 (BAD_SIGNATURE / WRONG_CHANNEL / MALFORMED) otherwise
 */
export function verifyLatest(record: DeviceChannelRecord): void {
  try {
    checkFullySigned(channelContext(record.params, record.funding), record.latest, nobleVerifier);
  } catch (e) {
    if (!isTrickleError(e)) throw e;
    throw new CliError(EXIT.USAGE, e.code, `the state of ${record.channelId} does not verify: ${e.shortMessage}`, {
      cause: e,
    });
  }
  if (record.latest.state.channelId !== record.channelId) {
    throw new CliError(
      EXIT.USAGE,
      'WRONG_CHANNEL',
      `the record names channel ${record.channelId} but its state is for ${record.latest.state.channelId}`,
    );
  }
  let commits: boolean;
  try {
    commits = commitsTo(record.latest.state, record.locks ?? []);
  } catch {
    commits = false; // a lock that is no lock (a bad amount, hash, expiry or payer)
  }
  if (!commits)
    throw new CliError(
      EXIT.USAGE,
      'MALFORMED',
      `the lock list of ${record.channelId}'s record (${record.locks?.length ?? 0} locks) is not the one its state (version ${record.latest.state.version}) commits to`,
      { hint: 'restore a good backup with `trickle import`' },
    );
}

/** A state the device signed and the hub refused, still not void (see `DeviceChannelRecord.refused`). */
export interface UnvoidedRefusal {
  /** Its version: above the state a force close registers, so the hub may answer that with it. */
  readonly version: bigint;
  /** What it moves to the hub over the record's latest state (its payments less the hub's credits), base units. */
  readonly exposure: bigint;
}

/**
 * The refused state a device record marks as not void, if any: the hub holds the device's signature on it, so the
 * device's force close with its latest state may be challenged with it, paying the hub `exposure` more.
 */
export function unvoidedRefusal(record: DeviceChannelRecord): UnvoidedRefusal | undefined {
  const r = record.refused;
  const l = record.latest.state;
  // One this device cannot have signed (above its signing ceiling, or of another channel: a corrupted or edited
  // record) is no state the hub holds: the device client ignores it too.
  if (r === undefined || r.version < l.version) return undefined;
  if (r.version > record.signedVersion || r.channelId !== record.channelId) return undefined;
  return { version: r.version, exposure: r.paidByDevice - l.paidByDevice - (r.paidByHub - l.paidByHub) };
}

/** Whether a signed state carries both signatures. */
export function fullySigned(signed: SignedState): boolean {
  return signed.deviceSig !== undefined && signed.hubSig !== undefined;
}

/** How often a command polls for its transaction's receipt (as the provider polls: see `connectRpc`). */
const RECEIPT_POLL_MS = 250;

/**
 * Replace-by-fee for a command's transaction (`@trickle/chain`'s defaults: a copy not mined within 2 blocks or 15 s is
 * sent again with the same nonce and both fees raised 20%, at least to what the node asks, up to 10 times the first
 * fee; a challenge stops at its deadline), each re-send a progress line. Sent once, a transaction priced below a fee
 * spike would wait for ever, and a challenge past its deadline. A copy an earlier command left unmined (killed
 * mid-send, or given up) is remembered in the CLI's state directory and replaced by the account's next send, which
 * would otherwise queue behind it.
 * @param ctx - the command context (progress lines)
 * @returns the options to pass as `replace`
 */
export function replaceByFee(ctx: CommandContext): ReplaceOptions {
  return {
    pollMs: RECEIPT_POLL_MS,
    // A copy left unmined by an earlier command (killed mid-send, or given up) is replaced, not queued behind.
    stuckCopies: fileStuckCopies(
      stateDir(),
      async () => (await ctx.chain()).chainId,
      (line) => ctx.progress(line),
    ),
    onSend: (c) => {
      if (c.attempt > 0)
        ctx.progress(
          `not mined yet: sent again with the same nonce (${c.nonce}) and higher fees (maxFeePerGas ${c.maxFeePerGas}, tx ${c.hash})`,
        );
    },
  };
}

/**
 * Send one transaction with progress lines on stderr, then wait for `--confirmations`.
 * @param ctx - the command context
 * @param what - e.g. "forceClose of 0x… at version 3"
 * @param send - performs the transaction (a `@trickle/chain` action) and resolves when it is mined
 * @returns the action's result
 */
export async function sendWithProgress<T extends TxResult>(
  ctx: CommandContext,
  what: string,
  send: () => Promise<T>,
): Promise<T> {
  ctx.progress(`sending ${what}…`);
  const result = await send();
  ctx.progress(`mined in block ${result.blockNumber} (tx ${result.hash}, gas ${result.gasUsed})`);
  await ctx.confirm(result.receipt);
  return result;
}

/**
 * Save `record` with `closing` set, before the close's transaction is sent (as the device client does): the device SDK
 * reads it when it starts and takes no more payments on the channel, and its guard sees a force close it finds as its
 * own. A close that could not be recorded is not sent.
 * @throws CliError exit 1 (`STORE_FAILURE`) when the store cannot write it: nothing sent
 */
export async function markClosing(
  ctx: CommandContext,
  record: DeviceChannelRecord,
  closing: 'cooperative' | 'force',
): Promise<void> {
  if (record.closing === closing) return;
  try {
    await ctx.store('mark the channel as closing').save({ ...record, closing });
  } catch (e) {
    throw new CliError(
      EXIT.USAGE,
      'STORE_FAILURE',
      `cannot mark ${record.channelId} as closing in the store: ${(e as Error).message}; nothing sent`,
      { hint: 'check the store directory (space, permissions, file system), then run this again', cause: e },
    );
  }
}
