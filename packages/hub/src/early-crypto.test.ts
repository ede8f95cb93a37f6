/**
 * A device update that arrives while its channel's previous step waits for its commit has its signature work started
 * at once (not after the commit): the step then finds it done. The work is only a head start — whether the update is
 * taken is still the step's to decide, on the state as it stands then. A real channel table on a real LMDB store and
 * the hub's crypto worker, commits held at a gate.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { stateDigest } from '@trickle/protocol/eip712';
import type { Message } from '@trickle/protocol/codec';
import { nobleVerifier } from '@trickle/protocol/signer';
import type { State } from '@trickle/protocol/types';
import { workerCrypto, type HubCrypto } from './crypto.js';
import { answerTo, device, gatedChannel, hubKey, sep, testTable } from './table.fixture.js';

const dir = mkdtempSync(join(tmpdir(), 'trickle-early-crypto-'));
const pool = workerCrypto({ privateKey: `0x${'11'.repeat(32)}`, address: hubKey.address, threads: 1 });
afterAll(async () => {
  await pool.close();
  rmSync(dir, { recursive: true, force: true });
});

async function world(salt: string) {
  const { r, inner, store, gate } = await gatedChannel(dir, salt);
  /** The states whose signature work the backend was asked for, in order. */
  const asked: bigint[] = [];
  const crypto: HubCrypto = {
    ...pool,
    address: pool.address,
    verifyAndSign: (d, s, e) => pool.verifyAndSign(d, s, e),
    recover: (d, s) => pool.recover(d, s),
    sign: (d) => pool.sign(d),
    verifyAndSignState: (state, sig, expected, domain) => {
      asked.push(state.version);
      return pool.verifyAndSignState!(state, sig, expected, domain);
    },
    close: async () => {},
  };
  const sent: Message[] = [];
  const table = testTable(hubKey, store, { crypto, send: (_d, msg) => (sent.push(msg), true) });
  table.restore(await store.loadChannels());
  const answer = (id: number) => answerTo(sent, id);
  /** The device pays `paid` in state `version`; `forged` signs it with the hub's key instead. */
  const pay = (id: number, version: bigint, paid: bigint, forged = false): void => {
    const state: State = { ...table.get(r.channelId)!.latest.state, version, paidByDevice: paid };
    const d = stateDigest(sep, state);
    table.enqueue(device.address, r.channelId, {
      t: 'update',
      id,
      state,
      sig: forged ? hubKey.signDigest(d) : device.signDigest(d),
    });
  };
  const stored = async () => (await inner.loadChannels())[0]!.latest.state;
  return { r, inner, table, sent, asked, answer, pay, stored, hold: gate.hold, holding: gate.holding };
}

describe('signature work started while the previous commit is pending', () => {
  it('starts at once, and a forged update started so is refused BAD_SIGNATURE, nothing of it stored', async () => {
    const t = await world('e1');
    const release = t.hold();
    t.pay(1, 1n, 5n);
    await expect.poll(t.holding).toBe(true); // v1's commit waits at the gate
    t.pay(2, 2n, 9n, true);
    // Asked for v2 before v1's commit landed.
    await expect.poll(() => t.asked).toEqual([1n, 2n]);
    release();
    expect(await t.answer(1)).toMatchObject({ t: 'ack', version: 1n });
    expect(await t.answer(2)).toMatchObject({ t: 'reject', code: 'BAD_SIGNATURE' });
    expect(t.table.get(t.r.channelId)!.latest.state).toMatchObject({ version: 1n, paidByDevice: 5n });
    expect(await t.stored()).toMatchObject({ version: 1n, paidByDevice: 5n });
    // The next honest update lands.
    t.pay(3, 2n, 9n);
    expect(await t.answer(3)).toMatchObject({ t: 'ack', version: 2n });
    expect(await t.stored()).toMatchObject({ version: 2n, paidByDevice: 9n });
    await t.inner.close();
  });

  it('two updates queued behind a commit: the head start is dropped, the newest is checked and countersigned', async () => {
    const t = await world('e2');
    const release = t.hold();
    t.pay(1, 1n, 5n);
    await expect.poll(t.holding).toBe(true);
    t.pay(2, 2n, 6n);
    t.pay(3, 3n, 7n);
    release();
    expect(await t.answer(3)).toMatchObject({ t: 'ack', version: 3n });
    // v2's head start was wasted work, not used: v3 was asked for in the step.
    expect(t.asked).toEqual([1n, 2n, 3n]);
    expect(await t.stored()).toMatchObject({ version: 3n, paidByDevice: 7n });
    // The hub's countersignature on v3 is its own over v3's digest.
    const ack = (await t.answer(3)) as Extract<Message, { t: 'ack' }>;
    const v3: State = { ...t.table.get(t.r.channelId)!.latest.state };
    expect(nobleVerifier.recoverAddress(stateDigest(sep, v3), ack.sig)).toBe(hubKey.address);
    await t.inner.close();
  });

  it('a head start on an update the step then finds stale is not used to take it: refused, state unchanged', async () => {
    const t = await world('e3');
    const release = t.hold();
    t.pay(1, 1n, 5n);
    await expect.poll(t.holding).toBe(true);
    // Queued behind v1 with version 1 again but another amount: a second state at v1 (equivocation), started early
    // because v1 was not yet the channel's state when it came.
    t.pay(2, 1n, 500n);
    await expect.poll(() => t.asked).toEqual([1n, 1n]);
    release();
    expect(await t.answer(1)).toMatchObject({ t: 'ack', version: 1n });
    expect(await t.answer(2)).toMatchObject({ t: 'reject' });
    expect(await t.stored()).toMatchObject({ version: 1n, paidByDevice: 5n });
    await t.inner.close();
  });
});
