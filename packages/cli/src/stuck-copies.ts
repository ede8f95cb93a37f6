/**
 * What the `trickle` commands remember between runs: the replace-by-fee copies a command's send left unmined (killed
 * mid-send, or given up), so that the next command sending from the account replaces a stuck copy instead of queueing
 * behind it (`ReplaceOptions.stuckCopies` of `@trickle/chain`). One file per chain and account.
 */
import { mkdir, readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { decodeStuckCopies, encodeStuckCopies, type StuckCopy, type StuckCopyStore } from '@trickle/chain/types';
import type { Address } from '@trickle/protocol/types';
import { writeWhole } from './files.js';

/** The CLI's state directory: `$TRICKLE_STATE_DIR`, else `$XDG_STATE_HOME/trickle`, else `~/.local/state/trickle`. */
export function stateDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env['TRICKLE_STATE_DIR']) return env['TRICKLE_STATE_DIR'];
  return join(env['XDG_STATE_HOME'] || join(homedir(), '.local', 'state'), 'trickle');
}

/**
 * The stuck copies of each sending account on one chain, as files `<dir>/stuck-copies/<chainId>-<account>.json`
 * (written whole: {@link writeWhole}). A file that cannot be read or parsed is reported through
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
  const fileOf = async (account: Address) => join(dir, 'stuck-copies', `${await chainId()}-${account}.json`);
  return {
    async load(account) {
      const file = await fileOf(account);
      try {
        return decodeStuckCopies(await readFile(file, 'utf8'));
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT')
          warn(
            `warning: ignoring ${file} (${(e as Error).message}): a stuck transaction of ${account} may not be replaced`,
          );
        return [];
      }
    },
    async save(account, copies: readonly StuckCopy[]) {
      await mkdir(join(dir, 'stuck-copies'), { recursive: true, mode: 0o700 });
      await writeWhole(await fileOf(account), encodeStuckCopies(copies));
    },
  };
}
