/** `trickle show <channelId>`: the channel on-chain, and the store's latest state with what to do about it. */
import { Command } from 'commander';
import type { OnChainChannel } from '@trickle/chain/types';
import { payouts } from '@trickle/protocol/channel';
import { lockOutcome, type Lock, type LockOutcome } from '@trickle/protocol/locks';
import type { ChannelId } from '@trickle/protocol/types';
import type { DeviceChannelRecord } from '@trickle/client/store';
import { fullySigned, verifyLatest } from '../channel.js';
import { channelIdArg, type CliIo, type CommandContext } from '../context.js';
import { CliError, EXIT } from '../exit.js';
import { isoTime, relative, table } from '../format.js';
import { chainTime } from '../rpc.js';
import { withContext, withExitCodes } from '../run.js';

/** What `show --json` prints (besides `ok: true`). */
export interface ShowResult {
  readonly channelId: ChannelId;
  readonly chainId: bigint;
  readonly adjudicator: string;
  /** The chain's clock (latest block timestamp), seconds. */
  readonly now: bigint;
  readonly onChain: (OnChainChannel & { readonly deadlineIso?: string; readonly secondsLeft?: bigint }) | null;
  readonly store: {
    readonly version: bigint;
    readonly paidByDevice: bigint;
    readonly paidByHub: bigint;
    readonly round: bigint;
    readonly isFinal: boolean;
    readonly fullySigned: boolean;
    readonly verified: boolean;
    readonly closing: string | null;
    /** Payouts if the channel settled on this state, against the on-chain deposits (or the store's funding). */
    readonly payoutDevice: bigint;
    readonly payoutHub: bigint;
    /**
     * The state's pending locks (conditional payments), with when each preimage was revealed on-chain (0 if never)
     * and where the adjudicator's rule sends it now: `payee`, `payer`, or `pending` (settle waits for it).
     */
    readonly locks: readonly (Lock & { readonly revealedAt: bigint; readonly outcome: LockOutcome })[];
  } | null;
  /** The store holds a state newer than the registered one while it can still be challenged. */
  readonly shouldChallenge: boolean;
  /** What to do next, in words. */
  readonly advice: string[];
}

/** The `show` command. */
export function showCommand(io: CliIo): Command {
  return withExitCodes(
    new Command('show')
      .description(
        "show a channel: on-chain status, deposits, registered version, deadline, payouts, and the store's latest state",
      )
      .argument('<channelId>', 'the channel id (0x + 64 hex digits)')
      .action(async (id: string, _opts: unknown, command: Command) => {
        await withContext(command, io, (ctx) => show(ctx, channelIdArg(id)));
      }),
  );
}

