/**
 * Time a process did not run between two firings of a periodic timer: what lies beyond two periods since the last
 * firing (a blocked event loop, a starved, paused or sleeping process). Timers run before I/O, so whatever a peer
 * sent in that time is still unread when the timer fires: a timer that judges a peer's silence does not count it.
 * @param now - this firing, on a monotonic clock (ms)
 * @param last - the previous firing, on the same clock
 * @param periodMs - the timer's period
 * @returns ms the process did not run (0 when the timer fired in time)
 */
export function notRunMs(now: number, last: number, periodMs: number): number {
  return Math.max(0, now - last - 2 * periodMs);
}
