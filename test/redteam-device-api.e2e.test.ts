import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { isTrickleError } from '@trickle/protocol/errors';
import { randomBytes32 } from '@trickle/protocol/random';
import type { Bytes32 } from '@trickle/protocol/types';
import { fileChannelStore } from '@trickle/client/store';
import { createWorld, type World } from './helpers/harness.js';

/**
 * The device API as a firmware author misuses it, against a real hub and chain: every wrong argument is refused at
 * once with a typed error, nothing is signed or stored for it, and the channel goes on paying.
 */
describe('red team: the device API misused', () => {
  let w: World;
  beforeAll(async () => {
    w = await createWorld();
    await w.startHub();
  }, 60_000);
  afterAll(async () => w?.close());

  const code = (p: Promise<unknown>) =>
    p.then(
      () => 'resolved',
      (e: unknown) => (isTrickleError(e) ? e.code : `untyped ${String(e)}`),
    );

  it('an escrow id that is not 32 bytes of hex: INVALID_ARGUMENT at once, nothing signed; the payments after it go through', async () => {
    const c = await w.client(2);
    const ch = await c.openChannel({ token: w.token, deposit: 1_000_000n });
    await ch.pay(1n);
    const before = ch.latest;
    const stored = await fileChannelStore(join(w.dir, 'device-2')).load(ch.channelId);
    for (const bad of ['0x12', `0x${'zz'.repeat(32)}`, `0x${'ab'.repeat(33)}`, 'hello', 42]) {
      // before the fix: signed and queued, then failing to encode at the send — pending for ever, with every payment
      // after it waiting behind it
      expect(await code(ch.pay(5n, { escrowFor: bad as Bytes32 }))).toBe('INVALID_ARGUMENT');
      expect(ch.pendingPayments).toBe(0);
    }
    expect(ch.latest).toEqual(before);
    expect(await fileChannelStore(join(w.dir, 'device-2')).load(ch.channelId)).toEqual(stored);
    const r = await ch.pay(7n);
    expect(r.paidByDevice).toBe(before.state.paidByDevice + 7n);
    expect(w.hub!.channels.get(ch.channelId)!.latest.state.paidByDevice).toBe(before.state.paidByDevice + 7n);
    // a well-formed escrow id for no order of the hub's is the hub's to refuse (typed), and the channel goes on
    expect(await code(ch.pay(5n, { escrowFor: randomBytes32() }))).not.toMatch(/^untyped|resolved/);
    expect((await ch.pay(1n)).paidByDevice).toBe(before.state.paidByDevice + 8n);
  });

  it('amounts that are zero, negative, not a bigint or above the balance: typed refusals at once, nothing signed', async () => {
    const c = await w.client(3);
    const ch = await c.openChannel({ token: w.token, deposit: 1_000n });
    await ch.pay(1n);
    const before = ch.latest;
    const cases: [unknown, string][] = [
      [0n, 'INVALID_ARGUMENT'],
      [-1n, 'INVALID_ARGUMENT'],
      [1, 'INVALID_ARGUMENT'],
      ['1', 'INVALID_ARGUMENT'],
      [undefined, 'INVALID_ARGUMENT'],
      [1_000n, 'INSUFFICIENT_FUNDS'],
      [2n ** 256n, 'INSUFFICIENT_FUNDS'],
    ];
    for (const [amount, expected] of cases) {
      expect([String(amount), await code(ch.pay(amount as bigint))]).toEqual([String(amount), expected]);
      expect(await code(ch.pay(amount as bigint, { to: w.chain.addresses[4]! }))).toBe(expected);
    }
    expect(ch.pendingPayments).toBe(0);
    expect(ch.latest).toEqual(before);
    expect((await ch.pay(999n)).paidByDevice).toBe(1_000n);
  });
});
