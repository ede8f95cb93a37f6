import type { HubStore, StoreWrite } from '@trickle/hub/store/types';
import type { ChannelId } from '@trickle/protocol/types';

/**
 * A hub store that throws (as a full disk or EIO would) on the commits `fails` picks: with a set of channels, every
 * commit touching one of them (the set is read at each commit, so a test adds and deletes as the disk fills and
 * frees); with a predicate, every commit it answers true for (called once a commit, so it may count its failures).
 */
export function flakyHubStore(
  inner: HubStore,
  fails: Set<ChannelId> | ((writes: readonly StoreWrite[]) => boolean),
): HubStore {
  const failsCommit =
    typeof fails === 'function'
      ? fails
      : (writes: readonly StoreWrite[]) => writes.some((w) => w.kind === 'channel' && fails.has(w.record.channelId));
  return {
    ...inner,
    loadChannels: () => inner.loadChannels(),
    loadPendingRoutes: () => inner.loadPendingRoutes(),
    loadEvidence: (id) => inner.loadEvidence(id),
    getMeta: (k) => inner.getMeta(k),
    loadMetaPrefix: (p) => inner.loadMetaPrefix(p),
    close: () => inner.close(),
    async commit(writes) {
      if (failsCommit(writes)) throw Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' });
      return inner.commit(writes);
    },
  };
}
