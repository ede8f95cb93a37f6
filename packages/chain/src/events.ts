/**
 * Typed adjudicator events: decode receipts' logs ({@link parseLogs}) or query a block range ({@link queryEvents}).
 * Field names are the Solidity event parameters'.
 */
import { Interface, type Log, type Provider } from 'ethers';
import type { Address, Bytes32, ChannelId, Hex } from '@trickle/protocol/types';
import { AdjudicatorArtifact } from './generated/artifacts.js';

/** Where an event was emitted. */
export interface EventLocation {
  readonly address: Address;
  readonly blockNumber: number;
  readonly blockHash: Hex;
  readonly transactionHash: Hex;
  readonly logIndex: number;
}

/** `open`: `opener` (device or hub) deposited `deposit` (as credited). */
export interface ChannelOpenedEvent {
  readonly name: 'ChannelOpened';
  readonly channelId: ChannelId;
  readonly device: Address;
  readonly hub: Address;
  readonly token: Address;
  readonly challengeDuration: bigint;
  readonly opener: Address;
  readonly deposit: bigint;
  readonly log: EventLocation;
}

/** A top-up: `amount` credited, `total` is the participant's deposit now. */
export interface DepositedEvent {
  readonly name: 'Deposited';
  readonly channelId: ChannelId;
  readonly participant: Address;
  readonly amount: bigint;
  readonly total: bigint;
  readonly log: EventLocation;
}

/** The registration fields a `ForceClosed` / `Challenged` event carries (the device and its deposit stay in storage). */
interface RegisteredEventFields {
  readonly channelId: ChannelId;
  /** Who sent the force close or challenge. */
  readonly by: Address;
  readonly token: Address;
  readonly hub: Address;
  readonly depositHub: bigint;
  readonly version: bigint;
  /** Unix seconds from which `settle` is accepted and `challenge` is not. */
  readonly deadline: bigint;
  /** Payouts of the registered state before its pending locks. */
  readonly payoutDevice: bigint;
  readonly payoutHub: bigint;
  readonly locksRoot: Bytes32;
  readonly log: EventLocation;
}

/** A force close registered a state (or the zero state); challengeable until `deadline`. */
export interface ForceClosedEvent extends RegisteredEventFields {
  readonly name: 'ForceClosed';
}

/** A newer state replaced the registered one (deadline unchanged). */
export interface ChallengedEvent extends RegisteredEventFields {
  readonly name: 'Challenged';
}

/** The preimage of `hash` became known on-chain at `timestamp` (first reveal only). */
export interface RevealedEvent {
  readonly name: 'Revealed';
  readonly hash: Bytes32;
  readonly preimage: Bytes32;
  readonly timestamp: bigint;
  readonly log: EventLocation;
}

/** The channel closed with these payouts (pushed, or credited to `owed` — see {@link PayoutDeferredEvent}). */
export interface ClosedEvent {
  readonly name: 'Closed';
  readonly channelId: ChannelId;
  readonly version: bigint;
  readonly devicePayout: bigint;
  readonly hubPayout: bigint;
  readonly log: EventLocation;
}

/** A payout push failed; `recipient` can pull `amount` with `withdraw`. */
export interface PayoutDeferredEvent {
  readonly name: 'PayoutDeferred';
  readonly channelId: ChannelId;
  readonly token: Address;
  readonly recipient: Address;
  readonly amount: bigint;
  readonly log: EventLocation;
}

/** `account` pulled what it was owed, sending it to `to`. */
export interface WithdrawnEvent {
  readonly name: 'Withdrawn';
  readonly token: Address;
  readonly account: Address;
  readonly to: Address;
  readonly amount: bigint;
  readonly log: EventLocation;
}

/** Any adjudicator event; discriminate on `name`. */
export type AdjudicatorEvent =
  | ChannelOpenedEvent
  | DepositedEvent
  | ForceClosedEvent
  | ChallengedEvent
  | RevealedEvent
  | ClosedEvent
  | PayoutDeferredEvent
  | WithdrawnEvent;

