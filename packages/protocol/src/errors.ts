/**
 * Every failure Trickle reports is a {@link TrickleError} with a stable `code`. Codes are API: tests, the wire
 * protocol and operators' dashboards key on them, so a code is never renamed once released.
 *
 * @example
 * ```ts
 * try { decodeFrame(bytes) } catch (e) { if (isTrickleError(e, 'MALFORMED')) reply(e.code) }
 * ```
 */
export const ERROR_CODES = {
  /** A frame or value is not of the form the protocol defines (type, length, range, unknown field, trailing bytes). */
  MALFORMED: 'MALFORMED',
  /** A frame exceeds the configured size limit. */
  FRAME_TOO_LARGE: 'FRAME_TOO_LARGE',
  /** The proposed version is not newer than the current one. */
  STALE_VERSION: 'STALE_VERSION',
  /** A cumulative counter would go down. */
  COUNTER_DECREASED: 'COUNTER_DECREASED',
  /** A counter other than the signing payer's rises (an update may only raise the counter of the party that signs it first). */
  WRONG_PAYER: 'WRONG_PAYER',
  /** The payer cannot afford the new counter against its deposit and what it has received. */
  INSUFFICIENT_FUNDS: 'INSUFFICIENT_FUNDS',
  /** A signature is malformed, high-s, recovers to nobody, or to somebody other than the expected party. */
  BAD_SIGNATURE: 'BAD_SIGNATURE',
  /** The state names another channel than the one it was sent for, or a channel this party does not know. */
  WRONG_CHANNEL: 'WRONG_CHANNEL',
  /** A second, different state with a version that was already signed. Refused; both are kept as evidence. */
  EQUIVOCATION: 'EQUIVOCATION',
  /** The channel already has a final state; nothing may follow it. */
  CHANNEL_FINAL: 'CHANNEL_FINAL',
  /** A final state may not move money (it only freezes the last counters). */
  BAD_FINAL: 'BAD_FINAL',
  /** The market round may only move forward, and only the hub moves it. */
  BAD_ROUND: 'BAD_ROUND',
  /** The hub still owes this channel a credit (routed payment, refund, market round); close after it lands. */
  PENDING_CREDITS: 'PENDING_CREDITS',
  /** The channel is not (or no longer) open and funded on-chain as far as this party has seen. */
  CHANNEL_NOT_OPEN: 'CHANNEL_NOT_OPEN',
  /** Authentication failed or is missing. */
  UNAUTHORIZED: 'UNAUTHORIZED',
  /** A configured limit (in-flight, rate, connections, routing exposure) was hit. Retry later. */
  RATE_LIMITED: 'RATE_LIMITED',
  /**
   * A bound of the protocol or the hub was passed by the request itself (a lock's expiry beyond `maxLockSeconds`, a
   * route past the payer's routed-in-flight cap): not retried as is.
   */
  LIMIT_EXCEEDED: 'LIMIT_EXCEEDED',
  /** A routed payment's destination is unknown or offline. */
  NO_ROUTE: 'NO_ROUTE',
  /**
   * The hub cannot carry a payment to the payee: it has no channel to the payee in this token with enough of the
   * hub's own funds in it (its liquidity policy could not top one up). `details` names the payee and the shortfall.
   */
  HUB_LIQUIDITY: 'HUB_LIQUIDITY',
  /** The hub runs no market: market orders are refused at once. */
  MARKET_DISABLED: 'MARKET_DISABLED',
  /** No contract code at the address given (e.g. the adjudicator on this chain): wrong address or wrong chain. */
  NO_CONTRACT: 'NO_CONTRACT',
  /** A payment stream's rate is zero or below. */
  INVALID_RATE: 'INVALID_RATE',
  /** A payment stream's rate would use up its balance (or its `maxTotal`) within one tick. */
  STREAM_DEPLETES: 'STREAM_DEPLETES',
  /** The payment stream was stopped (or depleted): it can no longer be adjusted, paused or resumed. */
  STREAM_STOPPED: 'STREAM_STOPPED',
  /** A routed payment that asked for a signed receipt was delivered without one (the hub restarted in between). */
  RECEIPT_MISSING: 'RECEIPT_MISSING',
  /** A market order is invalid: malformed, not signed by its participant, for a round not open, a repeated id, or unpaid. */
  BAD_ORDER: 'BAD_ORDER',
  /** A clearing record, or the round credit claimed from it, does not match what the published orders clear to. */
  BAD_CLEARING: 'BAD_CLEARING',
  /** The peer did not answer in time. */
  TIMEOUT: 'TIMEOUT',
  /** The connection closed before the operation completed. */
  DISCONNECTED: 'DISCONNECTED',
  /** A store failed to read or write durably. */
  STORE_FAILURE: 'STORE_FAILURE',
  /** An on-chain call reverted; `details` carries the decoded custom error. */
  CHAIN_REVERTED: 'CHAIN_REVERTED',
  /** A lock's expiry has passed: it can no longer be claimed off-chain (the payer takes it back). */
  LOCK_EXPIRED: 'LOCK_EXPIRED',
  /** A lock may be taken back by its payer only after its expiry. */
  LOCK_NOT_EXPIRED: 'LOCK_NOT_EXPIRED',
  /**
   * The payee showed the lock's preimage before its expiry (and reveals it on-chain before the expiry if the payer
   * does not answer): it does not countersign the lock's return; the lock is settled by its claim or on-chain.
   */
  LOCK_CLAIMED: 'LOCK_CLAIMED',
  /** No pending lock in the channel has this hash (never added, already claimed or expired). */
  UNKNOWN_LOCK: 'UNKNOWN_LOCK',
  /**
   * The hub holds no routed payment of this id paid by the asking device (never routed, pruned after its retention
   * window, or another device's: the answer is the same, so it tells nothing about other devices' payments).
   */
  UNKNOWN_PAYMENT: 'UNKNOWN_PAYMENT',
  /** The preimage does not hash (keccak256) to the lock's hash. */
  BAD_PREIMAGE: 'BAD_PREIMAGE',
  /** The channel already holds the most pending locks it allows (`maxLocks`, default 32). */
  TOO_MANY_LOCKS: 'TOO_MANY_LOCKS',
  /** A routed lock's expiry leaves the hub too little time (challenge duration + margin) to claim upstream. */
  EXPIRY_TOO_SHORT: 'EXPIRY_TOO_SHORT',
  /** A routed lock's hash has a preimage the hub already learned: a key revealed before is no condition. */
  PREIMAGE_KNOWN: 'PREIMAGE_KNOWN',
  /**
   * The hub speaks none of the wire protocol versions the client offered (WebSocket subprotocols `trickle.v<n>`): it
   * answered the upgrade with HTTP 426 and its own versions in `Trickle-Protocols`. Upgrade the client (or the hub).
   */
  UNSUPPORTED_PROTOCOL: 'UNSUPPORTED_PROTOCOL',
  /** Invalid options passed to a constructor or function. */
  INVALID_ARGUMENT: 'INVALID_ARGUMENT',
  /** An unexpected failure on the other side. */
  INTERNAL: 'INTERNAL',
  /**
   * The peer refused a request with a code this version does not know (one a newer peer added): the request failed,
   * for the reason `details.wireCode` names. A decoder gives it to a well-formed code outside this list; never sent.
   */
  UNKNOWN_CODE: 'UNKNOWN_CODE',
} as const;

