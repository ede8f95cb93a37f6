/** The longest wait a timer holds (~24.8 days): longer ones would fire at once (Node's TimeoutOverflowWarning). */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * Run `fn` after the I/O already waiting has been read. A deadline judged in its timer's own callback runs before that
 * I/O (timers run before I/O in a turn of the event loop), so after time the process did not run (a blocked loop, a
 * suspended device or VM) an answer that came in time would be judged missing. Node: `setImmediate`, which runs after
 * the turn's reads; elsewhere a zero timeout, queued behind the tasks already waiting.
 */
export function afterPendingIo(fn: () => void): void {
  const immediate = (globalThis as { setImmediate?: (f: () => void) => unknown }).setImmediate;
  if (immediate) immediate(fn);
  else setTimeout(fn, 0);
}

/**
 * A deadline: `fn` runs `ms` after now, once the I/O already waiting then has been read ({@link afterPendingIo}), so an
 * answer that came in time is taken first. Cancelled with `clearTimeout` until the timer fires; a check in `fn` covers
 * an answer read in between.
 */
export function deadline(fn: () => void, ms: number): ReturnType<typeof setTimeout> {
  return setTimeout(() => afterPendingIo(fn), ms);
}
