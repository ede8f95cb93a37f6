/** The watchtower's log: one JSON object per line (time, level, event, fields; bigints as decimal strings). */
import { stringifyJson } from '@trickle/protocol/json';

/** Log levels, lowest first. */
export const LOG_LEVELS = ['debug', 'info', 'warn', 'error'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** Receives the watchtower's log records. `event` is a stable kebab-case name (`challenge-mined`, `reorg`, …). */
export type WatchLogger = (level: LogLevel, event: string, fields?: Record<string, unknown>) => void;

/**
 * A logger writing JSON lines.
 * @param write - where lines go (e.g. `(s) => process.stdout.write(s)`)
 * @param minLevel - lowest level written (default `info`)
 * @example
 * ```ts
 * const log = jsonLinesLogger((s) => process.stdout.write(s));
 * log('info', 'started', { block: 12 }); // {"time":"…","level":"info","event":"started","block":12}
 * ```
 */
export function jsonLinesLogger(write: (line: string) => void, minLevel: LogLevel = 'info'): WatchLogger {
  const min = LOG_LEVELS.indexOf(minLevel);
  return (level, event, fields = {}) => {
    if (LOG_LEVELS.indexOf(level) < min) return;
    const { err, ...rest } = fields;
    const line: Record<string, unknown> = { time: new Date().toISOString(), level, event, ...rest };
    if (err !== undefined) line['err'] = describeError(err);
    write(`${stringifyJson(line)}\n`);
  };
}

/** A logger that drops everything. */
export const silentLogger: WatchLogger = () => {};

/** An error as a small JSON-friendly object (code, message). */
export function describeError(e: unknown): Record<string, unknown> {
  if (e instanceof Error) {
    const o = e as Error & { code?: unknown; shortMessage?: unknown; details?: { error?: unknown } };
    return {
      code: typeof o.code === 'string' ? o.code : undefined,
      message: typeof o.shortMessage === 'string' ? o.shortMessage : o.message,
      revert: typeof o.details?.error === 'string' ? o.details.error : undefined,
    };
  }
  return { message: String(e) };
}
