// The hub store as the memory of the hub account's stuck replace-by-fee copies, on a real LMDB store and a real
// PostgreSQL server: what a run saved is what the next run (the store reopened) loads, fees exact.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { StuckCopy } from '@trickle/chain/types';
import type { Address } from '@trickle/protocol/types';
import { openLmdbStore } from './store/lmdb.js';
import { openPostgresStore } from './store/postgres.js';
import type { HubStore } from './store/types.js';
import { hubStuckCopies } from './stuck-copies.js';
import { startPostgres, type TestPostgres } from '../../../test/helpers/postgres.mjs';
import { tempDirs } from '../../../test/helpers/temp-dirs.mjs';

const tmp = tempDirs('trickle-stuck-copies-');
let server: TestPostgres;
beforeAll(async () => {
  server = await startPostgres();
});
afterAll(async () => {
  await server?.close();
});

const hub = '0x1563915e194D8CfBA1943570603F7606A3115508' as Address;
const other = '0x19E7E376E7C213B7E7e7e46cc70A5dD086DAff2A' as Address;

const backends: { name: string; fresh: () => Promise<string>; open: (where: string) => HubStore }[] = [
  { name: 'LMDB', fresh: async () => tmp(), open: (path) => openLmdbStore({ path }) },
  { name: 'PostgreSQL', fresh: () => server.createDatabase(), open: (url) => openPostgresStore({ url }) },
];

for (const b of backends) {
  describe(`hub stuck copies: ${b.name}`, () => {
    it('a saved list is loaded back after a reopen, per account, fees exact; a later save replaces it', async () => {
      const where = await b.fresh();
      let store = b.open(where);
      const copies = hubStuckCopies(() => store);
      expect(await copies.load(hub)).toEqual([]);
      const stuck: StuckCopy[] = [
        { nonce: 7, maxFeePerGas: (1n << 70n) + 3n, maxPriorityFeePerGas: 1_200_000_000n },
        { nonce: 9, maxFeePerGas: 4_000_000_001n, maxPriorityFeePerGas: 0n },
      ];
      await copies.save(hub, stuck);
      await store.close();

      store = b.open(where); // the next run
      expect(await copies.load(hub)).toEqual(stuck);
      expect(await copies.load(other)).toEqual([]);
      await copies.save(hub, stuck.slice(1));
      await store.close();
      store = b.open(where);
      expect(await copies.load(hub)).toEqual(stuck.slice(1));
      await store.close();
    });
  });
}
