/**
 * A commit whose outcome is unknown (the connection to PostgreSQL went during COMMIT: the server may have committed)
 * is neither answered as failed nor written over: the channel reads its stored record and the step takes effect if
 * it landed, fails if it did not. Answered STORE_FAILURE at once, a device update that had landed was written over by
 * the thaw with the older record (the hub forgot a payment it may already have forwarded). A real channel table on
 * a real LMDB store; the store's commit lands and then fails, or fails, on demand.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { stateDigest } from '@trickle/protocol/eip712';
import { isTrickleError, TrickleError } from '@trickle/protocol/errors';
import { signatureToHex } from '@trickle/protocol/signer';
import type { Message } from '@trickle/protocol/codec';
import type { Bytes32, State } from '@trickle/protocol/types';
import { hubChannelRecord } from '../../../test/helpers/hub-channel.mjs';
import { adjudicator, device, hubKey, sep, testTable } from './table.fixture.js';
import { openLmdbStore } from './store/lmdb.js';
import type { HubStore } from './store/types.js';

const dir = mkdtempSync(join(tmpdir(), 'trickle-commit-unknown-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const unknown = () =>
  new TrickleError('STORE_FAILURE', 'commit’s outcome unknown: Connection terminated', {
    details: { outcomeUnknown: true },
  });

/** A channel on an LMDB store whose next commit can land and then fail (`landThenFail`) or just fail (`fail`). */
async function setup(
  name: string,
  r = hubChannelRecord({ hub: hubKey.address, device: device.address, adjudicator, salt: '07' }),
) {
  const inner = openLmdbStore({ path: join(dir, name) });
  await inner.commit([{ kind: 'channel', record: r }]);
  let next: 'landThenFail' | 'fail' | undefined;
  let reading: Promise<void> | undefined; // the stored record is read once this settles
  const versions: bigint[] = []; // the channel's stored version after each commit that landed
  const store: HubStore = {
    ...inner,
    loadChannels: () => inner.loadChannels(),
    loadChannel: async (id) => {
      await reading;
      return (await inner.loadChannels()).find((x) => x.channelId === id);
    },
    async commit(writes) {
      const mode = next;
      next = undefined;
      if (mode === 'fail') throw unknown();
      await inner.commit(writes);
      for (const w of writes) if (w.kind === 'channel') versions.push(w.record.latest.state.version);
      if (mode === 'landThenFail') throw unknown();
    },
  };
  const frames: Message[] = [];
  const table = testTable(hubKey, store, {
    loadChannel: (id) => store.loadChannel!(id),
    send: (_device, msg) => (frames.push(msg), true),
  });
  table.restore(await store.loadChannels());
  /** The device pays `amount` in its next state. */
  const pay = (id: number, amount: bigint): State => {
    const state: State = { ...table.get(r.channelId)!.latest.state, version: BigInt(id), paidByDevice: amount };
    table.enqueue(device.address, r.channelId, {
      t: 'update',
      id,
      state,
      sig: device.signDigest(stateDigest(sep, state)),
    });
    return state;
  };
  const answer = (id: number) => expect.poll(() => frames.find((f) => 'id' in f && f.id === id), { timeout: 5_000 });
  return {
    r,
    table,
    frames,
    versions,
    pay,
    answer,
    set: (m: typeof next) => (next = m),
    /** Hold the reads of the stored record until the function returned is called. */
    holdReads: () => {
      let open!: () => void;
      reading = new Promise((r) => (open = r));
      return open;
    },
    close: () => inner.close(),
  };
}

