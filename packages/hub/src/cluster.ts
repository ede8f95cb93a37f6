import { channelIdOf } from '@trickle/protocol/eip712';
import { TrickleError } from '@trickle/protocol/errors';
import type { Message } from '@trickle/protocol/codec';
import type { Address, ChannelId } from '@trickle/protocol/types';
import type { ChannelLeases } from './leases.js';
import type { ChannelRecord } from './store/types.js';

/** What the cluster gate needs of the channel table (a narrow view: it reloads records, it never changes rules). */
export interface ClusterChannels {
  /** Put records (fresh from the store) in the table, replacing what it held for those channels. */
  restore(records: readonly ChannelRecord[]): void;
  channelsOf(device: Address): ChannelId[];
  get(channelId: ChannelId): ChannelRecord | undefined;
}

/** Options of {@link createClusterGate}. */
export interface ClusterGateOptions {
  readonly leases: ChannelLeases;
  readonly channels: ClusterChannels;
  /** How long a device's first frames wait for another process's lease on its channels to lapse. */
  readonly waitMs: number;
  /** Close a device's connection (its lease moved to another process, or could not be taken): it reconnects. */
  readonly closeDevice: (device: Address, reason: string) => void;
  /**
   * Bring a channel taken over from another process up to date with the chain (a deposit or close its chain
   * follower recorded nowhere, since only the holder records on-chain facts). Called after the record is reloaded.
   */
  readonly refresh?: ((channelId: ChannelId) => Promise<void>) | undefined;
  readonly log: (msg: string, fields: Record<string, unknown>) => void;
}

/** Serves a device's channels in this process only while it holds their leases. */
export interface ClusterGate {
  /** A device authenticated here: take the leases of all its stored channels, then call `then`. */
  deviceConnected(device: Address, then: () => void): void;
  /**
   * The device's connection here closed: give up its channels' leases, so the process it reconnects to takes them at
   * once instead of after the lease time. A write still in flight for them is refused (the device resends it).
   */
  deviceDisconnected(device: Address): void;
  /** Resolves once the channel a frame is about is held here (a new channel: leased here before it is admitted). */
  ready(device: Address, msg: Message): Promise<void>;
  /**
   * Hold a channel whose device is connected here, taking its lease back when it ran out here (the database was
   * unreachable) and nothing has asked for it since: a credit the hub owes an idle device must not wait for the
   * device's next frame. @returns whether the lease is held now: false when the device is not connected here
   * @throws TrickleError when the lease could not be taken (held elsewhere, the database still down): try again later
   */
  hold(channelId: ChannelId): Promise<boolean>;
  /** For `/health`. */
  health(): { leases: number; database: 'ok' | 'unreachable' };
  /** Give up every lease (after the last commit): the devices' next process takes over without waiting. */
  close(): Promise<void>;
}

/**
 * The hub's side of a cluster on one PostgreSQL database (see `ChannelLeases`). A device may connect to any
 * process; that process takes over its channels: at once when their lease is free or released, after it lapses
 * when the previous owner died or was partitioned (at most the lease time). The alternative, a typed redirect to
 * the owner's URL, was not taken: it needs every client to know the cluster's URLs and to follow redirects, and a
 * redirect to a dead owner still has to wait for the lease; with takeover a plain load balancer in front of the
 * processes is enough, and the client needs no change. A process gives up a channel's lease when it shuts down
 * (release), when the device disconnects (release), or when renewal finds another owner (it then closes that device's
 * connection so it reconnects).
 *
 * A record is reloaded from the store whenever its lease is taken anew, so a process never serves a channel from
 * a copy older than the last commit of its previous owner.
 */
