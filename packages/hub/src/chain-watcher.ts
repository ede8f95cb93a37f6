import { Contract, type ContractRunner, type Provider, type Signer as EthersSigner } from 'ethers';
import { challengeWith } from '@trickle/protocol/engine';
import { TrickleError } from '@trickle/protocol/errors';
import { AdjudicatorArtifact } from '@trickle/chain/generated/artifacts';
import { getChannel } from '@trickle/chain/actions/getChannel';
import { challenge } from '@trickle/chain/actions/challenge';
import { deposit } from '@trickle/chain/actions/deposit';
import { getRevealedAt, reveal } from '@trickle/chain/actions/reveal';
import { allowance, approve } from '@trickle/chain/erc20';
import { decodeChainError } from '@trickle/chain/errors';
import { queryEvents } from '@trickle/chain/events';
import type { ReplaceOptions } from '@trickle/chain/types';
import { toAddressInput, toChainId, type AddressInput, type ChainIdInput } from '@trickle/protocol/input';
import type { Lock } from '@trickle/protocol/locks';
import type { Address, Bytes32, ChannelId, SignedState } from '@trickle/protocol/types';
import type { Logger } from 'pino';
import type { ChannelTable, OnChainChannel } from './channels.js';
import type { Committer } from './committer.js';
import type { HubStore } from './store/types.js';

/** What the hub needs from the chain. */
export interface HubChain {
  readonly chainId: bigint;
  readonly adjudicator: Address;
  /**
   * The channel as the adjudicator records it at the confirmed head (`confirmations` blocks behind the latest, as the
   * follower acts), or undefined when the id was not opened by then.
   */
  readChannel(channelId: ChannelId): Promise<OnChainChannel | undefined>;
  /**
   * Adjudicator events from `fromBlock` up to `toBlock`: the confirmed head, or less when the range is longer than one
   * read takes (then `behind` is true and the follower reads on at once); `reveals`: lock preimages that became known
   * on-chain meanwhile (optional: a chain without it never tells the hub of one).
   */
  poll(
    fromBlock: number,
  ): Promise<{ toBlock: number; events: ChainChange[]; reveals?: readonly ChainReveal[]; behind?: boolean }>;
  /**
   * The highest block the follower may read now (the head less the confirmations): where a hub whose store has no
   * cursor and no channel starts (optional: without it, such a hub reads from block 0).
   */
  head?(): Promise<number>;
  /** Answer a stale force close with a newer state (and its pending locks in committed order, if any). */
  challenge(signed: SignedState, locks?: readonly Lock[]): Promise<void>;
  /**
   * Check that the adjudicator is deployed on this chain (the hub refuses to start otherwise).
   * @throws TrickleError('NO_CONTRACT') when there is no code at its address
   */
  checkDeployed?(): Promise<void>;
  /**
   * Add `amount` of `token` to the hub's deposit in an open channel (its liquidity policy); resolves once mined.
   * @returns the hub's deposit in the channel now
   */
  deposit?(channelId: ChannelId, token: Address, amount: bigint): Promise<bigint>;
  /**
   * Record a lock preimage in the adjudicator's registry (the hub's upstream claim of a conditional route whose payer
   * did not take the claim before the expiry drew near); resolves once mined.
   * @returns when the preimage first became known on-chain (block timestamp, seconds)
   */
  reveal?(preimage: Bytes32): Promise<bigint>;
  /**
   * When the preimage of `hash` was first revealed on-chain (block timestamp, seconds; 0n if never): a device's claim
   * of the hub's lock that reaches the hub after the expiry is taken if it was revealed by then.
   */
  revealedAt?(hash: Bytes32): Promise<bigint>;
  /** The latest block's timestamp (seconds): the clock locks expire by on-chain. */
  chainTime?(): Promise<bigint>;
  /**
   * The hub is stopping: sends still being re-priced (a challenge, a reveal) give up at their next poll, their last
   * copy kept (and saved where a stuck-copy store is set) for the next process to replace; nothing is sent after it.
   */
  close?(): void;
}

/** A lock's preimage recorded in the adjudicator's registry (`Revealed`), at block time `at`. */
export interface ChainReveal {
  readonly hash: Bytes32;
  readonly preimage: Bytes32;
  readonly at: bigint;
}