/** Names of the adjudicator's events. */
export type AdjudicatorEventName = AdjudicatorEvent['name'];

/** The adjudicator's ABI as an ethers Interface (shared, immutable). */
export const adjudicatorInterface: Interface = new Interface(AdjudicatorArtifact.abi);

/**
 * Decode the adjudicator events among `logs`; logs of other contracts (and of other addresses when `address` is
 * given) are skipped.
 * @param logs - e.g. `receipt.logs` or the result of `provider.getLogs`
 * @param address - only logs emitted by this adjudicator, if given
 * @returns the events, in the order given
 * @example
 * ```ts
 * const closed = parseLogs(receipt.logs, adjudicator.address).filter((e) => e.name === 'Closed');
 * ```
 */
export function parseLogs(logs: readonly Log[], address?: string): AdjudicatorEvent[] {
  const want = address?.toLowerCase();
  const out: AdjudicatorEvent[] = [];
  for (const log of logs) {
    if (want !== undefined && log.address.toLowerCase() !== want) continue;
    let parsed;
    try {
      parsed = adjudicatorInterface.parseLog({ topics: [...log.topics], data: log.data });
    } catch {
      continue;
    }
    if (parsed === null) continue;
    const event: Record<string, unknown> = { name: parsed.name };
    parsed.fragment.inputs.forEach((input, i) => {
      event[input.name] = parsed.args[i];
    });
    if (parsed.name === 'ForceClosed' || parsed.name === 'Challenged') {
      event['locksRoot'] = (event['locksRoot'] as string).toLowerCase();
    } else if (parsed.name === 'Revealed') {
      event['hash'] = (event['hash'] as string).toLowerCase();
      event['preimage'] = (event['preimage'] as string).toLowerCase();
    }
    event['log'] = {
      address: log.address as Address,
      blockNumber: log.blockNumber,
      blockHash: log.blockHash as Hex,
      transactionHash: log.transactionHash as Hex,
      logIndex: log.index,
    } satisfies EventLocation;
    out.push(event as unknown as AdjudicatorEvent);
  }
  return out;
}

/** Narrows a query. */
export interface EventFilter {
  /** Only events of this channel (every event but `Withdrawn` and `Revealed` carries one). */
  readonly channelId?: ChannelId | undefined;
  /** Only these event kinds. */
  readonly names?: readonly AdjudicatorEventName[] | undefined;
}

/**
 * Adjudicator events in a block range (inclusive), through `eth_getLogs`.
 * @param provider - any ethers provider
 * @param address - the adjudicator
 * @param fromBlock - first block
 * @param toBlock - last block, or `'latest'`
 * @param filter - optional channel / event-name filter, applied by the node
 * @returns the events in chain order
 * @example
 * ```ts
 * const events = await queryEvents(provider, adjudicator.address, 0, 'latest', { channelId });
 * ```
 */
export async function queryEvents(
  provider: Provider,
  address: Address,
  fromBlock: number | bigint,
  toBlock: number | bigint | 'latest',
  filter: EventFilter = {},
): Promise<AdjudicatorEvent[]> {
  const topic0 =
    filter.names === undefined ? null : filter.names.map((n) => adjudicatorInterface.getEvent(n)!.topicHash);
  const topics: (string | string[] | null)[] = [topic0];
  if (filter.channelId !== undefined) topics.push(filter.channelId);
  const logs = await provider.getLogs({ address, fromBlock, toBlock, topics });
  return parseLogs(logs, address);
}

/**
 * The events of one kind from a list, typed.
 * @example
 * ```ts
 * const [opened] = eventsNamed(result.events, 'ChannelOpened');
 * ```
 */
export function eventsNamed<N extends AdjudicatorEventName>(
  events: readonly AdjudicatorEvent[],
  name: N,
): Extract<AdjudicatorEvent, { name: N }>[] {
  return events.filter((e): e is Extract<AdjudicatorEvent, { name: N }> => e.name === name);
}
