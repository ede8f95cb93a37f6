/**
 * Idle channels kept packed: the packed form unpacks to an equal record (property test), records of another shape are
 * left alone, and a channel table on a real LMDB store serves packed channels exactly as it serves live ones — it
 * wakes them for work and packs them again when their device goes away with nothing in flight.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import type { Message } from '@trickle/protocol/codec';
import { channelIdOf, domainSeparator, stateDigest, trickleDomain } from '@trickle/protocol/eip712';
import { nobleSigner, signatureFromHex, signatureToHex } from '@trickle/protocol/signer';
import { toAddress } from '@trickle/protocol/hex';
import {
  ETH_TOKEN,
  ZERO_ROOT,
  type Address,
  type Bytes32,
  type ChannelId,
  type SignatureHex,
  type State,
} from '@trickle/protocol/types';
import { testTable } from './table.fixture.js';
import { IdleRecords } from './idle-record.js';
import { openLmdbStore } from './store/lmdb.js';
import type { ChannelRecord, ChannelStatus } from './store/types.js';

const hexOf = (n: number) => fc.uint8Array({ minLength: n, maxLength: n }).map((b) => Buffer.from(b).toString('hex'));
const uint256 = fc.bigInt({ min: 0n, max: (1n << 256n) - 1n });
const small = fc.bigInt({ min: 0n, max: 1000n });
const amount = fc.oneof(small, uint256);
/** An address with any mix of upper- and lowercase digits (stored records hold what they were given). */
const address = fc
  .tuple(hexOf(20), fc.array(fc.boolean(), { minLength: 40, maxLength: 40 }))
  .map(([h, up]) => `0x${[...h].map((c, i) => (up[i] ? c.toUpperCase() : c)).join('')}` as Address);
const sig = hexOf(65).map((h) => `0x${h}` as SignatureHex);

const plainRecord = fc
  .record({
    chainId: fc.constantFrom(1n, 31337n),
    adjudicator: fc.constantFrom(`0x${'aa'.repeat(20)}`, toAddress(`0x${'bc'.repeat(20)}`)) as fc.Arbitrary<Address>,
    device: address,
    hub: fc.constantFrom(toAddress(`0x${'12'.repeat(20)}`)) as fc.Arbitrary<Address>,
    token: fc.constantFrom(ETH_TOKEN, toAddress(`0x${'77'.repeat(20)}`)) as fc.Arbitrary<Address>,
    challengeDuration: fc.constantFrom(60n, 3600n),
    salt: hexOf(32),
    channelId: hexOf(32),
    funding: fc.record({ device: amount, hub: amount }),
    status: fc.constantFrom<ChannelStatus>('open', 'closing', 'closed'),
    version: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
    ahead: fc.option(small, { nil: undefined }),
    paidByDevice: amount,
    paidByHub: amount,
    round: amount,
    isFinal: fc.boolean(),
    deviceSig: fc.option(sig, { nil: undefined }),
    hubSig: fc.option(sig, { nil: undefined }),
  })
  .map((r): ChannelRecord => {
    const channelId = `0x${r.channelId}` as ChannelId;
    const state: State = {
      channelId,
      version: r.version,
      paidByDevice: r.paidByDevice,
      paidByHub: r.paidByHub,
      round: r.round,
      locksRoot: ZERO_ROOT,
      lockedByDevice: 0n,
      lockedByHub: 0n,
      isFinal: r.isFinal,
    };
    return {
      params: {
        chainId: r.chainId,
        adjudicator: r.adjudicator,
        device: r.device,
        hub: r.hub,
        token: r.token,
        challengeDuration: r.challengeDuration,
        salt: `0x${r.salt}` as Bytes32,
      },
      channelId,
      funding: { device: r.funding.device, hub: r.funding.hub }, // fast-check's records have no prototype
      status: r.status,
      latest: {
        state,
        ...(r.deviceSig !== undefined ? { deviceSig: r.deviceSig } : {}),
        ...(r.hubSig !== undefined ? { hubSig: r.hubSig } : {}),
      },
      hubSignedVersion: r.ahead === undefined ? r.version : r.version + r.ahead,
    };
  });