/** A change the hub reacts to. */
export type ChainChange =
  | { readonly kind: 'deposit'; readonly channelId: ChannelId; readonly participant: Address; readonly total: bigint }
  | {
      readonly kind: 'forceClosed';
      readonly channelId: ChannelId;
      readonly version: bigint;
      readonly deadline: bigint;
      readonly by: Address;
      /** The block it was mined in: the follower reads it again after a restart while its challenge is due. */
      readonly block?: number | undefined;
    }
  | {
      readonly kind: 'challenged';
      readonly channelId: ChannelId;
      readonly version: bigint;
      /** The block it was mined in (see `forceClosed`). */
      readonly block?: number | undefined;
    }
  /** `version`: the state the channel closed with (a hub-signed credit the device refused is settled by it). */
  | { readonly kind: 'closed'; readonly channelId: ChannelId; readonly version?: bigint | undefined };

/** Options of {@link adjudicatorHubChain}. */
export interface AdjudicatorHubChainOptions {
  readonly provider: Provider;
  /** The chain id, a number or a bigint. */
  readonly chainId: ChainIdInput;
  /** The adjudicator (any `0x…` literal; its EIP-55 checksum is checked). */
  readonly adjudicator: AddressInput;
  /** Sends the hub's transactions (challenges, liquidity deposits); funded with gas (and tokens for deposits). */
  readonly runner: ContractRunner;
  /** Blocks to wait before acting on an event (0 on a local chain). */
  readonly confirmations?: number;
  /**
   * Most blocks one `eth_getLogs` spans (default 2,000): hosted endpoints refuse longer ranges, and a hub that was
   * down for a day reads what it missed in several polls instead of failing every poll.
   */
  readonly maxBlockRange?: number;
  /**
   * Replace-by-fee of the hub's dispute sends (challenges, reveals): one not mined within 2 blocks or 15 s is sent
   * again with the same nonce and fees raised 20%, up to a cap (default 10 times the first copy's `maxFeePerGas`); a
   * challenge stops at its registration's deadline. See `ReplaceOptions` of `@trickle/chain`. On by default;
   * `false` sends once and waits.
   */
  readonly replace?: ReplaceOptions | false | undefined;
}

/**
 * The {@link HubChain} on a deployed adjudicator, through any ethers provider.
 * @throws TrickleError `INVALID_ARGUMENT` for a chain id that is not a positive integer or a malformed adjudicator
 */
