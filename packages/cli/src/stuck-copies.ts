/**
 * What the `trickle` commands remember between runs: the replace-by-fee copies a command's send left unmined (killed
 * mid-send, or given up), so that the next command sending from the account replaces a stuck copy instead of queueing
 * behind it (`ReplaceOptions.stuckCopies` of `@trickle/chain`).
 *
 * Each process keeps its own file, and takes over only the files of processes that are gone. Commands from one account
 * may run at once (a script answering several force closes in parallel). With one file per account, each command
 * wrote its own list over the others' (a copy still waiting was forgotten), and one command read another's copy still
 * in flight as stuck and replaced it with its own call: a challenge dropped from the mempool for a withdraw.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rename, unlink } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { decodeStuckCopies, encodeStuckCopies, type StuckCopy, type StuckCopyStore } from '@trickle/chain/types';
import { processAlive, replaceFile, syncDir } from '@trickle/client/store';
import type { Address } from '@trickle/protocol/types';

/** The CLI's state directory: `$TRICKLE_STATE_DIR`, else `$XDG_STATE_HOME/trickle`, else `~/.local/state/trickle`. */
export function stateDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env['TRICKLE_STATE_DIR']) return env['TRICKLE_STATE_DIR'];
  return join(env['XDG_STATE_HOME'] || join(homedir(), '.local', 'state'), 'trickle');
}

/**
 * This process's name in the file names: its pid, and a token of its own, so that a file an earlier process with the
 * same pid left is not taken for this one's.
 */
const SELF = `${process.pid}.${randomBytes(6).toString('hex')}`;
/** `<pid>.<token>.json` (a process's own list) or `<pid>.<token>.<n>.json` (a list it took over from a process gone). */
const FILE = /^(\d+)\.([0-9a-f]+)(?:\.\d+)?\.json$/;
/** The next `<n>` of a file taken over (per process: two stores of one process never rename onto one name). */
let next = 0;

/** Whether the process that wrote `name` (a file of an account's directory) is gone, so its copies are free to take. */
function ownerGone(name: string): boolean {
  const m = FILE.exec(name);
  if (m === null) return false; // not ours (a temporary file being written): left alone
  const pid = Number(m[1]);
  if (pid === process.pid) return !name.startsWith(`${SELF}.`); // this pid's earlier process
  return !processAlive(pid);
}

/**
 * The stuck copies of each sending account on one chain, in `<dir>/stuck-copies/<chainId>-<account>/`: one file per
 * process that sent from the account (written whole: `replaceFile`). `load` takes over the files of processes that
 * are gone (renamed to this process's name, so two commands never take the same copy) and returns their copies; the
 * copies of a process still running are its own, neither read nor written here. `save` writes this process's list and
 * then removes the files it took over (their copies are in the list, or mined). The file of the earlier format,
 * `<chainId>-<account>.json`, is taken over as a gone process's. A file that cannot be read or parsed is reported through
 * `warn` and read as empty: the send then goes out as it did before this memory existed, rather than not at all (a
 * challenge has a deadline).
 * @param dir - the state directory ({@link stateDir})
 * @param chainId - the chain's id (asked when a copy is read or written)
 * @param warn - a progress line
 */
export function fileStuckCopies(
  dir: string,
  chainId: () => Promise<bigint>,
  warn: (line: string) => void,
): StuckCopyStore {
  const root = join(dir, 'stuck-copies');
  const dirOf = async (account: Address) => join(root, `${await chainId()}-${account}`);
  /** Per account directory: the files this process took over and has not yet written into its own. */
  const taken = new Map<string, string[]>();

  /** Rename `from` to a name of this process; false when another process took it first. */
  const takeOver = async (from: string, accountDir: string): Promise<string | undefined> => {
    const to = join(accountDir, `${SELF}.${next++}.json`);
    try {
      await rename(from, to);
      return to;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw e;
    }
  };
  const read = async (file: string): Promise<StuckCopy[]> => {
    try {
      return decodeStuckCopies(await readFile(file, 'utf8'));
    } catch (e) {
      warn(`warning: ignoring ${file} (${(e as Error).message}): a stuck transaction may not be replaced`);
      return [];
    }
  };

  return {
    async load(account) {
      const accountDir = await dirOf(account);
      await mkdir(accountDir, { recursive: true, mode: 0o700 });
      const gone = (await readdir(accountDir)).filter(ownerGone).map((name) => join(accountDir, name));
      const legacy = `${accountDir}.json`;
      const copies: StuckCopy[] = [];
      const took: string[] = [];
      for (const file of [legacy, ...gone]) {
        const now = await takeOver(file, accountDir);
        if (now === undefined) continue;
        took.push(now);
        copies.push(...(await read(now)));
      }
      if (took.length > 0) {
        taken.set(accountDir, [...(taken.get(accountDir) ?? []), ...took]);
        await syncDir(accountDir);
      }
      return copies;
    },
    async save(account, copies: readonly StuckCopy[]) {
      const accountDir = await dirOf(account);
      await mkdir(accountDir, { recursive: true, mode: 0o700 });
      const own = join(accountDir, `${SELF}.json`);
      if (copies.length > 0) await replaceFile(own, encodeStuckCopies(copies));
      else await unlink(own).catch(notGone);
      const done = taken.get(accountDir) ?? [];
      taken.set(accountDir, []);
      for (const file of done) {
        // Its copies are in the file just written (or mined): one left behind is only read again, and skipped.
        await unlink(file).catch((e: NodeJS.ErrnoException) => {
          if (e.code !== 'ENOENT') warn(`warning: cannot remove ${file} (${e.message})`);
        });
      }
      if (copies.length === 0 || done.length > 0) await syncDir(accountDir);
    },
  };
}

/** Rethrows an unlink's failure unless the file was gone already. */
function notGone(e: unknown): void {
  if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
}
