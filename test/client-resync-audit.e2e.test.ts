import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { fileChannelStore, type ChannelStore, type DeviceChannelRecord } from '@trickle/client';
import { createWorld, type World } from './helpers/harness.js';

/**
 * The device SDK's store, write-behind and resync, audited as a firmware author would bet on them: a state in which
 * the device receives money is durable before it countersigns, and nothing written later takes it back off the disk.
 */
describe('client resync and write-behind audit', () => {
  let w: World;
  beforeAll(async () => {
    w = await createWorld({ accounts: 8 });
    await w.startHub();
  });
  afterAll(async () => w?.close());

  it('a write behind that fires while a credit is being made durable never lands over it: the disk keeps the credit', async () => {
    const inner = fileChannelStore(join(w.dir, 'behind-over-credit'));
    const saved: { version: bigint; paidByHub: bigint }[] = [];
    let slowCredit = false;
    let creditWriteAt = 0;
    const store: ChannelStore = {
      load: (id) => inner.load(id),
      list: () => inner.list(),
      save: async (r: DeviceChannelRecord) => {
        // The credit's write is slow (a busy flash chip): the write behind the payment comes due meanwhile.
        if (slowCredit && r.latest.state.paidByHub > 0n) {
          creditWriteAt ||= Date.now();
          await new Promise((res) => setTimeout(res, 1_500));
        }
        await inner.save(r);
        saved.push({ version: r.latest.state.version, paidByHub: r.latest.state.paidByHub });
      },
    };
    const c = await w.client(2, { store });
    const ch = await c.openChannel({ token: w.token, deposit: 1_000_000n });
    await w.hubDeposit(ch.channelId, 100_000n);
    await ch.pay(10n);
    await ch.flushWrites();
    slowCredit = true;
    await ch.pay(10n); // acked: its state is written behind, within a second
    const paidAt = Date.now();
    const credited = await w.hub!.credit(ch.channelId, 77n); // durable on the device before it countersigned
    expect(credited.state.paidByHub).toBe(77n);
    // The premise: the write behind came due (a second after the ack) while the credit's write was in flight.
    expect(creditWriteAt - paidAt).toBeLessThan(800);
    await new Promise((res) => setTimeout(res, 300));
    await ch.flushWrites();
    // Power lost now: what the device restarts from must hold the credit it countersigned.
    const onDisk = (await inner.load(ch.channelId))!;
    expect(saved.at(-1)!.paidByHub).toBe(77n);
    expect(onDisk.latest.state).toEqual(credited.state);
  });
});
