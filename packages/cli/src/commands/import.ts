/**
 * `trickle import <file>`: restore a channel record from a backup into the store. Both signatures are verified, and
 * a backup older than what the store holds is refused (restoring it could make the device force-close with a stale
 * state, which the counterparty would challenge).
 */
import { readFile } from 'node:fs/promises';
import { Command } from 'commander';
import { sameState } from '@trickle/protocol/channel';
import { channelIdOf } from '@trickle/protocol/eip712';
import { isTrickleError } from '@trickle/protocol/errors';
import { decodeChannelRecord, PAID_PREIMAGES_KEPT, type DeviceChannelRecord } from '@trickle/client/store';
import { stringifyJson } from '@trickle/protocol/json';
import type { State } from '@trickle/protocol/types';
import { unvoidedRefusal, verifyLatest } from '../channel.js';
import type { CliIo, CommandContext } from '../context.js';
import { CliError, EXIT } from '../exit.js';
import { withContext, withExitCodes } from '../run.js';

/** The `import` command. */
export function importCommand(io: CliIo): Command {
  return withExitCodes(
    new Command('import')
      .description(
        'restore a channel record written by `trickle export` into the store (verifies both signatures; never goes back to an older version)',
      )
      .argument('<file>', 'the backup file (JSON)')
      .action(async (file: string, _opts: unknown, command: Command) => {
        await withContext(command, io, (ctx) => importRecord(ctx, file));
      }),
  );
}

const max = (a: bigint, b: bigint): bigint => (a > b ? a : b);

/**
 * The give-backs the device signed that the imported state does not reach, from the backup and the store both: the
 * hub may still hold each (see `DeviceChannelRecord.givenBack`), so the device must not claim their locks after the
 * import either. Absent when none.
 */
function givenBackOf(
  version: bigint,
  imported: DeviceChannelRecord,
  existing: DeviceChannelRecord | undefined,
): Pick<DeviceChannelRecord, 'givenBack'> {
  const all = [...(imported.givenBack ?? []), ...(existing?.givenBack ?? [])].filter((g) => g.version > version);
  return { givenBack: orUndefined(distinct(all, (g) => `${g.hash}:${g.version}`)) };
}

/**
 * The preimages the device showed (or was about to show) for locks still pending in the imported state, from the backup
 * and the store both: while one is known the device claims its lock again and refuses the lock's return after the
 * import (the hub may have it already), and a watchtower reading the record reveals it on-chain. Dropping the store's
 * would let a restarted device take its lock back as a give-back the hub is paid for. The ones the hub showed to claim
 * locks this device paid (`paidPreimages`: the keys a buyer paid for) are kept from both as well, the newest 32.
 */
function preimagesOf(
  imported: DeviceChannelRecord,
  existing: DeviceChannelRecord | undefined,
): Pick<DeviceChannelRecord, 'preimages' | 'paidPreimages'> {
  const pending = new Set((imported.locks ?? []).map((l) => l.hash));
  const shown = [...(imported.preimages ?? []), ...(existing?.preimages ?? [])].filter((p) => pending.has(p.hash));
  const paid = distinct([...(existing?.paidPreimages ?? []), ...(imported.paidPreimages ?? [])], (p) => p.hash);
  return {
    preimages: orUndefined(distinct(shown, (p) => p.hash)),
    paidPreimages: orUndefined(paid.slice(-PAID_PREIMAGES_KEPT)),
  };
}

/**
 * The refused state not yet void (see `DeviceChannelRecord.refused`), from the backup and the store both: the hub may
 * hold either, and a state both signed above it voids it. Of two, the one paying the hub the most, as the device keeps;
 * one the device ignores ({@link unvoidedRefusal}: below the merged latest state, above its signing ceiling, another
 * channel's) is dropped.
 */
function refusedOf(
  record: DeviceChannelRecord,
  imported: DeviceChannelRecord,
  existing: DeviceChannelRecord | undefined,
): Pick<DeviceChannelRecord, 'refused'> {
  let refused: State | undefined;
  let most = 0n;
  for (const r of [imported.refused, existing?.refused]) {
    const open = r && unvoidedRefusal({ ...record, refused: r });
    if (open && (refused === undefined || open.exposure > most)) [refused, most] = [r, open.exposure];
  }
  return { refused };
}

