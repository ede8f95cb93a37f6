/**
 * Call each of an application's listeners with `value`. A listener that throws does not stop the others, nor the
 * client's work around the call (a state already countersigned and stored, its ack, the payments resolved with it):
 * its error is thrown again on a later turn, where it reaches the process as an uncaught exception (as an
 * `EventTarget` listener's does) instead of leaving the channel's queue stalled behind it.
 */
export function notify<T>(listeners: Iterable<(value: T) => void>, value: T): void {
  for (const listener of listeners) {
    try {
      listener(value);
    } catch (e) {
      queueMicrotask(() => {
        throw e;
      });
    }
  }
}
