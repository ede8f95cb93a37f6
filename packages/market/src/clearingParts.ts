import { TrickleError } from '@trickle/protocol/errors';
import { concatBytes } from '@trickle/protocol/hex';
import type { MessageOf } from '@trickle/protocol/codec';
import { WIRE_LIMITS } from '@trickle/protocol/wire-schema';

/**
 * The most parts a clearing record travels in: what a device buffers reassembling one is at most this many blobs
 * (`WIRE_LIMITS.maxBlobBytes` each, 3.75 MiB in all).
 */
export const MAX_CLEARING_PARTS = 64;

/** The parts of a clearing record received so far (see {@link joinClearing}). */
export interface HeldClearing {
  /** The record's round, part count and signature, as text: a part of another record does not mix with these. */
  readonly key: string;
  /** One slot per part; empty until that part has come. */
  readonly parts: readonly (Uint8Array | undefined)[];
}

/**
 * The `clearing` frames that carry a round's record: one when its bytes fit in a blob, else `parts` frames each
 * carrying the next slice of at most `WIRE_LIMITS.maxBlobBytes` bytes, with the same round and signature.
 * @param round - the record's round
 * @param record - the published clearing's bytes (JSON)
 * @param sig - the hub's signature of the record
 * @throws TrickleError `FRAME_TOO_LARGE` when the record needs more than {@link MAX_CLEARING_PARTS} parts
 */
export function splitClearing(round: bigint, record: Uint8Array, sig: Uint8Array): MessageOf<'clearing'>[] {
  const size = WIRE_LIMITS.maxBlobBytes;
  if (record.length <= size) return [{ t: 'clearing', id: 0, round, record, sig }];
  const parts = Math.ceil(record.length / size);
  if (parts > MAX_CLEARING_PARTS) {
    throw new TrickleError('FRAME_TOO_LARGE', `a clearing record of ${record.length} bytes needs ${parts} parts`, {
      details: { size: record.length, max: MAX_CLEARING_PARTS * size },
    });
  }
  return Array.from({ length: parts }, (_, part) => ({
    t: 'clearing' as const,
    id: 0,
    round,
    record: record.subarray(part * size, (part + 1) * size),
    sig,
    part,
    parts,
  }));
}

/**
 * Take a `clearing` frame on the device: a whole record is returned as is (and ends any parts held); a part is held
 * with the parts of the same round, signature and count (a part of another record starts over: one record is
 * reassembled at a time) until every part has come, and the record's bytes are then returned. The caller verifies
 * them (the hub's signature of the record's hash) as it does a whole record's. Memory is bounded:
 * {@link MAX_CLEARING_PARTS} slots of one blob each.
 * @param held - what was held before this frame (not modified)
 * @param m - the frame
 * @returns what to hold now, and the record's bytes once whole
 * @throws TrickleError `MALFORMED` for a part out of range (`part` ≥ `parts`, one without the other) or a record in
 *   more than {@link MAX_CLEARING_PARTS} parts; `held` is then still what to hold
 */
export function joinClearing(
  held: HeldClearing | undefined,
  m: MessageOf<'clearing'>,
): { held?: HeldClearing | undefined; record?: Uint8Array } {
  const { part, parts } = m;
  if (part === undefined && parts === undefined) return { record: m.record };
  if (!(part! < parts! && parts! <= MAX_CLEARING_PARTS)) {
    throw new TrickleError('MALFORMED', 'clearing part out of range');
  }
  const key = `${m.round} ${parts} ${m.sig}`;
  const slots = held?.key === key ? [...held.parts] : Array<Uint8Array | undefined>(parts!);
  slots[part!] = m.record;
  return slots.includes(undefined)
    ? { held: { key, parts: slots } }
    : { record: concatBytes(...(slots as Uint8Array[])) };
}
