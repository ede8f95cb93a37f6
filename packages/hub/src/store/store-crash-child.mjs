// Child process of the store contract tests: commits to the BUILT hub store (`@trickle/hub/store/lmdb` or
// `@trickle/hub/store/postgres`, i.e. dist/: run `tsc -b` first) and prints each commit's number on stdout once it
// has resolved, then SIGKILLs itself. Commit k puts meta `k/<k>` = `<k>`, sets meta `last` = `<k>`, and deletes
// `k/<k-1>` when k is odd and above 1: after commit K the `k/` keys are the odd numbers up to K, and K itself.
// Bounded in count and time. It starts after the store's `last`.
// Usage: node store-crash-child.mjs <dir | postgres://url> <logBytes> <count> [<ms>]
import { openLmdbStore } from '@trickle/hub/store/lmdb';
import { openPostgresStore } from '@trickle/hub/store/postgres';

const [where, logBytesArg, countArg, msArg] = process.argv.slice(2);
const count = Number(countArg ?? '200');
const deadline = Date.now() + Number(msArg ?? '20000');
const store = where.startsWith('postgres://')
  ? openPostgresStore({ url: where })
  : openLmdbStore({ path: where, logBytes: Number(logBytesArg) });
// Continues where the store is: after a crash and a reopen, the pattern goes on from the last durable commit.
const start = Number((await store.getMeta('last')) ?? '0') + 1;
for (let k = start; k < start + count && Date.now() < deadline; k++) {
  const writes = [
    { kind: 'meta', key: `k/${k}`, value: String(k) },
    { kind: 'meta', key: 'last', value: String(k) },
  ];
  if (k % 2 === 1 && k > 1) writes.push({ kind: 'deleteMeta', key: `k/${k - 1}` });
  await store.commit(writes);
  process.stdout.write(`${k}\n`); // a pipe: written synchronously on Linux
}
// LMDB: killed before the store hands its pending writes to LMDB (they wait 100 ms): only the log has the latest ones.
process.kill(process.pid, 'SIGKILL');
