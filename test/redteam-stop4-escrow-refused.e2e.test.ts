import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import type { Message } from '@trickle/protocol/codec';
import { nobleSigner } from '@trickle/protocol/signer';
import type { Bytes32 } from '@trickle/protocol/types';
import type { ClientChannel } from '@trickle/client/channel';
import type { TrickleClient } from '@trickle/client/client';
import { createWorld, type World } from './helpers/harness.js';
import { RawDevice } from './helpers/raw-device.js';

/**
 * Red team of the market's escrow reservation: the hub counts an escrow payment in the open round's record when it
 * checks it (before the engine reads the update), so that a round never takes more than maxRoundOrders entries. An
 * update the engine then refuses (a bad signature, more than the deposit) pays nothing, and its reservation stayed
 * until forgotten two rounds on: a device with any open channel filled a round with updates that paid nothing (capped
 * per device by maxParticipantOrders since 5221917) and every paying device was refused LIMIT_EXCEEDED.
 */
describe('red team stop 4: escrow payments the engine refuses', () => {
  let w: World;
  let honest: { c: TrickleClient; ch: ClientChannel };
  let attackerChannel: ClientChannel;

  beforeAll(async () => {
    w = await createWorld({ accounts: 6 });
    await w.startHub({
      storePath: join(w.dir, 'redteam-stop4-escrow-refused'),
      market: { roundMs: 60_000, maxRoundOrders: 4, maxParticipantOrders: 100 },
    });
    const a = await w.client(2);
    attackerChannel = await a.openChannel({ token: w.token, deposit: 1_000n });
    await a.disconnect();
    const c = await w.client(3);
    const ch = await c.openChannel({ token: w.token, deposit: 1_000_000n });
    await c.market.ready();
    honest = { c, ch };
  });
  afterAll(async () => w?.close());

  it('refused escrow updates (bad signature, past the deposit) leave the round room for a paying device', async () => {
    const d = await RawDevice.connect(w.hub!.url, nobleSigner(w.chain.accounts[2]!));
    d.send({ t: 'sync', id: 2, channelId: attackerChannel.channelId, latest: null } as unknown as Message);
    await d.next((m) => m.t === 'sync');
    const s = w.hub!.channels.get(attackerChannel.channelId)!.latest.state;
    const codes: string[] = [];
    for (let i = 0; i < 6; i++) {
      const state = { ...s, version: s.version + 1n, paidByDevice: s.paidByDevice + (i % 2 === 0 ? 1n : 10_000n) };
      const paymentId = `0x${(0xe0 + i).toString(16).padStart(64, '0')}` as Bytes32;
      const sig = new Uint8Array(65).fill(7);
      d.send({
        t: 'update',
        id: 10 + i,
        channelId: attackerChannel.channelId,
        state,
        sig,
        paymentId,
      } as unknown as Message);
      const answer = await d.next((m) => (m.t === 'reject' || m.t === 'error') && m.id === 10 + i);
      codes.push((answer as { code: string }).code);
    }
    // Each refused for what it is; without the fix the 5th and 6th were LIMIT_EXCEEDED: the round was full of
    // reservations of updates that paid nothing.
    expect(codes).toEqual(Array.from({ length: 6 }, (_, i) => (i % 2 === 0 ? 'BAD_SIGNATURE' : 'INSUFFICIENT_FUNDS')));
    d.close();
    // Nothing was paid: the round still takes a paying device's bid.
    await expect(
      honest.c.market.submitOrder(honest.ch, { market: 'kwh', side: 'bid', quantity: 1n, price: 100n }),
    ).resolves.toBeDefined();
  });
});
