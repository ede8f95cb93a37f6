import { isTrickleError } from '@trickle/protocol/errors';

/** What {@link waitFor} throws when its condition does not hold in time. */
export class WaitTimeout extends Error {
  override readonly name = 'WaitTimeout';
}

/** Poll `cond` until it holds (bounded in time, for conditions reached asynchronously). @throws WaitTimeout */
export async function waitFor(cond: () => boolean, timeoutMs = 10_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > until) throw new WaitTimeout('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Hold this process's event loop for `ms` (as a blocked loop, a long GC or a paused process would): nothing else runs. */
export function holdEventLoop(ms: number): void {
  const until = performance.now() + ms;
  while (performance.now() < until);
}

/**
 * Let `promise` run on unawaited (a claim left with the hub away, a payment whose client went): it settles after the
 * test has what it checks. A rejection with one of `codes` (a TrickleError's) is one of its expected outcomes; any
 * other is thrown again, so it fails the run as an unhandled rejection instead of being swallowed.
 */
export function leaveRunning(promise: PromiseLike<unknown>, ...codes: readonly string[]): void {
  void Promise.resolve(promise).catch((e: unknown) => {
    if (!(isTrickleError(e) && codes.includes(e.code))) throw e;
  });
}
