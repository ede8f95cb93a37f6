import { Contract, type ContractRunner, type Provider } from 'ethers';
import { AdjudicatorArtifact } from '@trickle/chain/generated/artifacts';
import { getChannel } from '@trickle/chain/actions/getChannel';
import { challenge } from '@trickle/chain/actions/challenge';
import { queryEvents } from '@trickle/chain/events';
import type { Address, ChannelId, SignedState } from '@trickle/protocol/types';
import type { Logger } from 'pino';
import type { ChannelTable, OnChainChannel } from './channels.js';
import type { Committer } from './committer.js';
import type { HubStore } from './store/types.js';

/** What the hub needs from the chain. */
export interface HubChain {
  readonly chainId: bigint;
  readonly adjudicator: Address;
  /** The channel as the adjudicator records it, or undefined when the id was never opened. */
  readChannel(channelId: ChannelId): Promise<OnChainChannel | undefined>;
  /** Adjudicator events after `fromBlock` up to the confirmed head. */
  poll(fromBlock: number): Promise<{ toBlock: number; events: ChainChange[] }>;
  /** Answer a stale force close with a newer state. */
  challenge(signed: SignedState): Promise<void>;
}

/** A change the hub reacts to. */
export type ChainChange =
  | { readonly kind: 'deposit'; readonly channelId: ChannelId; readonly participant: Address; readonly total: bigint }
  | { readonly kind: 'forceClosed'; readonly channelId: ChannelId; readonly version: bigint; readonly deadline: bigint; readonly by: Address }
  | { readonly kind: 'challenged'; readonly channelId: ChannelId; readonly version: bigint }
  | { readonly kind: 'closed'; readonly channelId: ChannelId };

/** Options of {@link adjudicatorHubChain}. */
export interface AdjudicatorHubChainOptions {
  readonly provider: Provider;
  readonly chainId: bigint;
  readonly adjudicator: Address;
  /** Sends the hub's transactions (challenges); funded with gas. */
  readonly runner: ContractRunner;
  /** Blocks to wait before acting on an event (0 on a local chain). */
  readonly confirmations?: number;
}

/** The {@link HubChain} on a deployed adjudicator, through any ethers provider. */
export function adjudicatorHubChain(o: AdjudicatorHubChainOptions): HubChain {
  const view = { address: o.adjudicator, contract: new Contract(o.adjudicator, AdjudicatorArtifact.abi, o.provider) };
  const writer = { address: o.adjudicator, contract: new Contract(o.adjudicator, AdjudicatorArtifact.abi, o.runner) };
  const confirmations = o.confirmations ?? 0;
  return {
    chainId: o.chainId,
    adjudicator: o.adjudicator,
    async readChannel(channelId) {
      const c = await getChannel(view, channelId);
      if (c.status === 'none') return undefined;
      return { status: c.status === 'open' ? 'open' : c.status, device: c.device, hub: c.hub, token: c.token, funding: { device: c.depositDevice, hub: c.depositHub } };
    },
    async poll(fromBlock) {
      const head = (await o.provider.getBlockNumber()) - confirmations;
      if (head < fromBlock) return { toBlock: fromBlock - 1, events: [] };
      const events: ChainChange[] = [];
      for (const e of await queryEvents(o.provider, o.adjudicator, fromBlock, head)) {
        if (e.name === 'Deposited') events.push({ kind: 'deposit', channelId: e.channelId, participant: e.participant, total: e.total });
        else if (e.name === 'ForceClosed') events.push({ kind: 'forceClosed', channelId: e.channelId, version: e.version, deadline: e.deadline, by: e.by });
        else if (e.name === 'Challenged') events.push({ kind: 'challenged', channelId: e.channelId, version: e.version });
        else if (e.name === 'Closed') events.push({ kind: 'closed', channelId: e.channelId });
      }
      return { toBlock: head, events };
    },
    async challenge(signed) {
      await challenge(writer, signed);
    },
  };
}

/** What the follower changes and reports. */
export interface ChainFollowerDeps {
  readonly chain: HubChain;
  readonly channels: ChannelTable;
  readonly committer: Committer;
  readonly store: HubStore;
  /** The hub's own address: force closes it sent itself are not challenged. */
  readonly hub: Address;
  readonly pollMs: number;
  readonly logger: Logger;
}

/** A running follower of the adjudicator. */
export interface ChainFollower {
  /** Last block processed. */
  readonly lastBlock: number;
  stop(): Promise<void>;
}

/**
 * Follow the adjudicator from the last processed block (persisted): record deposits and top-ups, mark channels
 * closing/closed, and answer a stale force close of one of the hub's channels with the hub's latest state.
 */
export async function startChainFollower(d: ChainFollowerDeps): Promise<ChainFollower> {
  let lastBlock = Number((await d.store.getMeta('lastBlock')) ?? '-1');
  let stopped = false;
  const apply = async (e: ChainChange) => {
    const record = d.channels.get(e.channelId);
    if (!record) return;
    switch (e.kind) {
      case 'deposit': {
        const funding = e.participant === record.params.device ? { ...record.funding, device: e.total } : { ...record.funding, hub: e.total };
        await d.channels.onChain(e.channelId, { funding });
        break;
      }
      case 'forceClosed':
      case 'challenged': {
        await d.channels.onChain(e.channelId, { status: 'closing' });
        const latest = d.channels.get(e.channelId)!.latest;
        // A force close the hub sent itself is not challenged by it (an operator closing on purpose).
        const own = e.kind === 'forceClosed' && e.by === d.hub;
        if (!own && latest.state.version > e.version && latest.deviceSig && latest.hubSig) {
          d.logger.warn({ channelId: e.channelId, registered: String(e.version), latest: String(latest.state.version) }, 'stale force close: challenging');
          await d.chain.challenge(latest).catch((err: unknown) => d.logger.error({ err }, 'challenge failed'));
        }
        break;
      }
      case 'closed':
        await d.channels.onChain(e.channelId, { status: 'closed' });
        break;
    }
  };
  const loop = (async () => {
    while (!stopped) {
      try {
        const { toBlock, events } = await d.chain.poll(lastBlock + 1);
        for (const e of events) await apply(e);
        if (toBlock > lastBlock) {
          lastBlock = toBlock;
          await d.committer.write([{ kind: 'meta', key: 'lastBlock', value: String(lastBlock) }]);
        }
      } catch (e) {
        d.logger.warn({ err: e }, 'chain poll failed');
      }
      await new Promise((r) => setTimeout(r, d.pollMs));
    }
  })();
  return {
    get lastBlock() {
      return lastBlock;
    },
    async stop() {
      stopped = true;
      await loop;
    },
  };
}