export function adjudicatorHubChain(options: AdjudicatorHubChainOptions): HubChain {
  const o = {
    ...options,
    chainId: toChainId(options.chainId),
    adjudicator: toAddressInput(options.adjudicator, 'adjudicator'),
  };
  const view = { address: o.adjudicator, contract: new Contract(o.adjudicator, AdjudicatorArtifact.abi, o.provider) };
  const writer = { address: o.adjudicator, contract: new Contract(o.adjudicator, AdjudicatorArtifact.abi, o.runner) };
  const confirmations = o.confirmations ?? 0;
  // Aborted by close(): a send re-priced until its deadline would otherwise hold the hub's shutdown that long. Sends
  // made after it (this object given to a restarted hub) take a new one.
  let stopping = new AbortController();
  const replace = (): ReplaceOptions | undefined => {
    if (o.replace === false) return undefined;
    const own = o.replace?.signal;
    return { ...o.replace, signal: own ? AbortSignal.any([own, stopping.signal]) : stopping.signal };
  };
  /** The newest block the hub acts on: the head less the confirmations. */
  const confirmedHead = async () => (await o.provider.getBlockNumber()) - confirmations;
  const maxBlockRange = o.maxBlockRange ?? 2_000;
  if (!Number.isSafeInteger(maxBlockRange) || maxBlockRange < 1)
    throw new TrickleError('INVALID_ARGUMENT', 'maxBlockRange must be a positive integer', {
      details: { maxBlockRange },
    });
  return {
    chainId: o.chainId,
    adjudicator: o.adjudicator,
    async readChannel(channelId) {
      // As of the confirmed head, as the follower acts: a deposit a reorganisation could still remove is not funding.
      const blockTag = confirmations > 0 ? Math.max(0, await confirmedHead()) : undefined;
      const c = await getChannel(view, channelId, { blockTag });
      if (c.status === 'none') return undefined;
      return {
        status: c.status === 'open' ? 'open' : c.status,
        device: c.device,
        hub: c.hub,
        token: c.token,
        funding: { device: c.depositDevice, hub: c.depositHub },
        ...(c.status === 'closing' ? { version: c.version } : {}),
      };
    },
    head: confirmedHead,
    async poll(fromBlock) {
      const head = await confirmedHead();
      if (head < fromBlock) return { toBlock: fromBlock - 1, events: [] };
      const toBlock = Math.min(head, fromBlock + maxBlockRange - 1);
      const events: ChainChange[] = [];
      const reveals: ChainReveal[] = [];
      for (const e of await queryEvents(o.provider, o.adjudicator, fromBlock, toBlock)) {
        if (e.name === 'Revealed') reveals.push({ hash: e.hash, preimage: e.preimage, at: e.timestamp });
        else if (e.name === 'Deposited')
          events.push({ kind: 'deposit', channelId: e.channelId, participant: e.participant, total: e.total });
        else if (e.name === 'ForceClosed')
          events.push({
            kind: 'forceClosed',
            channelId: e.channelId,
            version: e.version,
            deadline: e.deadline,
            by: e.by,
            block: e.log.blockNumber,
          });
        else if (e.name === 'Challenged')
          events.push({ kind: 'challenged', channelId: e.channelId, version: e.version, block: e.log.blockNumber });
        else if (e.name === 'Closed') events.push({ kind: 'closed', channelId: e.channelId, version: e.version });
      }
      return { toBlock, events, reveals, behind: toBlock < head };
    },
    async challenge(signed, locks) {
      await challenge(writer, signed, { locks, replace: replace() });
    },
    async checkDeployed() {
      const code = await o.provider.getCode(o.adjudicator);
      if (code === '0x' || code === '') {
        throw new TrickleError(
          'NO_CONTRACT',
          'no contract at the adjudicator address on this chain: wrong address or wrong chain',
          {
            details: { adjudicator: o.adjudicator, chainId: o.chainId },
          },
        );
      }
    },
    async deposit(channelId, token, amount) {
      if (BigInt(token) !== 0n) {
        const signer = o.runner as EthersSigner;
        const owner = (await signer.getAddress()) as Address;
        if ((await allowance(o.provider, token, owner, o.adjudicator)) < amount)
          await approve(signer, token, o.adjudicator, amount);
      }
      return (await deposit(writer, channelId, amount, { token })).total;
    },
    async reveal(preimage) {
      return (await reveal(writer, preimage, { replace: replace() })).revealedAt;
    },
    revealedAt: (hash) => getRevealedAt(view, hash),
    async chainTime() {
      const block = await o.provider.getBlock('latest');
      if (!block) throw new TrickleError('INTERNAL', 'the chain returned no latest block');
      return BigInt(block.timestamp);
    },
    close() {
      stopping.abort();
      stopping = new AbortController();
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
  /** Sees every adjudicator event of one of the hub's channels as the follower takes it up, and each challenge the hub sent. */
  readonly onEvent?:
    | ((
        e: ChainChange | { readonly kind: 'challengeSent'; readonly channelId: ChannelId; readonly version: bigint },
      ) => void)
    | undefined;
  /**
   * A lock preimage became known on-chain (e.g. a payee that could not reach the hub revealed it to be paid at
   * settlement): the router claims the payer's lock with it. Awaited before the block cursor moves past it.
   */
  readonly onRevealed?: ((r: ChainReveal) => Promise<void>) | undefined;
}

/**
 * Reverts a challenge cannot get past by being sent again: the follower stops answering that force close.
 * (`ChannelNotClosing` is not one while the force close may still be running: see `mayStillBeClosing`.)
 */
const FINAL_CHALLENGE_REVERTS = new Set([
  'ChallengePeriodOver',
  'StaleVersion',
  'WrongSigner',
  'WrongLocks',
  'StateExceedsDeposits',
]);

/**
 * Tries of a challenge the node keeps refusing with `ChannelNotClosing` when the force close's deadline is not known:
 * about 1.5 minutes with the backoff, longer than the backends of a load-balanced endpoint stay blocks apart, and a
 * bound on answering a close a reorganisation removed.
 */
const NOT_CLOSING_TRIES = 8;

/** A running follower of the adjudicator. */
export interface ChainFollower {
  /** Last block processed. */
  readonly lastBlock: number;
  /** When (unix ms) the last poll of the chain that reached its head completed, or the follower started. */
  readonly lastPollAt: number;
  /**
   * A registration found on the chain rather than in the follower's events (a cluster process taking a channel over
   * reads it closing, its close made while no process held it): answered at the next poll when it is older than the
   * hub's latest state, and retried, as a stale force close the follower saw.
   */
  answer(channelId: ChannelId, registered: bigint): void;
  stop(): Promise<void>;
}

/**
 * Follow the adjudicator from the last processed block (persisted): record deposits and top-ups, mark channels
 * closing/closed, and answer a stale force close of one of the hub's channels with the hub's latest state.
 */
export async function startChainFollower(d: ChainFollowerDeps): Promise<ChainFollower> {
  const cursor = await d.store.getMeta('lastBlock');
  let lastBlock = Number(cursor ?? '-1');
  // A new hub (no cursor, no channel) has nothing on-chain to learn from before now: a channel becomes its own by an
  // open, which reads the channel's record from the chain. Reading from block 0 would take one read per maxBlockRange
  // blocks of the chain's history (hours on a long chain) before the first event of its own channels.
  const fresh = cursor === undefined && d.channels.size === 0 && d.chain.head !== undefined;
  if (fresh) {
    try {
      lastBlock = await d.chain.head!();
      d.logger.info({ block: lastBlock }, 'new hub store: reading adjudicator events from the chain head');
    } catch (err) {
      d.logger.warn({ err }, 'cannot read the chain head: reading adjudicator events from block 0');
    }
  }
  let lastPollAt = Date.now();
  let stopped = false;
  /** The wait between polls, and its end (called by stop()). */
  let sleep: ReturnType<typeof setTimeout> | undefined;
  let wake: () => void = () => {};
  // stop() does not wait for a fact a frozen channel holds until its store thaws (a full disk may outlast the
  // shutdown): the wait is abandoned, `lastBlock` stays before the event, and the next start reads it again.
  let onStop!: () => void;
  const stopping = new Promise<never>((_, reject) => {
    onStop = () => reject(new Error('chain follower stopped'));
  });
  stopping.catch(() => undefined); // observed by each race below; this one only keeps it from being unhandled
  const untilStopped = <T>(p: Promise<T>): Promise<T> => Promise.race([p, stopping]);
  /**
   * Stale force closes whose challenge did not go through (the hub's account out of gas, a node refusing the
   * transaction): tried again after each poll, with backoff, until one is mined, a registration at least as new or
   * the close makes it moot, or the chain refuses it for good (the challenge period is over). Given up after one
   * failure, the stale state would settle: a device could take back what it paid the hub. The stored block cursor
   * stays before the oldest one, so a restarted hub reads that registration again and answers it.
   */
  const unanswered = new Map<
    ChannelId,
    { registered: bigint; block: number | undefined; deadline: bigint | undefined; tries: number; nextAt: number }
  >();
  let stored = fresh ? Number.NaN : lastBlock; // a fresh start writes its cursor at the first poll
  /**
   * Whether a challenge the node refused with `ChannelNotClosing` is sent again. The follower saw the channel closing:
   * the node that read it open may be behind the one that served the event (a load-balanced endpoint), and given up
   * on, the cursor would move past the force close and its stale state settle. So, as the watchtower does, tried until
   * the force close's deadline by the chain's clock (a settle meanwhile ends it at its `closed` event). Where the
   * deadline is not known (a `challenged` registration, a cluster takeover's answer; the node behind cannot read it
   * either) or the chain has no clock, {@link NOT_CLOSING_TRIES} tries.
   */
  const mayStillBeClosing = async (deadline: bigint | undefined, tries: number): Promise<boolean> => {
    if (deadline === undefined || d.chain.chainTime === undefined) return tries < NOT_CLOSING_TRIES;
    try {
      return (await d.chain.chainTime()) < deadline;
    } catch {
      return true; // the next try reads the clock again: a failed read is no sign the period is over
    }
  };
  const answer = async (
    channelId: ChannelId,
    registered: bigint,
    block: number | undefined,
    deadline: bigint | undefined,
  ): Promise<void> => {
    const record = d.channels.get(channelId);
    const latest = record?.latest;
    if (!record || !latest || !challengeWith(latest, registered)) {
      unanswered.delete(channelId);
      return;
    }
    try {
      await d.chain.challenge(latest, record.locks);
      unanswered.delete(channelId);
      d.onEvent?.({ kind: 'challengeSent', channelId, version: latest.state.version });
    } catch (err) {
      const revert = decodeChainError(err).details['error'];
      const tries = (unanswered.get(channelId)?.tries ?? 0) + 1;
      const final = typeof revert === 'string' && FINAL_CHALLENGE_REVERTS.has(revert);
      if (final || (revert === 'ChannelNotClosing' && !(await mayStillBeClosing(deadline, tries)))) {
        unanswered.delete(channelId);
        d.logger.error({ err, channelId, attempt: tries }, 'challenge failed for good');
        return;
      }
      const retryInMs = Math.min(30_000, 1_000 * 2 ** Math.min(tries - 1, 5));
      unanswered.set(channelId, { registered, block, deadline, tries, nextAt: Date.now() + retryInMs });
      d.logger.error({ err, channelId, attempt: tries, retryInMs }, 'challenge failed');
    }
  };
  /**
   * The challenges of this poll's force closes, under way together, by channel. Answered one after another, each
   * waiting to be mined, the hub would get one challenge into each block: a flood of stale force closes in one block
   * (an attacker's many channels, each having been paid through the hub) would outnumber the blocks of the challenge
   * period, and the rest would settle stale. Sent together, they take consecutive nonces (see `sendTx`) and are mined
   * together; a later event of the same channel waits for its own.
   */
  const answering = new Map<ChannelId, Promise<void>>();
  const apply = async (e: ChainChange) => {
    await answering.get(e.channelId); // the channel's challenge under way first: its events apply in order
    const record = d.channels.get(e.channelId);
    if (!record) return;
    d.onEvent?.(e);
    switch (e.kind) {
      case 'deposit': {
        const funding =
          e.participant === record.params.device
            ? { ...record.funding, device: e.total }
            : { ...record.funding, hub: e.total };
        await untilStopped(d.channels.onChain(e.channelId, { funding }));
        break;
      }
      case 'forceClosed':
      case 'challenged': {
        await untilStopped(d.channels.onChain(e.channelId, { status: 'closing' }));
        const latest = d.channels.get(e.channelId)!.latest;
        // A force close the hub sent itself is not challenged by it (an operator closing on purpose).
        const own = e.kind === 'forceClosed' && e.by === d.hub;
        unanswered.delete(e.channelId); // this registration decides what (if anything) is left to answer
        if (!own && challengeWith(latest, e.version)) {
          d.logger.warn(
            { channelId: e.channelId, registered: String(e.version), latest: String(latest.state.version) },
            'stale force close: challenging',
          );
          answering.set(
            e.channelId,
            answer(e.channelId, e.version, e.block, e.kind === 'forceClosed' ? e.deadline : undefined),
          );
        } else if (e.kind === 'forceClosed') {
          d.logger.info(
            { channelId: e.channelId, device: record.params.device, version: String(e.version), by: e.by },
            'channel force-closed on-chain',
          );
        }
        break;
      }
      case 'closed':
        unanswered.delete(e.channelId);
        await untilStopped(d.channels.onChain(e.channelId, { status: 'closed', version: e.version }));
        d.logger.info({ channelId: e.channelId, device: record.params.device }, 'channel closed on-chain');
        break;
    }
  };
  const loop = (async () => {
    while (!stopped) {
      let behind = false;
      try {
        const polled = await d.chain.poll(lastBlock + 1);
        const { toBlock, events, reveals } = polled;
        try {
          for (const e of events) {
            await apply(e);
            if (stopped) break;
          }
        } finally {
          // Every challenge of the batch has landed or is in `unanswered` before the cursor moves.
          const under = [...answering.values()];
          answering.clear();
          await Promise.all(under);
        }
        if (stopped) break; // what was not applied is read again from lastBlock + 1 at the next start
        for (const r of reveals ?? []) await d.onRevealed?.(r);
        const due = [...unanswered].filter(([, u]) => Date.now() >= u.nextAt);
        if (!stopped) await Promise.all(due.map(([id, u]) => answer(id, u.registered, u.block, u.deadline)));
        if (toBlock > lastBlock) lastBlock = toBlock;
        let cursor = lastBlock;
        for (const u of unanswered.values()) if (u.block !== undefined && u.block - 1 < cursor) cursor = u.block - 1;
        if (cursor !== stored) {
          await d.committer.write([{ kind: 'meta', key: 'lastBlock', value: String(cursor) }]);
          stored = cursor;
        }
        behind = polled.behind === true;
        // Health counts a poll only once it reached the head: a hub still catching up has not seen recent closes.
        if (!behind) lastPollAt = Date.now();
      } catch (e) {
        if (stopped) break;
        d.logger.warn({ err: e }, 'chain poll failed');
      }
      // Catching up (blocks left past this read): read on at once.
      // stop() cuts the wait short: a hub polling a slow chain every 15 s would otherwise take that long to stop.
      if (!behind && !stopped)
        await new Promise<void>((r) => {
          wake = r;
          sleep = setTimeout(r, d.pollMs);
        });
    }
  })();
  return {
    get lastBlock() {
      return lastBlock;
    },
    get lastPollAt() {
      return lastPollAt;
    },
    answer(channelId, registered) {
      if (stopped) return;
      unanswered.set(channelId, { registered, block: undefined, deadline: undefined, tries: 0, nextAt: 0 });
      wake();
    },
    async stop() {
      stopped = true;
      clearTimeout(sleep);
      wake();
      onStop();
      await loop;
    },
  };
}
