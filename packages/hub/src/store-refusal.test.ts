/**
 * A step whose commit the store refuses (a `StoreRefusal`: in a cluster, a market escrow past its round's bound, the
 * round's last room taken by another process after this one's check) is refused, not failed: the device's updates in
 * it are answered with the refusal's code, nothing of it is sent or stored, the channel does not freeze, and the
 * step's other jobs (a credit, an on-chain fact) are stepped again at once. Answered as a failed commit, the device got
 * STORE_FAILURE, the channel froze until a probe write, and a credit in the same step was refused with it. A real
 * channel table on a real LMDB store that refuses, as PostgreSQL's market count does, every commit storing an escrow
 * while the round is "full". (The race itself, on a real PostgreSQL cluster: market-clock.cluster.test.ts.)
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { stateDigest } from '@trickle/protocol/eip712';
import type { Message } from '@trickle/protocol/codec';
import type { Bytes32, State } from '@trickle/protocol/types';
import { hubChannelRecord } from '../../../test/helpers/hub-channel.mjs';
import { escrowKey } from './channels.js';
import { adjudicator, answerTo, commitGate, device, hubKey, sep, testTable } from './table.fixture.js';
import { openLmdbStore } from './store/lmdb.js';
import { StoreRefusal, type HubStore } from './store/types.js';

const dir = mkdtempSync(join(tmpdir(), 'trickle-store-refusal-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const orderId = `0x${'0e'.repeat(32)}` as Bytes32;
const P = `0x${'0b'.repeat(32)}` as Bytes32;

/** A channel on an LMDB store refusing escrows while `full`, whose commits wait from `hold()` until its release. */
async function world(salt: string) {
  const r = hubChannelRecord({ hub: hubKey.address, device: device.address, adjudicator, salt });
  const inner = openLmdbStore({ path: join(dir, salt) });
  await inner.commit([{ kind: 'channel', record: r }]);
  let full = true;
  const gate = commitGate();
  let refusals = 0;
  const store: HubStore = {
    ...inner,
    loadChannels: () => inner.loadChannels(),
    commit: async (writes) => {
      await gate.pass();
      if (full && writes.some((w) => w.kind === 'meta' && w.key.startsWith('market/escrow/'))) {
        refusals++;
        throw new StoreRefusal('LIMIT_EXCEEDED', 'round 1 is full', [r.channelId], { round: 1n, max: 1 });
      }
      return inner.commit(writes);
    },
  };
  const sent: Message[] = [];
  const outcomes: Record<string, number> = {};
  const table = testTable(hubKey, store, {
    send: (_d, msg) => (sent.push(msg), true),
    onOutcome: (o, n = 1) => void (outcomes[o] = (outcomes[o] ?? 0) + n),
  });
  table.restore(await store.loadChannels());
  const answer = (id: number) => answerTo(sent, id);
  /** The device pays up to `paid` in state `version`, as the escrow of `escrowFor` if given. */
  const pay = (id: number, version: bigint, paid: bigint, escrowFor?: Bytes32): State => {
    const state: State = { ...table.get(r.channelId)!.latest.state, version, paidByDevice: paid };
    table.enqueue(device.address, r.channelId, {
      t: 'update',
      id,
      state,
      sig: device.signDigest(stateDigest(sep, state)),
      escrowFor,
    });
    return state;
  };
  return {
    r,
    inner,
    table,
    sent,
    outcomes,
    answer,
    pay,
    refusals: () => refusals,
    open: () => (full = false),
    holding: gate.holding,
    hold: gate.hold,
  };
}

describe('a step the store refuses', () => {
  it('answers the escrow LIMIT_EXCEEDED, stores and sends nothing else, does not freeze; the next payment lands at once', async () => {
    const t = await world('31');
    t.pay(1, 1n, 200n, orderId);
    expect(await t.answer(1)).toMatchObject({
      t: 'reject',
      code: 'LIMIT_EXCEEDED',
      latest: { state: { version: 0n } },
    });
    expect(t.refusals()).toBe(1);
    expect(t.table.isFrozen(t.r.channelId)).toBe(false);
    expect(t.sent.filter((m) => m.t !== 'reject')).toEqual([]); // no `error` frame announcing a frozen channel
    expect(t.table.get(t.r.channelId)!.latest.state.version).toBe(0n);
    expect(await t.inner.getMeta(escrowKey(orderId))).toBeUndefined();
    // At once (no thaw to wait for): a plain payment on the same channel.
    t.pay(2, 1n, 5n);
    expect(await t.answer(2)).toMatchObject({ t: 'ack', version: 1n });
    expect((await t.inner.loadChannels())[0]!.latest.state).toMatchObject({ version: 1n, paidByDevice: 5n });
    // The device's refusal is counted under its code; nothing as a store failure.
    expect(t.outcomes).toEqual({ LIMIT_EXCEEDED: 1, accepted: 1 });
    // The round has room again: the same escrow is taken.
    t.open();
    t.pay(3, 2n, 205n, orderId);
    expect(await t.answer(3)).toMatchObject({ t: 'ack', version: 2n });
    expect(await t.inner.getMeta(escrowKey(orderId))).toContain('"amount":"200"');
    await t.inner.close();
  });

  it('steps again the jobs of that step it did not refuse: a credit is proposed and lands, an on-chain fact lands', async () => {
    const t = await world('32');
    // A payment whose commit is held: what comes meanwhile is stepped together once it lands.
    const release = t.hold();
    t.pay(1, 1n, 5n);
    await expect.poll(t.holding).toBe(true);
    t.pay(2, 2n, 205n, orderId);
    const credit = t.table.credit(t.r.channelId, 7n, { paymentId: P });
    const funding = { ...t.r.funding, device: t.r.funding.device + 1n };
    const funded = t.table.onChain(t.r.channelId, { funding });
    let creditError: unknown;
    credit.catch((e: unknown) => (creditError = e));
    release();
    expect(await t.answer(1)).toMatchObject({ t: 'ack', version: 1n });
    expect(await t.answer(2)).toMatchObject({ t: 'reject', code: 'LIMIT_EXCEEDED' });
    await funded;
    expect(t.refusals()).toBe(1);
    // The credit was not refused with the escrow: proposed on top of the payment that landed, the device takes it.
    const updates = () => t.sent.filter((m): m is Extract<Message, { t: 'update' }> => m.t === 'update');
    await expect.poll(() => updates().length).toBe(1);
    const proposal = updates()[0]!;
    expect(proposal.state).toMatchObject({ version: 2n, paidByDevice: 5n, paidByHub: 7n });
    const sig = device.signDigest(stateDigest(sep, proposal.state));
    t.table.enqueue(device.address, t.r.channelId, { t: 'ack', id: proposal.id, version: 2n, sig });
    expect((await credit).state).toMatchObject({ version: 2n, paidByHub: 7n });
    expect(creditError).toBeUndefined();
    expect(t.table.isFrozen(t.r.channelId)).toBe(false);
    const stored = (await t.inner.loadChannels())[0]!;
    expect(stored.funding.device).toBe(funding.device);
    expect(stored.latest.state).toMatchObject({ version: 2n, paidByHub: 7n });
    expect(t.outcomes['STORE_FAILURE']).toBeUndefined();
    await t.inner.close();
  });
});