describe('IdleRecords', () => {
  it('unpacks every plain record to an equal one, in a string of one byte per character', () => {
    const idle = new IdleRecords();
    fc.assert(
      fc.property(plainRecord, (r) => {
        const packed = idle.pack(r);
        expect(packed).toBeTypeOf('string');
        expect([...packed!].every((c) => c.charCodeAt(0) < 256)).toBe(true);
        expect(packed!.length).toBeLessThan(400);
        expect(idle.unpack(r.channelId, packed!)).toStrictEqual(r);
      }),
      { numRuns: 500 },
    );
  });

  it('leaves records of any other shape unpacked', () => {
    const idle = new IdleRecords();
    const [r] = fc.sample(plainRecord, { numRuns: 1, seed: 7 }) as [ChannelRecord];
    const s = r.latest.state;
    const others: ChannelRecord[] = [
      { ...r, locks: [] },
      { ...r, outgoing: { state: { ...s, version: s.version + 1n }, hubSig: `0x${'ab'.repeat(65)}` as SignatureHex } },
      { ...r, evidenceCount: 1 } as ChannelRecord,
      { ...r, latest: { ...r.latest, state: { ...s, locksRoot: `0x${'01'.repeat(32)}` as Bytes32 } } },
      { ...r, latest: { ...r.latest, state: { ...s, lockedByHub: 1n } } },
      { ...r, latest: { ...r.latest, state: { ...s, channelId: `0x${'00'.repeat(32)}` as ChannelId } } },
      { ...r, latest: { state: s, deviceSig: `0x${'AB'.repeat(65)}` as SignatureHex } },
      { ...r, latest: { state: s, hubSig: undefined } },
      { ...r, params: { ...r.params, salt: `0x${'AB'.repeat(32)}` as Bytes32 } },
      { ...r, funding: { device: -1n, hub: 0n } },
      { ...r, hubSignedVersion: 1n << 256n },
      { ...r, status: 'gone' as ChannelStatus },
    ];
    for (const o of others) expect(idle.pack(o)).toBeUndefined();
    expect(idle.pack(r)).toBeTypeOf('string');
  });
});

