/** Human formatting of times and amounts. Amounts are printed in token base units, exactly. */

/** Unix seconds as an ISO 8601 UTC time. */
export function isoTime(seconds: bigint): string {
  return new Date(Number(seconds) * 1000).toISOString();
}

/** A duration in seconds as `1h 2m 3s`. */
export function duration(seconds: bigint): string {
  let s = seconds < 0n ? -seconds : seconds;
  const parts: string[] = [];
  const d = s / 86_400n;
  s %= 86_400n;
  const h = s / 3_600n;
  s %= 3_600n;
  const m = s / 60n;
  s %= 60n;
  if (d > 0n) parts.push(`${d}d`);
  if (h > 0n) parts.push(`${h}h`);
  if (m > 0n) parts.push(`${m}m`);
  if (s > 0n || parts.length === 0) parts.push(`${s}s`);
  return parts.join(' ');
}

/** `deadline` relative to `now`: "in 1h 2m" or "3m ago". */
export function relative(deadline: bigint, now: bigint): string {
  return deadline > now ? `in ${duration(deadline - now)}` : `${duration(now - deadline)} ago`;
}

/** Aligned `label  value` lines, indented by two spaces. */
export function table(rows: readonly (readonly [string, string])[]): string {
  const width = Math.max(...rows.map(([k]) => k.length));
  return rows.map(([k, v]) => `  ${k.padEnd(width)}  ${v}`).join('\n');
}