export function createClusterGate(o: ClusterGateOptions): ClusterGate {
  const taking = new Map<ChannelId, Promise<void>>();
  const devices = new Map<Address, Promise<void>>();
  /**
   * Devices connected here. A process holds leases only for them: a frame read before its connection closed (and
   * handled after, say after a pause) must not take a lease back that nobody here will renew for a reason, and that
   * would keep the device's next process waiting.
   */
  const connected = new Set<Address>();

  const take = (channelId: ChannelId, device: Address): Promise<void> => {
    if (o.leases.epochOf(channelId) !== undefined) return Promise.resolve();
    let p = taking.get(channelId);
    if (!p) {
      p = o.leases
        .acquire(channelId, device, o.waitMs)
        .then(async (r) => {
          if (!connected.has(device)) {
            await o.leases.release([channelId]); // the device left while the lease was being taken
            throw new TrickleError('DISCONNECTED', 'the device disconnected from this hub process');
          }
          if (!r.held && r.record) {
            o.channels.restore([r.record]);
            await o.refresh?.(channelId).catch((e: unknown) => {
              // Served from the stored record meanwhile; the chain follower records what comes next.
              o.log('cannot read a taken-over channel from the chain', {
                channelId,
                error: e instanceof Error ? e.message : String(e),
              });
            });
          }
        })
        .finally(() => taking.delete(channelId));
      taking.set(channelId, p);
    }
    return p;
  };

  /**
   * Whether the channel a frame names is the device's own (a new one: the `open` names this device). Only then is its
   * lease taken here: a frame naming another device's channel (answered WRONG_CHANNEL) took that channel's lease from
   * its holder — or, once free, took it here and renewed it for as long as this process ran, keeping the channel from
   * its own device on every other process.
   */
  const isDevices = async (channelId: ChannelId, device: Address, msg: Message): Promise<boolean> => {
    if (msg.t === 'open') return msg.params.device === device;
    const known = o.channels.get(channelId);
    if (known) return known.params.device === device;
    return (await o.leases.channelsOfDevice(device)).includes(channelId);
  };

  // A connected device's channel whose lease ran out here (the database was unreachable for longer than its term) is
  // taken back by the device's next frame; a device that sends none because it only receives (routed payments, round
  // credits) would stay unreachable — "offline" to every payer — until it did. Taken back here every quarter lease.
  const retake = setInterval(() => {
    if (!o.leases.databaseReachable()) return;
    for (const device of connected)
      for (const id of o.channels.channelsOf(device)) {
        if (o.leases.epochOf(id) !== undefined || taking.has(id)) continue;
        take(id, device).catch((e: unknown) =>
          o.log('cannot take back the lease of a connected device’s channel yet', {
            device,
            channelId: id,
            error: e instanceof Error ? e.message : String(e),
          }),
        );
      }
  }, o.leases.leaseMs / 4);
  retake.unref();

  o.leases.onLost((ids) => {
    const owners = new Set<Address>();
    for (const id of ids) {
      const d = o.channels.get(id)?.params.device;
      if (d) owners.add(d);
    }
    o.log('channel leases lost to another hub process', { channels: ids.length, devices: owners.size });
    for (const d of owners) {
      devices.delete(d);
      o.closeDevice(d, 'channel served by another hub process');
    }
  });

  return {
    deviceConnected(device, then) {
      connected.add(device);
      const p = (async () => {
        const ids = new Set([...(await o.leases.channelsOfDevice(device)), ...o.channels.channelsOf(device)]);
        await Promise.all([...ids].map((id) => take(id, device)));
      })();
      devices.set(device, p);
      p.then(then, (e: unknown) => {
        // Its channels are still held elsewhere (or the database is down): the device retries by reconnecting.
        o.log('cannot take the leases of a device’s channels', {
          device,
          error: e instanceof Error ? e.message : String(e),
        });
        if (devices.get(device) === p) devices.delete(device);
        o.closeDevice(device, 'channels not available on this hub process yet');
      });
    },
    deviceDisconnected(device) {
      connected.delete(device);
      devices.delete(device);
      const ids = o.channels.channelsOf(device).filter((id) => o.leases.epochOf(id) !== undefined);
      if (ids.length === 0) return;
      o.leases.release(ids).catch((e: unknown) => {
        // Not released: the leases lapse by themselves after the lease time, and the next process takes them then.
        o.log('cannot release the leases of a disconnected device', {
          device,
          error: e instanceof Error ? e.message : String(e),
        });
      });
    },
    async ready(device, msg) {
      if (!connected.has(device))
        throw new TrickleError('DISCONNECTED', 'the device disconnected from this hub process');
      await devices.get(device);
      const id = channelOf(msg);
      if (id !== undefined && (await isDevices(id, device, msg))) await take(id, device);
    },
    async hold(channelId) {
      if (o.leases.epochOf(channelId) !== undefined) return true;
      const device = o.channels.get(channelId)?.params.device;
      if (device === undefined || !connected.has(device)) return false;
      await take(channelId, device);
      return o.leases.epochOf(channelId) !== undefined;
    },
    health: () => ({ leases: o.leases.held(), database: o.leases.databaseReachable() ? 'ok' : 'unreachable' }),
    async close() {
      clearInterval(retake);
      await o.leases.release(o.leases.heldChannels());
    },
  };
}

function channelOf(msg: Message): ChannelId | undefined {
  switch (msg.t) {
    case 'open':
      return channelIdOf(msg.params);
    case 'update':
    case 'close':
      return msg.state.channelId;
    case 'ack':
    case 'reject':
    case 'sync':
    case 'claim':
      return msg.channelId;
    default:
      return undefined;
  }
}

/**
 * The channel table as a cluster process's chain follower must see it: only the channels whose lease this process
 * holds. Recording an on-chain fact is a channel write, which the fencing refuses for any other channel; the
 * follower waits for each record, so one refused write would stop it for every channel. The holder of a channel
 * records its facts, and a process taking a channel over reads them from the chain (`refresh`).
 */
export function heldChannelsView<T extends object>(channels: T, leases: ChannelLeases): T {
  return new Proxy(channels, {
    get(target, prop) {
      if (prop === 'get') {
        const get = (target as unknown as ClusterChannels).get.bind(target);
        return (channelId: ChannelId) => (leases.epochOf(channelId) === undefined ? undefined : get(channelId));
      }
      const v: unknown = Reflect.get(target, prop, target);
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
}