describe('a commit whose outcome is unknown', () => {
  it('that landed: the update takes effect (acked), and the stored record never goes back', async () => {
    const t = await setup('landed');
    t.set('landThenFail');
    t.pay(1, 5n);
    await t.answer(1).toMatchObject({ t: 'ack', version: 1n });
    expect(t.frames.some((f) => f.t === 'reject')).toBe(false);
    expect(t.table.get(t.r.channelId)!.latest.state).toMatchObject({ version: 1n, paidByDevice: 5n });
    expect(t.table.isFrozen(t.r.channelId)).toBe(false);
    // The device goes on paying on top of it.
    t.pay(2, 8n);
    await t.answer(2).toMatchObject({ t: 'ack', version: 2n });
    expect(t.versions).toEqual([1n, 2n]); // never written back to 0 by a thaw
    await t.close();
  });

  it('that did not land: the update fails STORE_FAILURE, the channel thaws, and the device pays again', async () => {
    const t = await setup('lost');
    t.set('fail');
    t.pay(1, 5n);
    await t.answer(1).toMatchObject({ t: 'reject', code: 'STORE_FAILURE' });
    await expect.poll(() => t.table.isFrozen(t.r.channelId), { timeout: 5_000 }).toBe(false);
    expect(t.table.get(t.r.channelId)!.latest.state.version).toBe(0n);
    t.pay(2, 5n);
    await t.answer(2).toMatchObject({ t: 'ack', version: 2n });
    expect(t.versions.at(-1)).toBe(2n);
    await t.close();
  });

  it.each([
    ['landed', 'landThenFail'],
    ['did not land', 'fail'],
  ] as const)(
    'that %s, while a credit waits: that credit asked again meanwhile is answered with it',
    async (_, mode) => {
      const t = await setup(`join-${mode}`);
      const P = `0x${'0b'.repeat(32)}` as Bytes32;
      const updates = () => t.frames.filter((f): f is Extract<Message, { t: 'update' }> => f.t === 'update');
      const first = t.table.credit(t.r.channelId, 5n, { paymentId: P });
      await expect.poll(() => updates().length).toBe(1);
      const open = t.holdReads();
      t.set(mode);
      // A top-up seen on-chain while P's proposal waits: the commit of that step has its outcome unknown.
      const funding = { ...t.r.funding, device: t.r.funding.device + 1n };
      const funded = t.table.onChain(t.r.channelId, { funding });
      await expect.poll(() => t.table.isFrozen(t.r.channelId)).toBe(true);
      const second = t.table.credit(t.r.channelId, 5n, { paymentId: P });
      open();
      await funded; // landed, or (not) written again after the thaw: an on-chain fact is never dropped
      await expect.poll(() => t.table.isFrozen(t.r.channelId), { timeout: 5_000 }).toBe(false);
      const proposal = updates()[0]!;
      const sig = device.signDigest(stateDigest(sep, proposal.state));
      t.table.enqueue(device.address, t.r.channelId, { t: 'ack', id: proposal.id, version: 1n, sig });
      const a = await first;
      expect(await second).toEqual(a); // not STORE_FAILURE, and not a second credit of P
      expect(updates()).toHaveLength(1);
      expect(t.table.get(t.r.channelId)).toMatchObject({ funding, latest: { state: { paidByHub: 5n } } });
      await t.close();
    },
  );

  it.each([
    ['landed', 'landThenFail'],
    ['did not land', 'fail'],
  ] as const)(
    'that %s: a credit of a payment whose refused state the device may hold, asked meanwhile, is answered once',
    async (_, mode) => {
      // The hub credited payment P at v1 and the device refused it: it may still hold (and register) that state.
      const base = hubChannelRecord({ hub: hubKey.address, device: device.address, adjudicator, salt: '0d' });
      const refused: State = { ...base.latest.state, version: 1n, paidByHub: 5n };
      const hubSig = signatureToHex(hubKey.signDigest(stateDigest(sep, refused)));
      const P = `0x${'0e'.repeat(32)}` as Bytes32;
      const t = await setup(`defer-${mode}`, {
        ...base,
        hubSignedVersion: 1n,
        unsettled: [{ state: refused, hubSig, paymentId: P }],
      });
      const updates = () => t.frames.filter((f): f is Extract<Message, { t: 'update' }> => f.t === 'update');
      const open = t.holdReads();
      t.set(mode);
      const funding = { ...t.r.funding, device: t.r.funding.device + 1n };
      const funded = t.table.onChain(t.r.channelId, { funding });
      await expect.poll(() => t.table.isFrozen(t.r.channelId)).toBe(true);
      // P asked again while that step is held: refused now (frozen), it would wait for v1 to settle.
      const again = t.table.credit(t.r.channelId, 5n, { paymentId: P }).then(
        (s) => ({ landed: s }),
        (e: unknown) => (isTrickleError(e) ? e.code : String(e)),
      );
      open();
      await funded;
      await expect.poll(() => t.table.isFrozen(t.r.channelId), { timeout: 5_000 }).toBe(false);
      if (mode === 'landThenFail') {
        // The channel the step left is the one that serves: the credit is taken on it, proposed above v1.
        await expect.poll(() => updates().length, { timeout: 5_000 }).toBe(1);
        const proposal = updates()[0]!;
        expect(proposal.state).toMatchObject({ version: 2n, paidByHub: 5n });
        const sig = device.signDigest(stateDigest(sep, proposal.state));
        t.table.enqueue(device.address, t.r.channelId, { t: 'ack', id: proposal.id, version: 2n, sig });
        expect(await again).toMatchObject({ landed: { state: { version: 2n, paidByHub: 5n } } });
      } else {
        // The step failed: the credit is refused, and waits for v1 to settle — the channel closes at v1: delivered.
        await t.table.onChain(t.r.channelId, { status: 'closed', version: 1n });
        expect(await again).toMatchObject({ landed: { state: { version: 1n, paidByHub: 5n } } });
        expect(updates()).toHaveLength(0);
      }
      expect(t.table.unsettledCount()).toBe(0);
      expect(t.table.get(t.r.channelId)).toMatchObject(
        mode === 'landThenFail' ? { funding, latest: { state: { paidByHub: 5n } } } : { funding, status: 'closed' },
      );
      await t.close();
    },
  );
});
