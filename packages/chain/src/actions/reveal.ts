import { TrickleError } from '@trickle/protocol/errors';
import { hashPreimage } from '@trickle/protocol/locks';
import type { Bytes32 } from '@trickle/protocol/types';
import { eventsNamed, type RevealedEvent } from '../events.js';
import { callView, sendTx } from '../internal/send.js';
import type { AdjudicatorTarget, TxOptions, TxResult } from '../types.js';

/** Result of {@link reveal}. */
export interface RevealReturnType extends TxResult {
  /** keccak256 of the preimage: the lock hash it claims. */
  readonly lockHash: Bytes32;
  /** When the preimage first became known on-chain (this transaction's block, or an earlier reveal's). */
  readonly revealedAt: bigint;
  /** The `Revealed` event, absent when the preimage had been revealed before. */
  readonly revealed: RevealedEvent | undefined;
}

/**
 * Record a 32-byte preimage in the adjudicator's registry, so that every lock on its hash whose expiry is at or
 * after this block's timestamp pays its payee at settlement. Anyone may call; revealing again changes nothing.
 * @param target - the adjudicator, connected to the submitter's signer
 * @param preimage - the 32-byte secret
 * @param opts - gas limit / nonce
 * @returns the receipt, the hash and the time it was first revealed
 * @throws TrickleError `MALFORMED` when `preimage` is not 32 bytes
 * @example
 * ```ts
 * const { lockHash, revealedAt } = await reveal(adjudicator, preimage);
 * ```
 */
export async function reveal(
  target: AdjudicatorTarget,
  preimage: Bytes32,
  opts: TxOptions = {},
): Promise<RevealReturnType> {
  const hash = hashPreimage(preimage);
  const result = await sendTx(target.contract, 'reveal', [preimage], opts);
  const revealed = eventsNamed(result.events, 'Revealed')[0];
  const at = revealed?.timestamp ?? (await getRevealedAt(target, hash));
  if (at === 0n) throw new TrickleError('INTERNAL', 'reveal left no record', { details: { hash } });
  return { ...result, lockHash: hash, revealedAt: at, revealed };
}

/**
 * When the preimage of `hash` was first revealed on the adjudicator (unix seconds), 0n if never.
 * @example
 * ```ts
 * if ((await getRevealedAt(adjudicator, lock.hash)) !== 0n) console.log('claimable');
 * ```
 */
export async function getRevealedAt(target: AdjudicatorTarget, hash: Bytes32): Promise<bigint> {
  return await callView<bigint>(target.contract, 'revealedAt', [hash]);
}

/** Parameters of {@link reveal}. */
export type RevealParameters = Parameters<typeof reveal>;
