import type { ChannelId } from '@trickle/protocol/types';

/**
 * Device updates the hub has received and not yet answered, per channel, in arrival order: gives the ack latency
 * (arrival to the `ack` that covers it) and tells a draining hub when everything it took in has been answered.
 * Acks are cumulative, so an ack for request `id` also answers every update that arrived before it on that channel
 * (the hub coalesced them into the acked state). Bounded: a channel keeps at most `maxPerChannel` entries.
 * A channel's table stays (empty) once everything on it is answered, until its device's connection goes
 * ({@link AckTracker.forget}): a device paying in a closed loop empties it on nearly every ack, and a new Map per
 * update was garbage for the hub's collector.
 */
export class AckTracker {
  readonly #channels = new Map<ChannelId, Map<number, number>>();
  readonly #maxPerChannel: number;
  #size = 0;

  constructor(maxPerChannel = 8192) {
    this.#maxPerChannel = maxPerChannel;
  }

  /** Updates received and not answered yet. */
  get unanswered(): number {
    return this.#size;
  }

  /** An update with request id `id` arrived at `now` (ms). */
  received(channelId: ChannelId, id: number, now: number): void {
    let m = this.#channels.get(channelId);
    if (!m) this.#channels.set(channelId, (m = new Map()));
    if (m.has(id))
      m.delete(id); // a resend: count from the latest arrival
    else this.#size++;
    m.set(id, now);
    if (m.size > this.#maxPerChannel) {
      m.delete(m.keys().next().value as number);
      this.#size--;
    }
  }

  /**
   * The hub acked request `id` on the channel at `now`.
   * @returns the latency in ms of that update, or undefined when it was not tracked
   */
  acked(channelId: ChannelId, id: number, now: number): number | undefined {
    const m = this.#channels.get(channelId);
    const at = m?.get(id);
    if (!m || at === undefined) return undefined;
    if (m.size === 1) {
      m.delete(id); // the only entry (no iterator; clear() would make the Map a new table)
      this.#size--;
    } else
      for (const k of m.keys()) {
        m.delete(k);
        this.#size--;
        if (k === id) break;
      }
    return now - at;
  }

  /** The hub refused request `id` on the channel. */
  refused(channelId: ChannelId, id: number): void {
    const m = this.#channels.get(channelId);
    if (m?.delete(id)) this.#size--;
  }

  /** The device's connection went away: its updates will be resent, not answered here. */
  forget(channelIds: Iterable<ChannelId>): void {
    for (const id of channelIds) {
      const m = this.#channels.get(id);
      if (!m) continue;
      this.#size -= m.size;
      this.#channels.delete(id);
    }
  }
}
