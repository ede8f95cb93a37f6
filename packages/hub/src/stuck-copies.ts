import { decodeStuckCopies, encodeStuckCopies, type StuckCopy, type StuckCopyStore } from '@trickle/chain/types';
import type { Address } from '@trickle/protocol/types';
import type { HubStore } from './store/types.js';

/** Meta key prefix of an account's stuck copies in the hub store. */
const PREFIX = 'stuck-copies/';

/**
 * The hub store as the memory of the hub account's stuck replace-by-fee copies (`ReplaceOptions.stuckCopies` of
 * `@trickle/chain`): one meta entry per account, its whole list as JSON with the fees as decimal strings, written in a
 * commit of its own (durable when it resolves). So a restarted hub's next challenge or reveal replaces a copy the last
 * run gave up on instead of queuing behind it. `store` is read at each call (the store may be opened after the chain).
 * In a cluster every process keeps the list of the one account: the last save wins, and a copy it drops costs one
 * send refused as underpriced (the next goes above it).
 * @param store - the hub's store (read at each call)
 * @returns the `stuckCopies` of `adjudicatorHubChain({ replace })`
 * @example
 * ```ts
 * const store = openLmdbStore({ path: './hub-store' });
 * const chain = adjudicatorHubChain({ provider, chainId, adjudicator, runner, replace: { stuckCopies: hubStuckCopies(() => store) } });
 * const hub = await createHub({ signer, store, chain });
 * ```
 */
export function hubStuckCopies(store: () => HubStore): StuckCopyStore {
  return {
    async load(account: Address): Promise<readonly StuckCopy[]> {
      const kept = await store().getMeta(PREFIX + account);
      if (kept === undefined) return [];
      return decodeStuckCopies(kept);
    },
    async save(account: Address, copies: readonly StuckCopy[]): Promise<void> {
      await store().commit([{ kind: 'meta', key: PREFIX + account, value: encodeStuckCopies(copies) }]);
    },
  };
}
