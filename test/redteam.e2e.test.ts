import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { authDigest, domainSeparator, stateDigest, trickleDomain } from '@trickle/protocol/eip712';
import { nobleSigner, SECP256K1_N, signatureToHex, type Signer } from '@trickle/protocol/signer';
import { hashPreimage, lockCommitment } from '@trickle/protocol/locks';
import { hashOrder } from '@trickle/market';
import { encodeFrame, type Message } from '@trickle/protocol/codec';
import { MAX_UINT64, type Address, type Bytes32, type ChannelId, type State } from '@trickle/protocol/types';
import type { ClientChannel } from '@trickle/client/channel';
import type { TrickleClient } from '@trickle/client/client';
import { createWorld, type World } from './helpers/harness.js';
import { RawDevice } from './helpers/raw-device.js';
import { waitFor } from './helpers/wait.js';

/**
 * Attacks the way payment-channel users get bitten, against a real hub over WebSocket: forged and malleable
 * signatures, states signed for another deployment, a final state over pending locks, a version at the top of
 * uint64, and hand-made authentication. Each ends in a typed refusal with the hub's state unchanged (and the honest
 * client's state unchanged), or is shown harmless.
 */
describe('red team: a real hub over WebSocket', () => {
  let w: World;
  let mallory: TrickleClient;
  let mch: ClientChannel;
  let honest: TrickleClient;
  let hch: ClientChannel;
  let signer: Signer;
  let sep: Uint8Array;
  let raw: RawDevice;

  beforeAll(async () => {
    w = await createWorld();
    await w.startHub();
    mallory = await w.client(2);
    mch = await mallory.openChannel({ token: w.token, deposit: 1_000_000n });
    await mch.pay(1_000n);
    honest = await w.client(3);
    hch = await honest.openChannel({ token: w.token, deposit: 1_000_000n });
    await hch.pay(5n);
    signer = nobleSigner(w.chain.accounts[2]!);
    sep = domainSeparator(trickleDomain(w.chain.chainId, w.adjudicator));
    await mallory.disconnect();
    raw = await RawDevice.connect(w.hub!.url, signer);
    raw.send({ t: 'sync', id: 2, channelId: mch.channelId, latest: null });
    await raw.next((m) => m.t === 'sync' && m.id === 2);
  }, 60_000);
  afterAll(async () => {
    raw?.close();
    await w?.close();
  });

  const hubLatest = (id: ChannelId) => w.hub!.channels.get(id)!.latest;
  const hubLocks = (id: ChannelId) => w.hub!.channels.get(id)!.locks ?? [];
  const base = (): State => hubLatest(mch.channelId).state;
  const next = (more: Partial<State> = {}): State => ({
    ...base(),
    version: base().version + 1n,
    paidByDevice: base().paidByDevice + 1n,
    ...more,
  });
  const sign = (s: State, by: Signer = signer, separator = sep) => by.signDigest(stateDigest(separator, s));
  let nextId = 100;

  /** Send a frame; the reply with its id must be a reject (or error) with `code`; nothing changed on the hub. */
  async function refused(msg: Message, code: string) {
    const before = hubLatest(mch.channelId);
    const locksBefore = hubLocks(mch.channelId);
    const honestBefore = hubLatest(hch.channelId);
    raw.send(msg);
    const reply = await raw.next((m) => m.id === msg.id && (m.t === 'reject' || m.t === 'ack' || m.t === 'error'));
    expect(reply.t === 'reject' || reply.t === 'error', `${msg.t} answered ${reply.t}`).toBe(true);
    expect((reply as { code: string }).code).toBe(code);
    expect(hubLatest(mch.channelId)).toEqual(before);
    expect(hubLocks(mch.channelId)).toEqual(locksBefore);
    expect(hubLatest(hch.channelId)).toEqual(honestBefore);
  }
  const update = (state: State, sig: Uint8Array, more: object = {}): Message =>
    ({ t: 'update', id: nextId++, state, sig, ...more }) as Message;

  describe('signatures', () => {
    it('high-s twin of a valid signature (s → n − s, v flipped): BAD_SIGNATURE', async () => {
      const s = next();
      const sig = sign(s);
      const hi = Uint8Array.from(sig);
      const sv = SECP256K1_N - BigInt('0x' + Buffer.from(sig.subarray(32, 64)).toString('hex'));
      hi.set(Buffer.from(sv.toString(16).padStart(64, '0'), 'hex'), 32);
      hi[64] = sig[64] === 27 ? 28 : 27;
      await refused(update(s, hi), 'BAD_SIGNATURE');
    });
    it('v = 0 / 1 instead of 27 / 28: BAD_SIGNATURE', async () => {
      const s = next();
      const sig = Uint8Array.from(sign(s));
      sig[64] = sig[64]! - 27;
      await refused(update(s, sig), 'BAD_SIGNATURE');
    });
    it('all-zero and all-0xff signatures: BAD_SIGNATURE', async () => {
      await refused(update(next(), new Uint8Array(65)), 'BAD_SIGNATURE');
      await refused(update(next(), new Uint8Array(65).fill(0xff)), 'BAD_SIGNATURE');
    });
    it('a 64- or 66-byte signature is not a frame: MALFORMED error, nothing changed', async () => {
      const before = hubLatest(mch.channelId);
      const s = next();
      const sig = sign(s);
      const good = encodeFrame({ t: 'update', id: nextId++, state: s, sig });
      const at = Buffer.from(good).indexOf(Buffer.from(sig));
      expect([good[at - 2], good[at - 1]]).toEqual([0xc4, 65]); // bin 8, 65 bytes
      const short = Uint8Array.from([
        ...good.subarray(0, at - 1),
        64,
        ...good.subarray(at, at + 64),
        ...good.subarray(at + 65),
      ]);
      const long = Uint8Array.from([
        ...good.subarray(0, at - 1),
        66,
        ...good.subarray(at, at + 65),
        0,
        ...good.subarray(at + 65),
      ]);
      for (const bytes of [short, long]) {
        raw.sendRaw(bytes);
        expect(((await raw.next((m) => m.t === 'error')) as { code: string }).code).toBe('MALFORMED');
      }
      expect(hubLatest(mch.channelId)).toEqual(before);
    });
    it('signed under another chain id, or for another adjudicator (a replay across deployments): BAD_SIGNATURE', async () => {
      const s = next();
      await refused(update(s, sign(s, signer, domainSeparator(trickleDomain(1n, w.adjudicator)))), 'BAD_SIGNATURE');
      const other = ('0x' + '42'.repeat(20)) as Address;
      await refused(
        update(s, sign(s, signer, domainSeparator(trickleDomain(w.chain.chainId, other)))),
        'BAD_SIGNATURE',
      );
    });
    it("signed by the hub's own key (the counterparty's key in the wrong role): BAD_SIGNATURE", async () => {
      const s = next();
      await refused(update(s, sign(s, nobleSigner(w.hubKey))), 'BAD_SIGNATURE');
    });
    it('our own signature over the same numbers on another channel (a replay across channels): BAD_SIGNATURE', async () => {
      const s = next();
      await refused(update(s, sign({ ...s, channelId: hch.channelId })), 'BAD_SIGNATURE');
    });
    it('a close signed under another deployment: BAD_SIGNATURE', async () => {
      const s = { ...base(), version: base().version + 1n, isFinal: true };
      const other = domainSeparator(trickleDomain(w.chain.chainId + 1n, w.adjudicator));
      await refused({ t: 'close', id: nextId++, state: s, sig: sign(s, signer, other) }, 'BAD_SIGNATURE');
    });
  });

  describe('states', () => {
    it('lockedByDevice raised without a lock (escrowing nothing, a plain update): MALFORMED', async () => {
      const s = next({ lockedByDevice: 10n, locksRoot: ('0x' + '11'.repeat(32)) as Bytes32 });
      await refused(update(s, sign(s)), 'MALFORMED');
    });
    it('paidByDevice above uint256 cannot even be sent; at the uint256 maximum: INSUFFICIENT_FUNDS', async () => {
      const s = next({ paidByDevice: (1n << 256n) - 1n });
      await refused(update(s, sign(s)), 'INSUFFICIENT_FUNDS');
    });
    it('a close that raises the device counter: BAD_FINAL; one that changes the round: BAD_ROUND', async () => {
      const s = next({ isFinal: true });
      await refused({ t: 'close', id: nextId++, state: s, sig: sign(s) }, 'BAD_FINAL');
      const r = { ...base(), version: base().version + 1n, round: base().round + 1n, isFinal: true };
      await refused({ t: 'close', id: nextId++, state: r, sig: sign(r) }, 'BAD_ROUND');
    });
  });

  describe('locks', () => {
    const expiry = () => BigInt(Math.floor(Date.now() / 1000) + 600);
    it('a lock whose state does not commit to it (wrong root, wrong total): MALFORMED', async () => {
      const lock = { amount: 50n, hash: hashPreimage(('0x' + '01'.repeat(32)) as Bytes32), expiry: expiry() };
      const good = lockCommitment([{ ...lock, payer: 'device' }]);
      const s1 = { ...base(), version: base().version + 1n, ...good, locksRoot: ('0x' + '22'.repeat(32)) as Bytes32 };
      await refused(update(s1, sign(s1), { lock }), 'MALFORMED');
      const s2 = { ...base(), version: base().version + 1n, ...good, lockedByDevice: 49n };
      await refused(update(s2, sign(s2), { lock }), 'MALFORMED');
    });
    it('a lock bigger than what the device can pay: INSUFFICIENT_FUNDS', async () => {
      const lock = { amount: 2_000_000n, hash: hashPreimage(('0x' + '02'.repeat(32)) as Bytes32), expiry: expiry() };
      const s = { ...base(), version: base().version + 1n, ...lockCommitment([{ ...lock, payer: 'device' }]) };
      await refused(update(s, sign(s), { lock }), 'INSUFFICIENT_FUNDS');
    });
    it('a lock expiring beyond 14 days (on-chain settlement would wait for it, freezing the channel): LIMIT_EXCEEDED', async () => {
      for (const far of [BigInt(Math.floor(Date.now() / 1000) + 15 * 24 * 3600), MAX_UINT64]) {
        const lock = { amount: 1n, hash: hashPreimage(('0x' + '04'.repeat(32)) as Bytes32), expiry: far };
        const s = { ...base(), version: base().version + 1n, ...lockCommitment([{ ...lock, payer: 'device' }]) };
        await refused(update(s, sign(s), { lock }), 'LIMIT_EXCEEDED');
      }
    });
    it('a final state over a pending lock: BAD_FINAL (a cooperative close takes no locks; nothing could settle it off-chain)', async () => {
      const lock = { amount: 50n, hash: hashPreimage(('0x' + '03'.repeat(32)) as Bytes32), expiry: expiry() };
      const s = { ...base(), version: base().version + 1n, ...lockCommitment([{ ...lock, payer: 'device' }]) };
      const id = nextId++;
      raw.send({ t: 'update', id, state: s, sig: sign(s), lock });
      expect((await raw.next((m) => m.id === id)).t).toBe('ack');
      expect(hubLocks(mch.channelId)).toHaveLength(1);
      const fin = { ...base(), version: base().version + 1n, isFinal: true };
      await refused({ t: 'close', id: nextId++, state: fin, sig: sign(fin) }, 'BAD_FINAL');
      expect(hubLatest(mch.channelId).state.isFinal).toBe(false);
    });
  });

  describe('sessions', () => {
    const authFrame = (d: RawDevice, device: Address, by: Signer = signer): Message => ({
      t: 'auth',
      id: 1,
      device,
      nonce: d.challenge.nonce,
      sig: by.signDigest(authDigest(sep, device, d.challenge.hub, d.challenge.nonce)),
    });
    it('auth signed by one key for another device’s address: UNAUTHORIZED, 1008', async () => {
      const d = await RawDevice.connect(w.hub!.url);
      d.send(authFrame(d, honest.address as Address));
      expect(((await d.next((m) => m.t === 'error')) as { code: string }).code).toBe('UNAUTHORIZED');
      expect(await d.closed()).toBe(1008);
    });
    it("an auth frame replayed on another connection (the old connection's nonce): UNAUTHORIZED, 1008", async () => {
      const first = await RawDevice.connect(w.hub!.url);
      const captured = authFrame(first, signer.address);
      first.close();
      const d = await RawDevice.connect(w.hub!.url);
      expect(d.challenge.nonce).not.toBe(first.challenge.nonce);
      d.send(captured);
      expect(((await d.next((m) => m.t === 'error')) as { code: string }).code).toBe('UNAUTHORIZED');
      expect(await d.closed()).toBe(1008);
    });
    it('auth for the hub’s domain on another chain: UNAUTHORIZED, 1008', async () => {
      const d = await RawDevice.connect(w.hub!.url);
      const other = domainSeparator(trickleDomain(w.chain.chainId + 1n, w.adjudicator));
      d.send({
        t: 'auth',
        id: 1,
        device: signer.address,
        nonce: d.challenge.nonce,
        sig: signer.signDigest(authDigest(other, signer.address, d.challenge.hub, d.challenge.nonce)),
      });
      expect(((await d.next((m) => m.t === 'error')) as { code: string }).code).toBe('UNAUTHORIZED');
      expect(await d.closed()).toBe(1008);
    });
    it('a second session for the same device replaces the first; the first is closed and the second serves', async () => {
      const before = hubLatest(mch.channelId);
      const second = await RawDevice.connect(w.hub!.url, signer);
      expect(await raw.closed()).toBe(4000);
      raw = second;
      const id = nextId++;
      raw.send({ t: 'sync', id, channelId: mch.channelId, latest: null });
      const sync = (await raw.next((m) => m.t === 'sync' && m.id === id)) as Extract<Message, { t: 'sync' }>;
      expect(sync.latest?.state).toEqual(before.state);
      expect(hubLatest(mch.channelId)).toEqual(before);
    });
  });

  describe('routes', () => {
    const pid = () => `0x${randomBytes(32).toString('hex')}` as Bytes32;
    const routed = (to: Address, amount: bigint, paymentId: Bytes32 = pid()): Message => {
      const s = next({ paidByDevice: base().paidByDevice + amount });
      return update(s, sign(s), { route: { to, amount, paymentId } });
    };
    it('pay yourself: NO_ROUTE; pay an address with no channel: NO_ROUTE', async () => {
      await refused(routed(signer.address, 3n), 'NO_ROUTE');
      await refused(routed(('0x' + '5a'.repeat(20)) as Address, 3n), 'NO_ROUTE');
    });
    it('a payee without enough hub funds in its channel: HUB_LIQUIDITY', async () => {
      await refused(routed(honest.address as Address, 100_000n), 'HUB_LIQUIDITY');
    });
    it('a payment id used once already: NO_ROUTE, and the payee is paid once', async () => {
      await w.hubDeposit(hch.channelId, 1_000n);
      const paid0 = hubLatest(hch.channelId).state.paidByHub;
      const id = pid();
      const first = routed(honest.address as Address, 3n, id);
      raw.send(first);
      expect((await raw.next((m) => m.id === first.id)).t).toBe('ack');
      await waitFor(() => hubLatest(hch.channelId).state.paidByHub === paid0 + 3n);
      await refused(routed(honest.address as Address, 3n, id), 'NO_ROUTE');
      await new Promise((r) => setTimeout(r, 200));
      expect(hubLatest(hch.channelId).state.paidByHub).toBe(paid0 + 3n);
      expect(hch.latest.state.paidByHub).toBe(paid0 + 3n);
    });
  });

  describe("another device's channel", () => {
    it("open with the honest device's params, sync or close on its channel: WRONG_CHANNEL, and nothing of it is disclosed", async () => {
      const theirs = hubLatest(hch.channelId);
      const ask = async (msg: Message) => {
        raw.send(msg);
        return raw.next((m) => m.id === msg.id);
      };
      const params = w.hub!.channels.get(hch.channelId)!.params;
      expect(await ask({ t: 'open', id: nextId++, params })).toMatchObject({ t: 'error', code: 'WRONG_CHANNEL' });
      expect(await ask({ t: 'sync', id: nextId++, channelId: hch.channelId, latest: null })).toMatchObject({
        t: 'error',
        code: 'WRONG_CHANNEL',
      });
      const fin = { ...theirs.state, version: theirs.state.version + 1n, isFinal: true };
      expect(await ask({ t: 'close', id: nextId++, state: fin, sig: sign(fin) })).toMatchObject({
        t: 'reject',
        code: 'WRONG_CHANNEL',
        latest: null,
      });
      expect(hubLatest(hch.channelId)).toEqual(theirs);
    });
  });

  describe('forged syncs', () => {
    async function syncWith(latest: Extract<Message, { t: 'sync' }>['latest']) {
      const before = hubLatest(mch.channelId);
      const id = nextId++;
      raw.send({ t: 'sync', id, channelId: mch.channelId, latest });
      const reply = (await raw.next((m) => m.id === id)) as Extract<Message, { t: 'sync' }>;
      expect(reply.t).toBe('sync');
      expect(reply.latest?.state).toEqual(before.state);
      expect(hubLatest(mch.channelId)).toEqual(before);
    }
    it('a newer state with the device’s signature in both slots, or the hub slot empty: ignored, the hub answers with its own', async () => {
      const s = next({ paidByDevice: base().paidByDevice - 1n });
      const d = signatureToHex(sign(s));
      await syncWith({ state: s, deviceSig: d, hubSig: d });
      await syncWith({ state: s, deviceSig: d, hubSig: undefined });
    });
    it('an older fully signed state: the hub answers with its newer one, unchanged', async () => {
      const old = base();
      const s = next();
      raw.send(update(s, sign(s)));
      await raw.next((m) => m.t === 'ack' && m.version === s.version);
      expect(base().version).toBeGreaterThan(old.version);
      const hubSigOld = signatureToHex(nobleSigner(w.hubKey).signDigest(stateDigest(sep, old)));
      const devSigOld = signatureToHex(sign(old));
      await syncWith({ state: old, deviceSig: devSigOld, hubSig: hubSigOld });
    });
  });

  describe('versions', () => {
    it('a device that jumps to version 2^64 − 1 bricks only its own channel: a payment routed to it is refunded to its payer, and the hub signs nothing above uint64', async () => {
      await w.hubDeposit(mch.channelId, 1_000n);
      const top = next({ version: MAX_UINT64 });
      raw.send(update(top, sign(top)));
      await raw.next((m) => m.t === 'ack' && m.version === MAX_UINT64);
      const mBefore = hubLatest(mch.channelId);
      const hBefore = hubLatest(hch.channelId).state;
      // Before the fix the hub signed and stored a credit at version 2^64, which no frame can carry: the payment
      // waited forever (TIMEOUT on the payer) and the payer's 7 stayed with the hub.
      const paid = await hch.pay(7n, { to: signer.address }).then(
        () => 'delivered',
        (e: unknown) => (e as { code?: string }).code,
      );
      expect(paid).toBe('NO_ROUTE');
      await waitFor(() => hubLatest(hch.channelId).state.paidByHub === hBefore.paidByHub + 7n);
      expect(hubLatest(hch.channelId).state.paidByDevice).toBe(hBefore.paidByDevice + 7n);
      expect(hch.latest.state).toEqual(hubLatest(hch.channelId).state);
      expect(hubLatest(mch.channelId)).toEqual(mBefore);
      expect(w.hub!.channels.get(mch.channelId)!.hubSignedVersion).toBe(MAX_UINT64);
      expect(raw.inbox.filter((m) => m.t === 'update')).toEqual([]);
    });
  });
});

