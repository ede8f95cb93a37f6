import { TrickleError } from '@trickle/protocol/errors';
import type { Address } from '@trickle/protocol/types';
import type { Committer } from './committer.js';
import type { HubStore } from './store/types.js';

/** The hub, chain and adjudicator a store's channels and chain cursor belong to. */
export interface StoreIdentity {
  readonly hub: Address;
  readonly chainId: bigint;
  readonly adjudicator: Address;
}

/** The meta key holding a store's {@link StoreIdentity}. */
export const STORE_IDENTITY_KEY = 'hubIdentity';

const text = (id: StoreIdentity) => `${id.hub}|${id.chainId}|${id.adjudicator}`;

/**
 * Check that a store belongs to this hub, chain and adjudicator, and record it at the store's first start. A hub
 * started on another one's store would follow its adjudicator from a block cursor taken on another chain (skipping
 * blocks) and leave the store's channels unwatched: a device could then force-close one of them on an old state and
 * nobody would challenge it. A store from before this record is checked against its channels' parameters.
 * @throws TrickleError INVALID_ARGUMENT naming both identities when they differ; STORE_FAILURE when the store fails
 */
export async function checkStoreIdentity(store: HubStore, committer: Committer, id: StoreIdentity): Promise<void> {
  const want = text(id);
  let have = await store.getMeta(STORE_IDENTITY_KEY);
  if (have === undefined) {
    const other = (await store.loadChannels()).find(
      (r) => text({ hub: r.params.hub, chainId: r.params.chainId, adjudicator: r.params.adjudicator }) !== want,
    );
    if (other)
      have = text({ hub: other.params.hub, chainId: other.params.chainId, adjudicator: other.params.adjudicator });
  }
  if (have !== undefined && have !== want) {
    const [hub, chainId, adjudicator] = have.split('|');
    throw new TrickleError(
      'INVALID_ARGUMENT',
      `this store belongs to hub ${hub} on chain ${chainId}, adjudicator ${adjudicator}; this hub is ${id.hub} on chain ${id.chainId}, adjudicator ${id.adjudicator}: start with that key, chain and adjudicator, or with a new store`,
      {
        details: {
          store: { hub, chainId, adjudicator },
          hub: { hub: id.hub, chainId: String(id.chainId), adjudicator: id.adjudicator },
        },
      },
    );
  }
  if (have === undefined) await committer.write([{ kind: 'meta', key: STORE_IDENTITY_KEY, value: want }]);
}
