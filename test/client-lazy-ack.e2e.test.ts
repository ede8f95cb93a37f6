import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { fileChannelStore, type ChannelStore, type DeviceChannelRecord } from '@trickle/client';
import { channelContext, checkFullySigned } from '@trickle/protocol/channel';
import { nativeSigner } from '@trickle/protocol/native';
import { nobleSigner, nobleVerifier, type Verifier } from '@trickle/protocol/signer';
import type { SignedState } from '@trickle/protocol/types';
import { createWorld, type World } from './helpers/harness.js';

/**
 * A device checks the hub's countersignature on a state in which it only pays lazily (an older state pays it more):
 * before the state is written behind and before any other decision. A hub whose countersignatures are not its own
 * gets the payments it acked (it holds the device's signatures on them), but its state is never the one the device
 * stores or presents: the device keeps its last checked state, on disk, in `latest` and on-chain.
 */
describe('lazily checked acks, against a hub whose signatures turn bad', () => {
  let w: World;
  let faulty = false;
  beforeAll(async () => {
    w = await createWorld();
    const hub = nativeSigner(w.hubKey);
    const mallory = nobleSigner(`0x${'77'.repeat(32)}`);
    // Well-formed signatures, by another key: they recover, to an address that is not the hub's.
    await w.startHub({
      more: { signer: { address: hub.address, signDigest: (d) => (faulty ? mallory : hub).signDigest(d) } },
    });
  });
  afterAll(async () => w?.close());

  it('the bad state is never stored, shown or registered; the device falls back to its last checked state', async () => {
    const inner = fileChannelStore(join(w.dir, 'lazy-ack'));
    const saved: DeviceChannelRecord[] = [];
    const store: ChannelStore = {
      load: (id) => inner.load(id),
      list: () => inner.list(),
      save: (r) => (saved.push(r), inner.save(r)),
    };
    const c = await w.client(2, { store });
    const ch = await c.openChannel({ token: w.token, deposit: 1_000_000n });
    const ctx = channelContext(ch.record.params, ch.record.funding);
    const checked = (s: SignedState) => checkFullySigned(ctx, s, nobleVerifier);

    for (let i = 0; i < 5; i++) await ch.pay(10n);
    await ch.flushWrites(); // the write behind: the newest state checked, then written
    const good = ch.latest;
    expect(good.state.paidByDevice).toBe(50n);
    expect(() => checked(good)).not.toThrow();
    expect((await inner.load(ch.channelId))!.latest).toEqual(good); // nothing acked is lost by checking lazily

    faulty = true;
    for (let i = 0; i < 5; i++) await ch.pay(10n); // acked, with signatures not the hub's: paid all the same
    expect(w.hub!.channels.get(ch.channelId)!.latest.state.paidByDevice).toBe(100n); // the hub holds them
    expect(ch.latest).toEqual(good); // checked when shown: the bad state is not
    await ch.flushWrites(); // its check fails: dropped; the device asks the hub's latest again (a sync)
    expect(ch.latest).toEqual(good);
    expect(ch.record.latest).toEqual(good);
    expect((await inner.load(ch.channelId))!.latest).toEqual(good);

    // The hub cannot close it with a state the device did not check either: it signs the final state first, badly,
    // so the close goes on-chain as a force close with the device's last checked state (the adjudicator checks both
    // signatures: a transaction with the bad one would revert).
    const closed = await c.close(ch.channelId, { timeoutMs: 2_000 });
    expect(closed.mode).toBe('force');
    expect(closed.state).toEqual(good);
    // Every record the device wrote, from the first to the close, holds states the hub signed.
    expect(saved.length).toBeGreaterThan(2);
    for (const r of saved) if (r.latest.hubSig !== undefined) expect(() => checked(r.latest)).not.toThrow();
  });

  it('reading latest checks the newest state once, however often it is read', async () => {
    faulty = false;
    let recovered = 0;
    const verifier: Verifier = {
      ...nobleVerifier,
      recoverAddress: (digest, sig) => (recovered++, nobleVerifier.recoverAddress(digest, sig)),
    };
    const c = await w.client(3, { verifier });
    const ch = await c.openChannel({ token: w.token, deposit: 1_000_000n });
    await ch.pay(10n);
    await ch.flushWrites();
    await ch.pay(10n); // acked, its check left for later
    recovered = 0;
    for (let i = 0; i < 50; i++) expect(ch.latest.state.paidByDevice).toBe(20n);
    expect(recovered).toBe(2); // the device's and the hub's signatures, once
    await ch.pay(10n);
    expect(ch.latest.state.paidByDevice).toBe(30n); // a newer state is checked again
    expect(recovered).toBe(4);
  });
});