describe('a channel table with packed idle channels', () => {
  const dir = mkdtempSync(join(tmpdir(), 'trickle-idle-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const hubKey = nobleSigner(`0x${'11'.repeat(32)}`);
  const alice = nobleSigner(`0x${'22'.repeat(32)}`);
  const bob = nobleSigner(`0x${'33'.repeat(32)}`);
  const adjudicator = toAddress(`0x${'aa'.repeat(20)}`);
  const sep = domainSeparator(trickleDomain(31337n, adjudicator));
  const sign = (key: typeof hubKey, s: State) => signatureToHex(key.signDigest(stateDigest(sep, s)));

  function channel(device: typeof alice, salt: string, paid: bigint): ChannelRecord {
    const params = {
      chainId: 31337n,
      adjudicator,
      device: device.address,
      hub: hubKey.address,
      token: ETH_TOKEN,
      challengeDuration: 3600n,
      salt: `0x${salt.repeat(32)}` as Bytes32,
    };
    const channelId = channelIdOf(params);
    const state: State = {
      channelId,
      version: 3n,
      paidByDevice: paid,
      paidByHub: 0n,
      round: 0n,
      locksRoot: ZERO_ROOT,
      lockedByDevice: 0n,
      lockedByHub: 0n,
      isFinal: false,
    };
    return {
      params,
      channelId,
      funding: { device: 1000n, hub: 1000n },
      status: 'open',
      latest: { state, deviceSig: sign(device, state), hubSig: sign(hubKey, state) },
      hubSignedVersion: 3n,
    };
  }

  it('serves packed channels like live ones, and packs them again once their device is gone', async () => {
    const records = [channel(alice, '01', 10n), channel(alice, '02', 20n), channel(bob, '03', 30n)];
    const [a1, a2, b1] = records as [ChannelRecord, ChannelRecord, ChannelRecord];
    const store = openLmdbStore({ path: join(dir, 'db') });
    await store.commit(records.map((record) => ({ kind: 'channel', record })));
    const online = new Set<Address>();
    const frames: Message[] = [];
    const table = testTable(hubKey, store, {
      send: (device, msg) => {
        if (!online.has(device)) return false;
        frames.push(msg);
        return true;
      },
      isConnected: (device) => online.has(device),
      now: () => 1_700_000_000_000,
    });
    table.restore(await store.loadChannels());
    // A packed channel is unpacked into new objects on every read; a live one answers with its one record.
    const packed = (id: ChannelId) => table.get(id) !== table.get(id);

    expect(table.size).toBe(3);
    for (const r of records) {
      expect(packed(r.channelId)).toBe(true);
      expect(table.get(r.channelId)).toStrictEqual(r);
    }
    expect([...table.records()]).toStrictEqual(records);
    expect(table.channelsOf(alice.address).sort()).toEqual([a1.channelId, a2.channelId].sort());
    expect(table.channelsOf(bob.address)).toEqual([b1.channelId]);
    expect(table.locksOf(a1.channelId)).toEqual([]);
    // A frame from another device for a packed channel is refused and leaves it packed.
    const foreign = { t: 'ack', id: 1, version: 3n, sig: new Uint8Array(65) } as const;
    expect(() => table.enqueue(bob.address, a1.channelId, foreign)).toThrow(
      expect.objectContaining({ code: 'WRONG_CHANNEL' }),
    );
    expect(packed(a1.channelId)).toBe(true);

    // Alice comes online: her channels wake; a credit goes through on one, a payment of hers on the other.
    online.add(alice.address);
    table.deviceConnected(alice.address);
    const credited = table.credit(a1.channelId, 5n);
    await expect.poll(() => frames.find((f) => f.t === 'update')).toBeDefined();
    const proposal = frames.find((f) => f.t === 'update') as Extract<Message, { t: 'update' }>;
    expect(proposal.state).toMatchObject({ channelId: a1.channelId, version: 4n, paidByHub: 5n });
    const ackSig = signatureFromHex(sign(alice, proposal.state));
    table.enqueue(alice.address, a1.channelId, { t: 'ack', id: proposal.id, version: 4n, sig: ackSig });
    expect((await credited).state).toMatchObject({ version: 4n, paidByHub: 5n });

    const pay: State = { ...a2.latest.state, version: 4n, paidByDevice: 27n };
    table.enqueue(alice.address, a2.channelId, {
      t: 'update',
      id: 9,
      state: pay,
      sig: signatureFromHex(sign(alice, pay)),
    });
    await expect.poll(() => frames.find((f) => f.t === 'ack' && f.id === 9)).toBeDefined();
    expect(packed(a1.channelId)).toBe(false);
    expect(packed(a2.channelId)).toBe(false);
    expect(packed(b1.channelId)).toBe(true); // bob is offline and nothing asked for his channel

    // A credit that bob, offline, cannot answer keeps his channel live (it has work in flight).
    const toBob = table.credit(b1.channelId, 7n);
    await table.onChain(b1.channelId, {}); // queued behind the credit: resolves once that step is done
    await new Promise((resolve) => setImmediate(resolve));
    table.deviceDisconnected(bob.address);
    expect(packed(b1.channelId)).toBe(false);

    // Alice leaves with nothing in flight: both her channels are packed again, holding the states just made.
    online.delete(alice.address);
    table.deviceDisconnected(alice.address);
    const stored = new Map((await store.loadChannels()).map((r) => [r.channelId, r]));
    for (const id of [a1.channelId, a2.channelId]) {
      expect(packed(id)).toBe(true);
      expect(table.get(id)).toStrictEqual(stored.get(id));
    }
    expect(table.get(a2.channelId)!.latest.state).toMatchObject({ version: 4n, paidByDevice: 27n });
    expect(table.get(a2.channelId)!.latest.hubSig).toBeDefined();

    // Back online: the packed channel wakes where it was and takes the next payment.
    online.add(alice.address);
    table.deviceConnected(alice.address);
    const next: State = { ...pay, version: 5n, paidByDevice: 40n };
    table.enqueue(alice.address, a2.channelId, {
      t: 'update',
      id: 10,
      state: next,
      sig: signatureFromHex(sign(alice, next)),
    });
    await expect.poll(() => frames.find((f) => f.t === 'ack' && f.id === 10)).toBeDefined();
    expect((await store.loadChannels()).find((r) => r.channelId === a2.channelId)!.latest.state).toStrictEqual(next);

    // Bob comes back and countersigns the credit he missed; then, gone again, his channel is packed.
    online.add(bob.address);
    table.deviceConnected(bob.address);
    await expect.poll(() => frames.find((f) => f.t === 'update' && f.state.channelId === b1.channelId)).toBeDefined();
    const toBobState = (frames.find((f) => f.t === 'update' && f.state.channelId === b1.channelId) as Extract<
      Message,
      { t: 'update' }
    >)!;
    table.enqueue(bob.address, b1.channelId, {
      t: 'ack',
      id: toBobState.id,
      version: toBobState.state.version,
      sig: signatureFromHex(sign(bob, toBobState.state)),
    });
    expect((await toBob).state).toMatchObject({ paidByHub: 7n });
    await new Promise((resolve) => setImmediate(resolve)); // the step that answered it ends
    online.delete(bob.address);
    table.deviceDisconnected(bob.address);
    expect(packed(b1.channelId)).toBe(true);
    expect(table.get(b1.channelId)!.latest.state.paidByHub).toBe(7n);
    await store.close();
  });
});