/** Equivocation evidence from the backup and the store both: an auditor's proof is never dropped by a restore. */
function evidenceOf(
  imported: DeviceChannelRecord,
  existing: DeviceChannelRecord | undefined,
): Pick<DeviceChannelRecord, 'evidence'> {
  const all = [...(existing?.evidence ?? []), ...(imported.evidence ?? [])];
  return { evidence: orUndefined(distinct(all, (e) => stringifyJson(e))) };
}

/** The first of each key, in order. */
function distinct<T>(items: readonly T[], key: (t: T) => string): T[] {
  const seen = new Set<string>();
  return items.filter((t) => {
    const k = key(t);
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

const orUndefined = <T>(items: readonly T[]): readonly T[] | undefined => (items.length > 0 ? items : undefined);

async function importRecord(ctx: CommandContext, file: string): Promise<void> {
  ctx.store('import a backup'); // --store is required: said before the file is read
  let imported: DeviceChannelRecord;
  try {
    imported = decodeChannelRecord(await readFile(file, 'utf8'));
    if (channelIdOf(imported.params) !== imported.channelId)
      throw new Error('the channel id does not match the parameters');
  } catch (cause) {
    const why = isTrickleError(cause) ? cause.shortMessage : (cause as Error).message;
    throw new CliError(EXIT.USAGE, 'MALFORMED', `${file} is not a valid channel record: ${why}`, { cause });
  }
  verifyLatest(imported);
  const store = await ctx.writableStore('import a backup');
  const { channelId } = imported;
  const next = imported.latest.state;
  const existing = await store.load(channelId).catch((cause: unknown) => {
    throw new CliError(
      EXIT.USAGE,
      'MALFORMED',
      `the store's record of ${channelId} cannot be read: ${(cause as Error).message}`,
      { cause },
    );
  });
  if (existing) {
    const held = existing.latest.state;
    if (next.version < held.version) {
      throw new CliError(
        EXIT.NOTHING_TO_DO,
        'STALE_VERSION',
        `refusing to import version ${next.version}: the store already holds version ${held.version} of ${channelId}`,
        {
          hint: 'the store is newer than the backup; nothing to restore',
        },
      );
    }
    if (next.version === held.version) {
      if (sameState(next, held)) {
        throw new CliError(
          EXIT.NOTHING_TO_DO,
          'STALE_VERSION',
          `the store already holds version ${held.version} of ${channelId}: nothing to import`,
        );
      }
      throw new CliError(
        EXIT.USAGE,
        'EQUIVOCATION',
        `the backup and the store hold two different states at version ${held.version} of ${channelId}`,
        {
          hint: 'both are signed by both parties: keep both files as evidence and do not import',
        },
      );
    }
  }
  // Never lower signedVersion: the device must not sign a second, different state at a version it already signed.
  // What the store knew that the backup does not is merged in: give-backs, preimages, a refused state, evidence.
  const merged = {
    ...imported,
    funding: existing
      ? {
          device: max(existing.funding.device, imported.funding.device),
          hub: max(existing.funding.hub, imported.funding.hub),
        }
      : imported.funding,
    signedVersion: max(max(imported.signedVersion ?? 0n, next.version), existing?.signedVersion ?? 0n),
    closing: existing?.closing ?? imported.closing,
    ...givenBackOf(next.version, imported, existing),
    ...preimagesOf(imported, existing),
    ...evidenceOf(imported, existing),
  };
  const record: DeviceChannelRecord = { ...merged, ...refusedOf(merged, imported, existing) };
  await store.save(record);
  ctx.print(
    { channelId, version: next.version, previous: existing?.latest.state.version ?? null, store: ctx.options.store },
    `imported ${channelId} at version ${next.version}${existing ? ` (the store held version ${existing.latest.state.version})` : ''} into ${ctx.options.store}`,
  );
}