describe('red team: market escrows', () => {
  let w: World;
  beforeAll(async () => {
    w = await createWorld({ accounts: 4 });
    // Rounds are closed by the test (closeRound).
    await w.startHub({ market: { roundMs: 600_000, feeBps: 0n } });
  }, 60_000);
  afterAll(async () => w?.close());

  it('one escrow backing the same bid id in the open round and the next: the second is BAD_ORDER, and the escrow comes back once', async () => {
    const c = await w.client(2);
    const ch = await c.openChannel({ token: w.token, deposit: 1_000_000n });
    await w.hubDeposit(ch.channelId, 1_000_000n);
    const r = c.market.round;
    const id = `0x${randomBytes(32).toString('hex')}` as Bytes32;
    const order = { id, market: 'kwh', side: 'bid' as const, quantity: 2n, price: 100n, round: r };
    const domain = trickleDomain(w.chain.chainId, w.adjudicator);
    const key = nobleSigner(w.chain.accounts[2]!);
    const signOrder = (o: typeof order) => key.signDigest(hashOrder(domain, { ...o, participant: c.address }));
    const before = ch.latest.state;
    await ch.pay(200n, { escrowFor: id });
    await expect(c.request((rid) => ({ t: 'order', id: rid, order, sig: signOrder(order) }))).resolves.toMatchObject({
      t: 'accepted',
    });
    const again = { ...order, round: r + 1n };
    // Before the fix this was accepted: nothing filled either bid, and each round refunded the whole escrow.
    await expect(
      c.request((rid) => ({ t: 'order', id: rid, order: again, sig: signOrder(again) })),
    ).rejects.toMatchObject({ code: 'BAD_ORDER' });
    await w.hub!.market!.closeRound();
    await waitFor(() => ch.latest.state.round >= r);
    await w.hub!.market!.closeRound();
    await new Promise((res) => setTimeout(res, 500));
    const after = ch.latest.state;
    expect(after.paidByDevice - before.paidByDevice).toBe(200n);
    expect(after.paidByHub - before.paidByHub).toBe(200n);
    expect(w.hub!.channels.get(ch.channelId)!.latest.state).toEqual(after);
  });

  it('an order for a round that is neither the open one nor the next (spec §7): BAD_ORDER', async () => {
    const c = await w.client(3);
    await c.openChannel({ token: w.token, deposit: 1_000n });
    const r = c.market.round;
    const domain = trickleDomain(w.chain.chainId, w.adjudicator);
    const key = nobleSigner(w.chain.accounts[3]!);
    for (const round of [r - 1n, r + 2n]) {
      // An ask (no escrow needed), so the round alone decides.
      const order = {
        id: `0x${randomBytes(32).toString('hex')}` as Bytes32,
        market: 'kwh',
        side: 'ask' as const,
        quantity: 1n,
        price: 10n,
        round,
      };
      const sig = key.signDigest(hashOrder(domain, { ...order, participant: c.address }));
      await expect(c.request((rid) => ({ t: 'order', id: rid, order, sig }))).rejects.toMatchObject({
        code: 'BAD_ORDER',
      });
    }
    const ok = {
      id: `0x${randomBytes(32).toString('hex')}` as Bytes32,
      market: 'kwh',
      side: 'ask' as const,
      quantity: 1n,
      price: 10n,
      round: r + 1n,
    };
    const sig = key.signDigest(hashOrder(domain, { ...ok, participant: c.address }));
    await expect(c.request((rid) => ({ t: 'order', id: rid, order: ok, sig }))).resolves.toMatchObject({
      t: 'accepted',
    });
  });
});
