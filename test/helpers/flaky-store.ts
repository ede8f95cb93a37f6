import { fileChannelStore, type ChannelStore } from '@trickle/client';
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

/**
 * A device's file channel store in `dir` whose saves throw EIO (as a failing disk would) while `failing.on` is set;
 * loads and lists read the files as they are.
 */
export function flakyDeviceStore(dir: string): { store: ChannelStore; failing: { on: boolean } } {
  const failing = { on: false };
  const inner = fileChannelStore(dir);
  const store: ChannelStore = {
    load: (id) => inner.load(id),
    list: () => inner.list(),
    close: () => inner.close?.() ?? Promise.resolve(),
    async save(record) {
      if (failing.on) throw Object.assign(new Error('EIO: i/o error'), { code: 'EIO' });
      return inner.save(record);
    },
  };
  return { store, failing };
}
