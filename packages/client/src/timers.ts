/** The longest wait a timer holds (~24.8 days): longer ones would fire at once (Node's TimeoutOverflowWarning). */
export const MAX_TIMER_MS = 2 ** 31 - 1;
