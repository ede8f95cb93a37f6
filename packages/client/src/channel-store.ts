// A device's channel records and the store interface, with no I/O: what the client core (and a browser bundle)
// needs. The durable file store, on node:fs, is in store.ts.
import { TrickleError } from '@trickle/protocol/errors';
import type { MarketOrderStore } from './market-orders.js';
import { parseJson, stringifyJson } from '@trickle/protocol/json';
import type { EquivocationEvidence } from '@trickle/protocol/engine';
import type { Bytes32, ChannelId, ChannelParams, Funding, SignedState, State } from '@trickle/protocol/types';
import type { Lock } from '@trickle/protocol/locks';
import { memoryPurchases, type PurchaseStore } from './purchases.js';

/** What a device keeps about one channel. The CLI and the watchtower read the same records. */
export interface DeviceChannelRecord {
  readonly params: ChannelParams;
  readonly channelId: ChannelId;
  /** Deposits seen on-chain for each side. */
  readonly funding: Funding;
  /** Latest state both parties signed (the unsigned zero state before any update). */
  readonly latest: SignedState;
  /** Highest version this device has signed: it never signs two different states at one version. */
  readonly signedVersion: bigint;
  /** Whether a cooperative or forced close was started. */
  readonly closing?: 'cooperative' | 'force' | undefined;
  /** The pending locks (conditional payments) of `latest.state`, in committed order; absent when none. */
  readonly locks?: readonly Lock[] | undefined;
  /**
   * Preimages this device showed (or is about to show) for locks the hub pays it, durable before the claim leaves the
   * device: after a restart it claims again, refuses the lock's return (`LOCK_CLAIMED`), and it or a watchtower
   * reading this record reveals the preimage on-chain if the claim is not countersigned in time. Kept while the lock
   * is pending in `locks`; absent when none.
   */
  readonly preimages?: readonly { readonly hash: Bytes32; readonly preimage: Bytes32 }[] | undefined;
  /**
   * Preimages the hub showed to claim locks this device paid (the key a buyer paid for), oldest first: written with
   * the state this device signs to pay the claim, so after a restart `ClientChannel.preimageOf` still gives them. The
   * newest `PAID_PREIMAGES_KEPT` (32) are kept; absent when none.
   */
  readonly paidPreimages?: readonly { readonly hash: Bytes32; readonly preimage: Bytes32 }[] | undefined;
  /**
   * A state this device signed that the hub refused and may still hold, paying the hub more than `latest` (see
   * `ClientChannel.unvoided`): the hub could register it on-chain, or answer a force close with it. Written when the
   * refusal arrives, before its payment is reported failed; dropped once a state both signed above it is `latest`
   * (the device voids it by itself once the hub countersigns again). With several refused and none void yet, the one
   * paying the hub the most (the one the hub would register), which may be older than the newest. Absent when none.
   */
  readonly refused?: State | undefined;
  /**
   * Give-backs this device signed (a lock the hub pays it left out, `channel.giveBack`) that no state both signed has
   * reached yet: the lock's hash and the version of the state without it. The hub may hold that state (countersigned,
   * refused or never answered) and registered it returns the lock to the hub whatever is revealed on-chain, so the
   * device shows no preimage of that lock (`claim` refused `INVALID_ARGUMENT`) until `latest` is at or above the
   * version. Written before the give-back leaves the device; dropped once `latest` reaches it. Absent when none.
   */
  readonly givenBack?: readonly { readonly hash: Bytes32; readonly version: bigint }[] | undefined;
  /**
   * Equivocation evidence: a state the hub signed at the version of `latest` that differs from it (refused), kept with
   * the state held then (DESIGN.md: "refuse the second, keep both as evidence"). Bounded by the engine's
   * `maxEvidence`; absent when none.
   */
  readonly evidence?: readonly EquivocationEvidence[] | undefined;
}

/**
 * Durable storage for a device's channels. `save` resolves only when the record is durable: the client reports a
 * payment as done, or delivers what was paid for, only after it.
 */
export interface ChannelStore {
  /**
   * The device's market orders and escrows not settled yet (the market session writes each before it relies on it, and
   * checks them after a restart). The file store keeps them in `<dir>/market.json`. Optional (the memory store has
   * none): without it they are kept in memory only, and after a restart the device cannot tell that the hub left one
   * out of its round.
   */
  readonly market?: MarketOrderStore | undefined;
  load(channelId: ChannelId): Promise<DeviceChannelRecord | undefined>;
  list(): Promise<DeviceChannelRecord[]>;
  save(record: DeviceChannelRecord): Promise<void>;
  /**
   * Release what the store holds open (the file store caches one open file per recently saved channel). Waits for
   * saves in flight first. The store stays usable: a later `save` opens its file again. Optional: stores holding
   * nothing open may omit it.
   */
  close?(): Promise<void>;
  /**
   * Take the store for this process's one writer until `close()` (the device client calls it when it connects): two
   * device processes on one store would each sign on top of the other's states, and each believe its payments done.
   * The file store refuses a store held by another live process with STORE_FAILURE (`details.reason: 'IN_USE'`,
   * `details.pid`), before anything is read or signed; a holder that died (SIGKILL) leaves a lock that is taken
   * over. Optional: stores of one process (memory, IndexedDB) may omit it.
   */
  acquire?(): Promise<void>;
  /**
   * The device's receipt purchases (`payForReceipt` records each before paying; `receiptFor` reads them after a
   * restart). The file store keeps them in `<dir>/receipts/`. Optional: without it a receipt can be fetched again
   * only by the client object that bought it.
   */
  readonly purchases?: PurchaseStore | undefined;
}

/** Serialise a record as the store and backups write it (JSON, bigints as decimal strings). */
export function encodeChannelRecord(record: DeviceChannelRecord): string {
  return `${stringifyJson(record, 2)}\n`;
}

/** Parse a record written by {@link encodeChannelRecord}. @throws TrickleError('MALFORMED') */
export function decodeChannelRecord(text: string): DeviceChannelRecord {
  try {
    const r = parseJson<DeviceChannelRecord>(text);
    if (!r || typeof r.channelId !== 'string' || !r.latest?.state || !r.params) throw new Error('not a channel record');
    return r;
  } catch (cause) {
    throw new TrickleError('MALFORMED', 'not a Trickle channel record', { cause });
  }
}

/** An in-memory store, for tests and short-lived sessions: nothing survives the process (a browser app brings its own durable store, e.g. on IndexedDB). */
export function memoryChannelStore(): ChannelStore {
  const m = new Map<ChannelId, string>();
  return {
    async load(id) {
      const t = m.get(id);
      return t === undefined ? undefined : decodeChannelRecord(t);
    },
    async list() {
      return [...m.values()].map(decodeChannelRecord);
    },
    async save(record) {
      m.set(record.channelId, encodeChannelRecord(record));
    },
    purchases: memoryPurchases(),
  };
}
