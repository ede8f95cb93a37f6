import { readFileSync, readdirSync } from 'node:fs';

/**
 * File descriptors the hub needs besides its device connections, on top of those open when it starts: the store's
 * files, chain endpoint and database sockets, dashboard streams and scrapes, connections still in their handshake.
 */
export const FD_HEADROOM = 64;

/** How the open-files limit compares with `maxConnections` (see {@link connectionsOverFdLimit}). */
export interface FdShortfall {
  readonly maxConnections: number;
  /** The soft limit on open files (`RLIMIT_NOFILE`) the process runs under. */
  readonly openFilesLimit: number;
  /** Descriptors already open when the hub started. */
  readonly openNow: number;
  /** Connections that fit: the limit less those open now and {@link FD_HEADROOM}. */
  readonly fit: number;
}

/**
 * The soft "Max open files" limit in the text of `/proc/<pid>/limits`; undefined when unlimited or not found.
 * @param text - the file's content
 */
export function parseOpenFilesLimit(text: string): number | undefined {
  const line = /^Max open files\s+(\S+)/m.exec(text);
  if (!line || !/^\d+$/.test(line[1]!)) return undefined;
  const n = Number(line[1]);
  return Number.isSafeInteger(n) ? n : undefined;
}

/**
 * Whether `maxConnections` exceeds what the process's open-files limit leaves for connections. Node has no getrlimit:
 * this reads `<procSelf>/limits` and counts `<procSelf>/fd`, and answers undefined (nothing to say) where they do not
 * exist (not Linux), when the limit is unlimited, or when the connections fit.
 * @param maxConnections - the hub's `limits.maxConnections`
 * @param procSelf - the process's proc directory (`/proc/self`)
 * @returns the shortfall when connections past {@link FdShortfall.fit} would fail to open (EMFILE), else undefined
 */
export function connectionsOverFdLimit(maxConnections: number, procSelf = '/proc/self'): FdShortfall | undefined {
  let openFilesLimit: number | undefined;
  let openNow: number;
  try {
    openFilesLimit = parseOpenFilesLimit(readFileSync(`${procSelf}/limits`, 'latin1'));
    openNow = readdirSync(`${procSelf}/fd`).length;
  } catch {
    return undefined; // no procfs here (macOS, Windows, a sandbox): stay quiet
  }
  if (openFilesLimit === undefined) return undefined;
  const fit = Math.max(0, openFilesLimit - openNow - FD_HEADROOM);
  return maxConnections > fit ? { maxConnections, openFilesLimit, openNow, fit } : undefined;
}