/** A stable error code. */
export type ErrorCode = keyof typeof ERROR_CODES;

/** Options for {@link TrickleError}. */
export interface TrickleErrorOptions {
  /** Machine-readable context (offending field, expected vs actual). Values must be JSON-friendly or bigint. */
  details?: Record<string, unknown>;
  /** The underlying error, if any. */
  cause?: unknown;
  /** The WebSocket close status to use when this error ends a connection (RFC 6455 §7.4). */
  closeStatus?: number;
}

/**
 * Base error: a stable `code`, a one-line `shortMessage`, structured `details`, and an optional `cause`.
 */
export class TrickleError extends Error {
  override readonly name: string = 'TrickleError';
  readonly code: ErrorCode;
  readonly shortMessage: string;
  readonly details: Record<string, unknown>;
  readonly closeStatus: number | undefined;

  constructor(code: ErrorCode, shortMessage: string, options: TrickleErrorOptions = {}) {
    super(`${code}: ${shortMessage}`, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.shortMessage = shortMessage;
    this.details = options.details ?? {};
    this.closeStatus = options.closeStatus;
  }
}

/** A frame or value that does not follow the protocol. */
export class MalformedError extends TrickleError {
  override readonly name = 'MalformedError';
  constructor(shortMessage: string, options: TrickleErrorOptions = {}) {
    super('MALFORMED', shortMessage, { closeStatus: 1007, ...options });
  }
}

/** A state transition the protocol refuses; `code` says which rule. */
export class InvalidTransitionError extends TrickleError {
  override readonly name = 'InvalidTransitionError';
}

/** A signature that is malformed or by the wrong key. */
export class BadSignatureError extends TrickleError {
  override readonly name = 'BadSignatureError';
  constructor(shortMessage: string, options: TrickleErrorOptions = {}) {
    super('BAD_SIGNATURE', shortMessage, options);
  }
}

/**
 * The error a peer's `error` or `reject` frame reports: its code, and for a code this version does not know
 * (`UNKNOWN_CODE`) the code as sent in `details.wireCode`.
 * @param frame - the decoded frame's `code`, `message` and `wireCode`
 * @param fallback - the message when the frame has none
 */
export function peerError(
  frame: { readonly code: ErrorCode; readonly message?: string | undefined; readonly wireCode?: string | undefined },
  fallback: string,
): TrickleError {
  const { code, wireCode } = frame;
  return new TrickleError(code, frame.message ?? fallback, wireCode === undefined ? {} : { details: { wireCode } });
}

/**
 * Type guard for Trickle errors, optionally of one code.
 * @param e - anything caught
 * @param code - the code to match, if any
 * @returns whether `e` is a TrickleError (with that code)
 */
export function isTrickleError(e: unknown, code?: ErrorCode): e is TrickleError {
  return e instanceof TrickleError && (code === undefined || e.code === code);
}
