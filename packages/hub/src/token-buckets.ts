/**
 * Token buckets per key: `burst` at once, `perSecond` more each second. A key is remembered only while its bucket is
 * not full; the ones full again are swept out when the map has doubled since the last sweep (at least
 * {@link SWEEP_MIN}), so the map holds about the keys that spent within the last `burst / perSecond` seconds, at an
 * amortised constant cost per call. Times are ms on any clock that does not go back (the caller's `now`).
 */
export class TokenBuckets<K> {
  readonly #perMs: number;
  readonly #burst: number;
  /** Per key: tokens left as of `at`. */
  readonly #buckets = new Map<K, { tokens: number; at: number }>();
  #sweepAt = SWEEP_MIN;

  constructor(perSecond: number, burst: number) {
    this.#perMs = perSecond / 1000;
    this.#burst = burst;
  }

  /** ms until `key` has a whole token at `now`; 0 when it has one. Spends nothing. */
  waitMs(key: K, now: number): number {
    const b = this.#buckets.get(key);
    const tokens = b === undefined ? this.#burst : this.#refilled(b, now);
    return tokens >= 1 ? 0 : (1 - tokens) / this.#perMs;
  }

  /** Spend one token of `key` at `now` (after {@link waitMs} said 0). */
  spend(key: K, now: number): void {
    const b = this.#buckets.get(key);
    if (b === undefined) {
      if (this.#buckets.size >= this.#sweepAt) this.#sweep(now);
      this.#buckets.set(key, { tokens: this.#burst - 1, at: now });
    } else {
      b.tokens = this.#refilled(b, now) - 1;
      b.at = now;
    }
  }

  /** Spend one token of `key` at `now` if it has one. @returns 0 when spent, else {@link waitMs} */
  take(key: K, now: number): number {
    const wait = this.waitMs(key, now);
    if (wait === 0) this.spend(key, now);
    return wait;
  }

  /** Give one token back to `key` at `now` (an unspent use), never above `burst`. */
  refund(key: K, now: number): void {
    const b = this.#buckets.get(key);
    if (b === undefined) return; // full
    b.tokens = Math.min(this.#burst, this.#refilled(b, now) + 1);
    b.at = now;
  }

  /** Keys remembered now. */
  get size(): number {
    return this.#buckets.size;
  }

  #refilled(b: { tokens: number; at: number }, now: number): number {
    return Math.min(this.#burst, b.tokens + Math.max(0, now - b.at) * this.#perMs);
  }

  #sweep(now: number): void {
    for (const [k, b] of this.#buckets) if (this.#refilled(b, now) >= this.#burst) this.#buckets.delete(k);
    this.#sweepAt = Math.max(SWEEP_MIN, 2 * this.#buckets.size);
  }
}

/** {@link TokenBuckets} sweeps its map no earlier than at this size. */
const SWEEP_MIN = 1024;
