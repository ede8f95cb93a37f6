import type { HubStore } from '@trickle/hub/store/types';
import type { ChannelId } from '@trickle/protocol/types';

/** A hub store that throws (as a full disk or EIO would) on every commit touching one of `failing`'s channels. */
export function flakyHubStore(inner: HubStore, failing: Set<ChannelId>): HubStore {
  return {
    ...inner,
    loadChannels: () => inner.loadChannels(),
    loadPendingRoutes: () => inner.loadPendingRoutes(),
    loadEvidence: (id) => inner.loadEvidence(id),
    getMeta: (k) => inner.getMeta(k),
    loadMetaPrefix: (p) => inner.loadMetaPrefix(p),
    close: () => inner.close(),
    async commit(writes) {
      if (writes.some((w) => w.kind === 'channel' && failing.has(w.record.channelId)))
        throw Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' });
      return inner.commit(writes);
    },
  };
}
