/**
 * JSON for records that hold bigints (stores, backups, the CLI's --json): bigints are written as decimal strings
 * and read back as bigints for the field names Trickle uses for integers. Exact, and readable by any tool.
 */

/** Field names whose decimal-string values are read back as bigints. */
export const BIGINT_FIELDS: ReadonlySet<string> = new Set([
  'chainId',
  'challengeDuration',
  'version',
  'paidByDevice',
  'paidByHub',
  'round',
  'device',
  'hub',
  'hubSignedVersion',
  'signedVersion',
  'amount',
  'deadline',
  'quantity',
  'price',
  'arrival',
  'deposit',
  'net',
  'fee',
  'blockNumber',
  'volume',
  'feeBps',
  'lockedByDevice',
  'lockedByHub',
  'expiry',
  'revealedAt',
]);

/** Serialise to JSON text with bigints as decimal strings. */
export function stringifyJson(value: unknown, space?: number): string {
  return JSON.stringify(value, (_k, v) => (typeof v === 'bigint' ? v.toString() : v), space);
}

/** Parse JSON written by {@link stringifyJson}, restoring bigints in {@link BIGINT_FIELDS}. */
export function parseJson<T>(text: string): T {
  return JSON.parse(text, (k, v) =>
    typeof v === 'string' && BIGINT_FIELDS.has(k) && /^-?\d+$/.test(v) ? BigInt(v) : v,
  ) as T;
}