async function show(ctx: CommandContext, channelId: ChannelId): Promise<void> {
  const chain = await ctx.chain();
  const [c, now] = await Promise.all([chain.adjudicator.getChannel(channelId), chainTime(chain.provider)]);
  let record: DeviceChannelRecord | undefined;
  let verified = false;
  let unreadable: string | undefined;
  if (ctx.options.store) {
    record = await ctx
      .store('read the channel')
      .load(channelId)
      .catch((e: unknown) => {
        unreadable = e instanceof Error ? e.message : String(e);
        return undefined;
      });
    if (record) {
      try {
        verifyLatest(record);
        verified = true;
      } catch {
        verified = false;
      }
    }
  }
  if (c.status === 'none' && record === undefined) {
    throw new CliError(
      EXIT.NOT_FOUND,
      'WRONG_CHANNEL',
      `no channel ${channelId} on adjudicator ${chain.adjudicator.address}${ctx.options.store ? ' and none in the store' : ''}`,
      {
        hint: 'check the channel id, --adjudicator, --rpc and --store',
      },
    );
  }

  const closing = c.status === 'closing';
  const open = closing ? now < c.deadline : false;
  const advice: string[] = [];
  const latest = record?.latest.state;
  const shouldChallenge = closing && open && verified && latest !== undefined && latest.version > c.version;
  if (c.status === 'none') advice.push('the channel is not on this adjudicator (yet): check --adjudicator and --rpc');
  if (shouldChallenge) {
    advice.push(
      `you should challenge: your latest state (version ${latest!.version}) is newer than the registered one (version ${c.version}) — run \`trickle challenge ${channelId}\` before ${isoTime(c.deadline)}`,
    );
  } else if (closing && open) {
    advice.push(
      `force-closed; the challenge period ends ${isoTime(c.deadline)} (${relative(c.deadline, now)}), then run \`trickle settle ${channelId}\``,
    );
  } else if (closing) {
    advice.push(`the challenge period ended at ${isoTime(c.deadline)}: run \`trickle settle ${channelId}\``);
  } else if (c.status === 'open' && latest?.isFinal && record && fullySigned(record.latest)) {
    advice.push(`the store holds a final state both signed: run \`trickle close ${channelId}\``);
  } else if (c.status === 'closed') {
    advice.push('closed and paid out; if a payout was deferred, run `trickle withdraw --token <address>`');
  }
  if (unreadable)
    advice.push(
      `the store's record of this channel cannot be read (${unreadable}): restore a backup with \`trickle import\``,
    );
  if (record && !verified)
    advice.push("the store's state does not verify (signatures or channel id): restore a backup with `trickle import`");

  const funding =
    c.status === 'open' || c.status === 'closing' ? { device: c.depositDevice, hub: c.depositHub } : record?.funding;
  // Only a verified record's locks: they are then the ones its state commits to, each a well-formed lock.
  const locks = await Promise.all(
    (verified ? (record?.locks ?? []) : []).map(async (l) => {
      const revealedAt = await chain.adjudicator.revealedAt(l.hash);
      return { ...l, revealedAt, outcome: lockOutcome(l, revealedAt, now) };
    }),
  );
  for (const l of locks) {
    const mine = l.payer === 'device' ? 'you pay' : 'you are paid';
    if (l.outcome === 'pending' && l.payer === 'hub')
      advice.push(
        `a lock of ${l.amount} (${mine}) expires ${isoTime(l.expiry)}: if the hub does not take your claim, reveal its preimage before then with \`trickle reveal <preimage>\``,
      );
  }
  const storeView =
    record && latest
      ? {
          version: latest.version,
          paidByDevice: latest.paidByDevice,
          paidByHub: latest.paidByHub,
          round: latest.round,
          isFinal: latest.isFinal,
          fullySigned: fullySigned(record.latest),
          verified,
          closing: record.closing ?? null,
          payoutDevice: payouts(latest, funding ?? record.funding).device,
          payoutHub: payouts(latest, funding ?? record.funding).hub,
          locks,
        }
      : null;
  const result: ShowResult = {
    channelId,
    chainId: chain.chainId,
    adjudicator: chain.adjudicator.address,
    now,
    onChain:
      c.status === 'none'
        ? null
        : closing
          ? { ...c, deadlineIso: isoTime(c.deadline), secondsLeft: open ? c.deadline - now : 0n }
          : c,
    store: storeView,
    shouldChallenge,
    advice,
  };

  const lines = [
    `Channel ${channelId}`,
    `  adjudicator ${chain.adjudicator.address} on chain ${chain.chainId}; chain time ${isoTime(now)}`,
  ];
  if (c.status === 'none') lines.push('On-chain: not found');
  else {
    const rows: [string, string][] = [
      ['status', c.status],
      ['device', `${c.device}  deposit ${c.depositDevice}`],
      ['hub', `${c.hub}  deposit ${c.depositHub}`],
      ['token', c.token],
      ['challenge period', `${c.challengeDuration} s`],
    ];
    if (closing) {
      rows.push(['registered', `version ${c.version}`]);
      rows.push([
        'deadline',
        `${isoTime(c.deadline)} (${relative(c.deadline, now)}${open ? `, ${c.deadline - now} s left` : ''})`,
      ]);
      rows.push(['payouts', `device ${c.payoutDevice}, hub ${c.payoutHub}`]);
    }
    lines.push('On-chain:', table(rows));
  }
  if (storeView) {
    lines.push(`Store (${ctx.options.store}):`);
    lines.push(
      table([
        [
          'latest',
          `version ${storeView.version}, paidByDevice ${storeView.paidByDevice}, paidByHub ${storeView.paidByHub}, round ${storeView.round}${storeView.isFinal ? ', final' : ''}`,
        ],
        [
          'signatures',
          storeView.verified
            ? 'device and hub, verified'
            : storeView.fullySigned
              ? 'present but INVALID'
              : storeView.version === 0n
                ? 'none needed (zero state)'
                : 'missing',
        ],
        ['would pay', `device ${storeView.payoutDevice}, hub ${storeView.payoutHub}`],
        ...(storeView.closing ? ([['closing', storeView.closing]] as [string, string][]) : []),
        ...storeView.locks.map((l, i): [string, string] => [
          `lock ${i + 1}`,
          `${l.amount} paid by the ${l.payer}, hash ${l.hash}, expires ${isoTime(l.expiry)}; ${l.revealedAt > 0n ? `revealed ${isoTime(l.revealedAt)}` : 'not revealed'} → ${l.outcome}`,
        ]),
        ...(closing
          ? ([
              [
                'vs registered',
                latest!.version > c.version
                  ? `NEWER (${latest!.version} > ${c.version})`
                  : `not newer (${latest!.version} ≤ ${c.version})`,
              ],
            ] as [string, string][])
          : []),
      ]),
    );
  } else if (ctx.options.store) lines.push(`Store (${ctx.options.store}): no state for this channel`);
  for (const a of advice) lines.push(`→ ${a}`);
  ctx.print(result as unknown as Record<string, unknown>, lines.join('\n'));
}
