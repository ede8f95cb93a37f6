// Test fixture (not built: tsconfig excludes *.fixture.ts): a device's market session against a hub played by the
// test — real keys sign orders and clearing records, and the clearing is `@trickle/market`'s.
import { publishedClearingDigest, type Order, type PublishedClearing } from '@trickle/market';
import { zeroState } from '@trickle/protocol/channel';
import type { Message } from '@trickle/protocol/codec';
import { trickleDomain } from '@trickle/protocol/eip712';
import { stringifyJson } from '@trickle/protocol/json';
import { nobleSigner, nobleVerifier } from '@trickle/protocol/signer';
import type { Address, ChannelId } from '@trickle/protocol/types';
import type { ClientChannel } from './channel.js';
import { MarketSession } from './market.js';
import type { MarketOrderStore } from './market-orders.js';

export const hubKey = nobleSigner(`0x${'11'.repeat(32)}`);
export const device = nobleSigner(`0x${'22'.repeat(32)}`);
export const other = nobleSigner(`0x${'33'.repeat(32)}`);
export const adjudicator = '0x000000000000000000000000000000000000AD01' as Address;
export const domain = trickleDomain(31337n, adjudicator);
export const channelId = `0x${'cc'.repeat(32)}` as ChannelId;
export const ROUND = 4n;

/**
 * The device's market session on `store` against the hub this test plays: each order the device sends reaches
 * `answer` as the hub takes it in (arrival 7), which returns the reply frame (its id is set here) or an error to throw.
 */
export function deviceMarket(answer: (order: Order) => Message | Error, store?: MarketOrderStore): MarketSession {
  return new MarketSession({
    signer: device,
    verifier: nobleVerifier,
    hub: () => ({ hub: hubKey.address, chainId: 31337n, adjudicator }),
    request: async (build) => {
      const m = build(1) as Extract<Message, { t: 'order' }>;
      const a = answer({ ...m.order, participant: device.address, arrival: 7n });
      if (a instanceof Error) throw a;
      return { ...a, id: m.id } as Message;
    },
    store,
  });
}

/** A device session that has placed one ask of 2 units at ≥ 100 in ROUND (arrival 7), under the announced fee. */
export async function session(announcedFeeBps = 0n): Promise<{ market: MarketSession; mine: Order }> {
  let mine: Order | undefined;
  const market = deviceMarket((order) => {
    mine = order;
    return { t: 'accepted', id: 0, arrival: 7n };
  });
  market.onFrame({ t: 'round', id: 0, round: ROUND, feeBps: announcedFeeBps });
  // An ask pays no escrow: the channel is not touched.
  await market.submitOrder({} as ClientChannel, { market: 'kwh', side: 'ask', quantity: 2n, price: 100n });
  return { market, mine: mine! };
}

/**
 * The hub sends `published` as the clearing frame of `round` (default ROUND), signed with the hub's key (its record and
 * refunds; `signed`, when given, is what the signature covers instead: a relay then altered the frame).
 */
export function sendClearing(
  market: MarketSession,
  published: PublishedClearing,
  round = ROUND,
  signed: PublishedClearing = published,
): void {
  market.onFrame({
    t: 'clearing',
    id: 0,
    round,
    record: new TextEncoder().encode(stringifyJson(published)),
    sig: hubKey.signDigest(publishedClearingDigest(domain, round, signed)),
  });
}

/**
 * The device's check of a round credit of `amount` for `round` (throws what the device would refuse it with), and, when
 * it passes, the credit landing (countersigned and durable) as the client reports it.
 */
export const checkCredit = (market: MarketSession, amount: bigint, round = ROUND): void => {
  market.check({
    channelId,
    previous: { ...zeroState(channelId), version: 3n, round: round - 1n },
    state: { ...zeroState(channelId), version: 4n, round, paidByHub: amount },
    amount,
  });
  market.credited(channelId, round);
};
