/**
 * A payment credited again (the same payment id, amount and lock) while its first credit's caller still waits for its
 * answer is credited once: both callers get the one state. Here the second ask comes while the step that landed the
 * device's countersignature of the first is being committed — the engine no longer holds the credit, but its caller
 * has not been answered yet. Proposed as a second credit, the device would be paid twice. A real channel table on a
 * real LMDB store whose commits are held on demand.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { stateDigest } from '@trickle/protocol/eip712';
import type { Message } from '@trickle/protocol/codec';
import type { Bytes32 } from '@trickle/protocol/types';
import { device, gatedChannel, hubKey, sep, testTable } from './table.fixture.js';

const dir = mkdtempSync(join(tmpdir(), 'trickle-credit-again-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const P = `0x${'0b'.repeat(32)}` as Bytes32;

/**
 * A channel of P's payee on a real LMDB store whose commits wait, from `hold()` until its `release()`, and a real
 * channel table over it that records what it sends.
 */
async function world(salt: string) {
  const { r, inner, store, gate } = await gatedChannel(dir, salt);
  const sent: Message[] = [];
  const table = testTable(hubKey, store, { send: (_d, msg) => (sent.push(msg), true) });
  table.restore(await store.loadChannels());
  return {
    r,
    inner,
    table,
    updates: () => sent.filter((m): m is Extract<Message, { t: 'update' }> => m.t === 'update'),
    holding: gate.holding,
    hold: gate.hold,
  };
}

describe('a payment credited again while its first caller waits', () => {
  it('asked while the countersignature’s step is committed: joins it, one credit, both answered with its state', async () => {
    const { r, inner, table, updates, holding, hold } = await world('07');

    const first = table.credit(r.channelId, 5n, { paymentId: P });
    await expect.poll(() => updates().length).toBe(1);
    const proposal = updates()[0]!;
    expect(proposal.state).toMatchObject({ version: 1n, paidByHub: 5n });

    // The device countersigns; the step that takes it is committed slowly.
    const release = hold();
    const sig = device.signDigest(stateDigest(sep, proposal.state));
    table.enqueue(device.address, r.channelId, { t: 'ack', id: proposal.id, version: 1n, sig });
    await expect.poll(holding).toBe(true);
    // Meanwhile the same payment is asked again (a router's retry, a cluster process working its outbox row again).
    const second = table.credit(r.channelId, 5n, { paymentId: P });
    release();

    const a = await first;
    expect(a.state).toMatchObject({ version: 1n, paidByHub: 5n });
    const b = await Promise.race([second, new Promise((res) => setTimeout(() => res('waiting'), 500))]);
    expect(updates().map((m) => m.state.version)).toEqual([1n]); // not proposed a second time: P paid once
    expect(b).toEqual(a);
    expect(table.get(r.channelId)!.latest.state.paidByHub).toBe(5n);
    await inner.close();
  });

  it('asked in the same batch as the countersignature (both queued behind a commit): one credit, the same state', async () => {
    const { r, inner, table, updates, holding, hold } = await world('08');
    const first = table.credit(r.channelId, 5n, { paymentId: P });
    await expect.poll(() => updates().length).toBe(1);
    const proposal = updates()[0]!;
    // Another payment queued behind the outstanding proposal (nothing to write), then an on-chain top-up: the
    // top-up's commit is held.
    const release = hold();
    const other = table.credit(r.channelId, 3n, { paymentId: `0x${'0c'.repeat(32)}` as Bytes32 });
    const funded = table.onChain(r.channelId, { funding: { device: 1001n, hub: 1000n } });
    await expect.poll(holding).toBe(true);
    // Behind it, in one batch: the device's countersignature of P, then P asked again.
    const sig = device.signDigest(stateDigest(sep, proposal.state));
    table.enqueue(device.address, r.channelId, { t: 'ack', id: proposal.id, version: 1n, sig });
    const second = table.credit(r.channelId, 5n, { paymentId: P });
    release();
    const a = await first;
    await funded;
    expect(await Promise.race([second, new Promise((res) => setTimeout(() => res('waiting'), 1_000))])).toEqual(a);
    await expect.poll(() => updates().length).toBe(2); // the other payment, proposed after P landed
    expect(updates()[1]!.state).toMatchObject({ version: 2n, paidByHub: 8n }); // P once (5), then 3: not 13
    // The other payment's proposal waits for a device that never answers here: its caller is not answered.
    expect(
      await Promise.race([
        other.then(
          () => 'answered',
          () => 'answered',
        ),
        Promise.resolve('waiting'),
      ]),
    ).toBe('waiting');
    await inner.close();
  });
});
