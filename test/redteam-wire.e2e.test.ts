import { readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Packr } from 'msgpackr';
import { authDigest, domainSeparator, stateDigest, trickleDomain } from '@trickle/protocol/eip712';
import { nobleSigner, nobleVerifier, SECP256K1_N, type Signer } from '@trickle/protocol/signer';
import { uintToBytes, type Message } from '@trickle/protocol/codec';
import type { Bytes32, ChannelId, SignedState, State } from '@trickle/protocol/types';
import type { ClientChannel } from '@trickle/client/channel';
import { openLmdbStore } from '@trickle/hub/store/lmdb';
import type { HubStore } from '@trickle/hub/store/types';
import { createWorld, type World } from './helpers/harness.js';
import { RawDevice, SocketClosed } from './helpers/raw-device.js';
import { waitFor } from './helpers/wait.js';

/**
 * Red team (helper 62): the hub's wire protocol and sessions, attacked as a hostile device would, frame by frame, for
 * what the earlier passes (hostile, redteam, edge, flood, backpressure, spec-device) leave open. Every bad input gets a
 * typed answer (or, for an `ack`, none: spec §5), leaves the hub's state and its store as they were, and an honest
 * device paying on its own connection throughout is served.
 */
describe('red team: the wire and sessions of a real hub', () => {
  let w: World;
  let store: HubStore;
  let victimKey: Signer;
  let vch: ClientChannel;
  let honest: ClientChannel;
  let sep: Uint8Array;
  let streaming = true;
  let streamed = 0;
  let streamLoop: Promise<void>;
  let nextId = 1000;
  const packr = new Packr({ useRecords: false, variableMapSize: true });

  beforeAll(async () => {
    w = await createWorld();
    store = openLmdbStore({ path: join(w.dir, 'hub-store') });
    await w.startHub({
      limits: {
        maxFrameBytes: 4096,
        maxMalformedFrames: 4,
        maxInFlightPerConnection: 8,
        maxHandshakesPerAddress: 24,
      },
      more: { store },
    });
    const victim = await w.client(2);
    vch = await victim.openChannel({ token: w.token, deposit: 1_000_000n });
    await vch.pay(1_000n);
    await w.hubDeposit(vch.channelId, 100_000n);
    await victim.disconnect();
    const h = await w.client(3);
    honest = await h.openChannel({ token: w.token, deposit: 100_000_000n });
    streamLoop = (async () => {
      while (streaming && streamed < 50_000) {
        await honest.pay(1n);
        streamed++;
      }
    })();
    victimKey = nobleSigner(w.chain.accounts[2]!);
    sep = domainSeparator(trickleDomain(w.chain.chainId, w.adjudicator));
  });
  afterAll(async () => {
    streaming = false;
    await streamLoop;
    await w?.close();
  });

  const hubLatest = (id: ChannelId): SignedState => w.hub!.channels.get(id)!.latest;
  const stored = async (id: ChannelId) => (await store.loadChannels()).find((r) => r.channelId === id)?.latest;
  /** The hub's state of the victim's channel, in memory and in its store. */
  const snapshot = async () => ({ mem: hubLatest(vch.channelId), disk: await stored(vch.channelId) });
  const sign = (s: State, by: Signer = victimKey, separator = sep) => by.signDigest(stateDigest(separator, s));
  const nextState = (paid = 1n): State => {
    const s = hubLatest(vch.channelId).state;
    return { ...s, version: s.version + 1n, paidByDevice: s.paidByDevice + paid };
  };
  const victim = () => RawDevice.connect(w.hub!.url, victimKey);
  const verifierOf = () => nobleVerifier;
  /** The answer (reject, ack or error) to request `id`. */
  const answer = (d: RawDevice, id: number) =>
    d.next((m) => (m.t === 'reject' || m.t === 'ack' || m.t === 'error') && m.id === id) as Promise<
      Extract<Message, { t: 'reject' | 'ack' | 'error' }>
    >;
  const codeOf = (m: Message) => (m as { code?: string }).code;
  /**
   * The answers to pipelined updates: each one's reject (by id), or `ack` when an ack at or above its version came
   * (acks are cumulative: a backlog's newest is acked once for all of it, spec §5).
   */
  async function answers(
    d: RawDevice,
    sent: { id: number; version: bigint }[],
    refusals: Message[] = [],
    timeoutMs = 10_000,
  ) {
    const out = new Map<number, string>();
    let acked = -1n;
    const until = Date.now() + timeoutMs;
    while (sent.some((u) => !out.has(u.id) && u.version > acked)) {
      if (Date.now() > until) throw new Error('updates left unanswered');
      const m = await d.next(
        (x) =>
          (x.t === 'ack' && x.channelId === vch.channelId) ||
          ((x.t === 'reject' || x.t === 'error') && sent.some((u) => u.id === x.id)),
        until - Date.now(),
      );
      if (m.t === 'ack') acked = m.version > acked ? m.version : acked;
      else {
        out.set(m.id, codeOf(m)!);
        refusals.push(m);
      }
    }
    return sent.map((u) => out.get(u.id) ?? 'ack');
  }
  /** A sync's answer: a barrier behind every frame of `d` on the channel sent before it. */
  async function syncOf(d: RawDevice, channelId: ChannelId = vch.channelId) {
    const id = nextId++;
    d.send({ t: 'sync', id, channelId, latest: null });
    return (await d.next((m) => m.t === 'sync' && m.id === id)) as Extract<Message, { t: 'sync' }>;
  }
  const word = (v: bigint) => Buffer.from(v.toString(16).padStart(64, '0'), 'hex');
  const bin = (hex: string) => Buffer.from(hex.slice(2), 'hex');
  /** A state as the wire's array, each element replaceable by raw MessagePack values. */
  const stateArray = (s: State, patch: Record<number, unknown> = {}) => {
    const a: unknown[] = [
      bin(s.channelId),
      Buffer.from(uintToBytes(s.version)),
      Buffer.from(uintToBytes(s.paidByDevice)),
      Buffer.from(uintToBytes(s.paidByHub)),
      Buffer.from(uintToBytes(s.round)),
      bin(s.locksRoot),
      Buffer.from(uintToBytes(s.lockedByDevice)),
      Buffer.from(uintToBytes(s.lockedByHub)),
      s.isFinal,
    ];
    for (const [i, v] of Object.entries(patch)) a[Number(i)] = v;
    return a;
  };

  describe('integers out of range in a live update (spec §3: u64/u256 are minimal big-endian binary)', () => {
    it('negative, above uint64/uint256, leading zero, a MessagePack integer or string for a u256: MALFORMED with the frame’s id, nothing changes', async () => {
      const before = await snapshot();
      const s = nextState();
      const sig = Buffer.from(sign(s));
      const cases: [string, Record<number, unknown>][] = [
        ['negative integer for the version', { 1: -1 }],
        ['negative integer for paidByDevice', { 2: -5 }],
        ['a plain integer for paidByDevice', { 2: Number(s.paidByDevice) }],
        ['a 9-byte version (above uint64)', { 1: Buffer.concat([Buffer.from([1]), Buffer.alloc(8)]) }],
        ['a 33-byte paidByDevice (above uint256)', { 2: Buffer.concat([Buffer.from([1]), Buffer.alloc(32)]) }],
        [
          'a leading zero byte on paidByDevice',
          { 2: Buffer.concat([Buffer.from([0]), Buffer.from(uintToBytes(s.paidByDevice))]) },
        ],
        ['a zero version as one zero byte (0 is the empty binary)', { 4: Buffer.from([0]) }],
        ['a decimal string for paidByDevice', { 2: String(s.paidByDevice) }],
        ['a float for the version', { 1: 1.5 }],
        ['a 31-byte channel id', { 0: bin(s.channelId).subarray(1) }],
        ['a 32-byte all-zero word for paidByDevice', { 2: word(s.paidByDevice) }],
      ];
      // A connection takes maxMalformedFrames (4) before it is closed with 1007: three cases per connection.
      for (let k = 0; k < cases.length; k += 3) {
        const d = await victim();
        for (const [what, patch] of cases.slice(k, k + 3)) {
          const id = nextId++;
          d.sendRaw(packr.pack({ t: 'update', id, state: stateArray(s, patch), sig }));
          const reply = await answer(d, id);
          expect(reply.t, what).toBe('error');
          expect(codeOf(reply), what).toBe('MALFORMED');
        }
        // Still served: the frame was refused, not the connection.
        expect((await syncOf(d)).latest).toEqual(before.mem);
        d.close();
      }
      expect(await snapshot()).toEqual(before);
    });

    it('the same state with every integer minimal is accepted (control: the cases above fail on the integers alone)', async () => {
      const d = await victim();
      const s = nextState(3n);
      const id = nextId++;
      d.sendRaw(packr.pack({ t: 'update', id, state: stateArray(s), sig: Buffer.from(sign(s)) }));
      expect((await answer(d, id)).t).toBe('ack');
      expect(hubLatest(vch.channelId).state).toEqual(s);
      expect((await stored(vch.channelId))?.state).toEqual(s);
      d.close();
    });
  });

  describe('transition rules in order (spec §2: a state that breaks several gets the code of the first)', () => {
    it('stale, equivocating, decreasing, wrong payer, unaffordable and round-raising states, each also badly signed: the first rule’s code, nothing changes', async () => {
      const d = await victim();
      const before = await snapshot();
      const cur = before.mem.state;
      const funding = w.hub!.channels.get(vch.channelId)!.funding;
      const zero = new Uint8Array(65);
      const cases: [string, State, Uint8Array, string][] = [
        ['a lower version, badly signed', { ...cur, version: cur.version - 1n }, zero, 'STALE_VERSION'],
        [
          'another state at the current version, badly signed',
          { ...cur, paidByDevice: cur.paidByDevice + 1n },
          zero,
          'EQUIVOCATION',
        ],
        [
          'the device counter falls and the hub’s rises',
          { ...cur, version: cur.version + 1n, paidByDevice: cur.paidByDevice - 1n, paidByHub: cur.paidByHub + 1n },
          zero,
          'COUNTER_DECREASED',
        ],
        [
          'the hub counter rises beyond what the hub has',
          { ...cur, version: cur.version + 1n, paidByHub: cur.paidByHub + funding.hub + 1n },
          zero,
          'WRONG_PAYER',
        ],
        [
          'more than the deposit, and the round raised',
          {
            ...cur,
            version: cur.version + 1n,
            paidByDevice: funding.device + cur.paidByHub + 1n,
            round: cur.round + 1n,
          },
          zero,
          'INSUFFICIENT_FUNDS',
        ],
        [
          'the round raised by the device',
          { ...cur, version: cur.version + 1n, paidByDevice: cur.paidByDevice + 1n, round: cur.round + 1n },
          zero,
          'BAD_ROUND',
        ],
        [
          'the round raised, signed right',
          { ...cur, version: cur.version + 1n, paidByDevice: cur.paidByDevice + 1n, round: cur.round + 1n },
          new Uint8Array(0),
          'BAD_ROUND',
        ],
        [
          'a good state, badly signed',
          { ...cur, version: cur.version + 1n, paidByDevice: cur.paidByDevice + 1n },
          zero,
          'BAD_SIGNATURE',
        ],
      ];
      for (const [what, state, sig, code] of cases) {
        const id = nextId++;
        d.send({ t: 'update', id, state, sig: sig.length === 0 ? sign(state) : sig });
        const reply = await answer(d, id);
        expect(reply.t, what).toBe('reject');
        expect(codeOf(reply), what).toBe(code);
        expect((reply as Extract<Message, { t: 'reject' }>).latest, what).toEqual(before.mem);
      }
      expect(await snapshot()).toEqual(before);
      d.close();
    });
  });

  describe('a fragmented WebSocket message (spec §3: maxFrameBytes, close 1009)', () => {
    it('fragments each under the limit that add up past it: closed with 1009, nothing changes, others served', async () => {
      const before = await snapshot();
      const d = await victim();
      const chunk = new Uint8Array(1500);
      d.ws.send(chunk, { binary: true, fin: false });
      d.ws.send(chunk, { binary: true, fin: false });
      d.ws.send(chunk, { binary: true, fin: true });
      expect(await d.closed()).toBe(1009);
      // Refused from the header, before reading it: no error frame comes first.
      expect(d.inbox.filter((m) => m.t === 'error')).toEqual([]);
      expect(await snapshot()).toEqual(before);
      const again = await victim();
      expect((await syncOf(again)).latest).toEqual(before.mem);
      again.close();
    });
  });

  describe('text frames (spec §3: binary frames only)', () => {
    it('a text frame, even one holding a valid frame’s bytes, is MALFORMED (id 0); the connection serves on', async () => {
      const before = await snapshot();
      const d = await victim();
      const s = nextState();
      d.sendRaw(
        Buffer.from(
          packr.pack({ t: 'update', id: nextId++, state: stateArray(s), sig: Buffer.from(sign(s)) }),
        ).toString('latin1'),
      );
      const e = await d.next((m) => m.t === 'error');
      expect(e).toMatchObject({ t: 'error', id: 0, code: 'MALFORMED' });
      expect((await syncOf(d)).latest).toEqual(before.mem);
      expect(await snapshot()).toEqual(before);
      d.close();
    });
  });

  describe('acks (spec §5: an ack whose signature is not the countersignature of the state is dropped, unanswered; the proposal stays open)', () => {
    it('high-s twin, v 0/1, the hub’s own key, another chain’s domain, another version, another channel: dropped; the valid ack then lands once', async () => {
      const d = await victim();
      expect((await syncOf(d)).latest).toEqual(hubLatest(vch.channelId));
      const before = await snapshot();
      const credit = w.hub!.credit(vch.channelId, 7n);
      let settled = false;
      void credit.then(
        () => (settled = true),
        () => (settled = true),
      );
      const proposal = (await d.next((m) => m.t === 'update')) as Extract<Message, { t: 'update' }>;
      expect(proposal.state.paidByHub).toBe(before.mem.state.paidByHub + 7n);
      const good = sign(proposal.state);
      const hi = Uint8Array.from(good);
      const sv = SECP256K1_N - BigInt(`0x${Buffer.from(good.subarray(32, 64)).toString('hex')}`);
      hi.set(word(sv), 32);
      hi[64] = good[64] === 27 ? 28 : 27;
      const v01 = Uint8Array.from(good);
      v01[64] = good[64]! - 27;
      const hubKey = nobleSigner(w.hubKey);
      const otherChain = domainSeparator(trickleDomain(w.chain.chainId + 1n, w.adjudicator));
      const v = proposal.state.version;
      const bad: [string, Message][] = [
        ['high-s', { t: 'ack', id: proposal.id, channelId: vch.channelId, version: v, sig: hi }],
        ['v 0/1', { t: 'ack', id: proposal.id, channelId: vch.channelId, version: v, sig: v01 }],
        [
          'the hub’s key',
          { t: 'ack', id: proposal.id, channelId: vch.channelId, version: v, sig: sign(proposal.state, hubKey) },
        ],
        [
          'another chain',
          {
            t: 'ack',
            id: proposal.id,
            channelId: vch.channelId,
            version: v,
            sig: sign(proposal.state, victimKey, otherChain),
          },
        ],
        ['a version not proposed', { t: 'ack', id: proposal.id, channelId: vch.channelId, version: v + 1n, sig: good }],
        [
          'the last version both signed',
          { t: 'ack', id: proposal.id, channelId: vch.channelId, version: v - 1n, sig: good },
        ],
        ['zeros', { t: 'ack', id: proposal.id, channelId: vch.channelId, version: v, sig: new Uint8Array(65) }],
      ];
      for (const [, m] of bad) d.send(m);
      // The sync is answered after the acks (one queue per channel), and the hub sends its open proposal again.
      const sync = await syncOf(d);
      expect(sync.latest).toEqual(before.mem);
      const again = (await d.next((m) => m.t === 'update')) as Extract<Message, { t: 'update' }>;
      expect(again.state).toEqual(proposal.state);
      expect(Buffer.from(again.sig).equals(Buffer.from(proposal.sig))).toBe(true);
      // Never answered: an answer to an ack could bounce between two peers for ever.
      expect(d.inbox.filter((m) => m.t === 'error' || m.t === 'reject')).toEqual([]);
      expect(settled).toBe(false);
      expect(await snapshot()).toEqual(before);
      // An ack on the honest device's channel is that channel's business only: WRONG_CHANNEL, nothing of it changes.
      const honestBefore = hubLatest(honest.channelId);
      const id = nextId++;
      d.send({ t: 'ack', id, channelId: honest.channelId, version: honestBefore.state.version + 1n, sig: good });
      expect(codeOf(await answer(d, id))).toBe('WRONG_CHANNEL');
      expect(hubLatest(honest.channelId).state.version).toBeGreaterThanOrEqual(honestBefore.state.version);
      d.send({ t: 'ack', id: again.id, channelId: vch.channelId, version: v, sig: good });
      const signed = await credit;
      expect(signed.state).toEqual(proposal.state);
      expect(hubLatest(vch.channelId).state).toEqual(proposal.state);
      expect((await stored(vch.channelId))?.state).toEqual(proposal.state);
      // The same ack again changes nothing and is not answered.
      d.send({ t: 'ack', id: again.id, channelId: vch.channelId, version: v, sig: good });
      expect((await syncOf(d)).latest?.state).toEqual(proposal.state);
      expect(d.inbox.filter((m) => m.t === 'error' || m.t === 'reject' || m.t === 'update')).toEqual([]);
      d.close();
    });
  });

  describe('sessions', () => {
    const authFrame = (d: RawDevice, by: Signer): Message => ({
      t: 'auth',
      id: 2,
      device: by.address,
      nonce: d.challenge.nonce,
      sig: by.signDigest(authDigest(sep, by.address, d.challenge.hub, d.challenge.nonce)),
    });

    it('an auth sent again on an authenticated connection, valid for another key with a live session: refused, no identity switch, the other session untouched', async () => {
      const d = await victim();
      const other = nobleSigner(w.chain.accounts[3]!); // the honest device's key: its client is connected
      const streamedBefore = streamed;
      d.send(authFrame(d, other));
      const e = await d.next((m) => m.t === 'error' && m.id === 2);
      expect(codeOf(e)).toBe('MALFORMED');
      expect(d.inbox.some((m) => m.t === 'ok')).toBe(false);
      // Still the victim: its channel answers, the honest device's does not.
      expect((await syncOf(d)).latest).toEqual(hubLatest(vch.channelId));
      const id = nextId++;
      d.send({ t: 'sync', id, channelId: honest.channelId, latest: null });
      expect(codeOf(await answer(d, id))).toBe('WRONG_CHANNEL');
      // The honest device was not replaced (4000) and goes on paying.
      await waitFor(() => streamed > streamedBefore + 20);
      expect(w.hub!.connectedDevices()).toContain(other.address);
      d.close();
    });

    it('frames only a hub sends (challenge, ok, accepted, clearing, receipt, stream, round, pong), sent by a device: MALFORMED, nothing changes, the connection stays', async () => {
      const frames = (
        JSON.parse(readFileSync(new URL('../protocol-spec/vectors/frames.json', import.meta.url), 'utf8')) as {
          vectors: { message: { t: string }; frame: string }[];
        }
      ).vectors.filter(
        (v, i, all) =>
          ['challenge', 'ok', 'accepted', 'clearing', 'receipt', 'stream', 'round', 'pong'].includes(v.message.t) &&
          all.findIndex((x) => x.message.t === v.message.t) === i,
      );
      expect(frames.length).toBe(8);
      const before = await snapshot();
      const d = await victim();
      for (const v of frames) {
        d.sendRaw(Buffer.from(v.frame.replace(/^0x/, ''), 'hex'));
        const e = (await d.next((m) => m.t === 'error')) as Extract<Message, { t: 'error' }>;
        expect(e.code, v.message.t).toBe('MALFORMED');
      }
      expect(d.closeCode).toBeUndefined();
      expect((await syncOf(d)).latest).toEqual(before.mem);
      expect(await snapshot()).toEqual(before);
      d.close();
    });

    it('reject and claim naming another device’s channel: WRONG_CHANNEL, that channel untouched', async () => {
      const d = await victim();
      const before = hubLatest(honest.channelId).state.version;
      const r = nextId++;
      d.send({
        t: 'reject',
        id: r,
        channelId: honest.channelId,
        code: 'INVALID_ARGUMENT',
        message: 'no',
        latest: null,
      });
      expect(codeOf(await answer(d, r))).toBe('WRONG_CHANNEL');
      const c = nextId++;
      const preimage = `0x${randomBytes(32).toString('hex')}` as Bytes32;
      d.send({ t: 'claim', id: c, channelId: honest.channelId, unlock: { hash: preimage, preimage } });
      expect(codeOf(await answer(d, c))).toBe('WRONG_CHANNEL');
      expect(hubLatest(honest.channelId).state.version).toBeGreaterThanOrEqual(before);
      expect(w.hub!.channels.locksOf(honest.channelId)).toEqual([]);
      d.close();
    });

    it('one device connecting 12 times at once: one session is left, serving; the others are closed 4000; no handshake slot of the address leaks', async () => {
      const before = await snapshot();
      const all = await Promise.all(Array.from({ length: 12 }, () => victim()));
      // Each authenticated one replaced the one before it: exactly one is left open.
      await waitFor(() => all.filter((d) => d.closeCode === undefined).length === 1);
      const left = all.find((d) => d.closeCode === undefined)!;
      for (const d of all) if (d !== left) expect(d.closeCode).toBe(4000);
      expect((await syncOf(left)).latest).toEqual(before.mem);
      const s = nextState(2n);
      const id = nextId++;
      left.send({ t: 'update', id, state: s, sig: sign(s) });
      expect((await answer(left, id)).t).toBe('ack');
      expect(w.hub!.connectedDevices().filter((a) => a === victimKey.address)).toHaveLength(1);
      left.close();
      await left.closed();
      // maxHandshakesPerAddress (24) connections of fresh keys, never authenticating, still fit; the next is 1013.
      const fresh = await Promise.all(Array.from({ length: 24 }, () => RawDevice.connect(w.hub!.url)));
      // Closed 1013 before its challenge (connect() fails with the code) or right after it.
      const over = await RawDevice.connect(w.hub!.url).then(
        (d) => d.closed(),
        (e: unknown) => {
          if (e instanceof SocketClosed) return e.code;
          throw e;
        },
      );
      expect(over).toBe(1013);
      for (const d of fresh) expect(d.closeCode).toBeUndefined();
      for (const d of fresh) d.close();
      await Promise.all(fresh.map((d) => d.closed()));
    });

    it('a connection replaced while its update is in flight: the update lands once, the new session syncs to it and pays on', async () => {
      const a = await victim();
      const s = nextState(11n);
      a.send({ t: 'update', id: nextId++, state: s, sig: sign(s) });
      const b = await victim();
      expect(await a.closed()).toBe(4000);
      // The answer went to whichever session held the device when the commit finished; the state is the hub's either way.
      await waitFor(() => hubLatest(vch.channelId).state.version === s.version);
      const sync = await syncOf(b);
      expect(sync.latest?.state).toEqual(s);
      expect(sync.latest?.hubSig).toBeTruthy();
      // The same update sent again on the new connection is a duplicate: re-acked, nothing paid twice.
      const id = nextId++;
      b.send({ t: 'update', id, state: s, sig: sign(s) });
      expect((await answer(b, id)).t).toBe('ack');
      expect(hubLatest(vch.channelId).state).toEqual(s);
      b.close();
    });
  });

  describe('open (spec §4: RATE_LIMITED past the device’s share of the hub’s chain reads)', () => {
    it('a fresh key announcing 45 made-up channels at once: CHANNEL_NOT_OPEN until its share (30) is spent, RATE_LIMITED after; nothing is added; another device’s open is answered', async () => {
      const key = nobleSigner(`0x${randomBytes(32).toString('hex')}`);
      const d = await RawDevice.connect(w.hub!.url, key);
      const size = w.hub!.channels.size;
      const ids = Array.from({ length: 45 }, () => nextId++);
      const socket = (d.ws as unknown as { _socket: { cork(): void; uncork(): void } })._socket;
      socket.cork();
      for (const id of ids)
        d.send({
          t: 'open',
          id,
          params: {
            chainId: w.chain.chainId,
            adjudicator: w.adjudicator,
            device: key.address,
            hub: w.hub!.address,
            token: w.token,
            challengeDuration: 60n,
            salt: `0x${randomBytes(32).toString('hex')}` as Bytes32,
          },
        });
      socket.uncork();
      const codes = await Promise.all(ids.map(async (id) => codeOf(await answer(d, id))));
      expect(new Set(codes)).toEqual(new Set(['CHANNEL_NOT_OPEN', 'RATE_LIMITED']));
      expect(codes.filter((c) => c === 'CHANNEL_NOT_OPEN').length).toBeLessThanOrEqual(31);
      expect(codes.filter((c) => c === 'RATE_LIMITED').length).toBeGreaterThanOrEqual(14);
      expect(w.hub!.channels.size).toBe(size);
      expect(d.closeCode).toBeUndefined();
      // The share is the device's: the victim announcing its own channel is answered with the hub's state.
      const v = await victim();
      const id = nextId++;
      v.send({ t: 'open', id, params: w.hub!.channels.get(vch.channelId)!.params });
      const sync = (await v.next((m) => m.id === id)) as Extract<Message, { t: 'sync' }>;
      expect(sync.t).toBe('sync');
      expect(sync.latest).toEqual(hubLatest(vch.channelId));
      v.close();
      d.close();
    });
  });

  describe('a device that disconnects mid-commit', () => {
    it('20 pipelined updates and the socket destroyed at once: the hub holds a prefix of them, durable, fully signed; a resend lands the rest once', async () => {
      const base = hubLatest(vch.channelId).state;
      const states: State[] = [];
      for (let k = 1; k <= 20; k++)
        states.push({ ...base, version: base.version + BigInt(k), paidByDevice: base.paidByDevice + BigInt(k) });
      const a = await victim();
      const socket = (a.ws as unknown as { _socket: { cork(): void; uncork(): void; destroy(): void } })._socket;
      socket.cork();
      for (const s of states) a.send({ t: 'update', id: nextId++, state: s, sig: sign(s) });
      socket.uncork();
      socket.destroy();
      await waitFor(() => !w.hub!.connectedDevices().includes(victimKey.address));
      const b = await victim();
      const sync = await syncOf(b);
      const held = sync.latest!;
      expect(held.deviceSig && held.hubSig).toBeTruthy();
      const k = Number(held.state.version - base.version);
      expect(k).toBeGreaterThanOrEqual(0);
      expect(k).toBeLessThanOrEqual(20);
      if (k > 0) expect(held.state).toEqual(states[k - 1]);
      expect((await stored(vch.channelId))?.state).toEqual(held.state);
      // Sent again: an older one it holds is stale, its latest a duplicate (re-acked), the rest land once — or are
      // refused RATE_LIMITED past the connection's in-flight bound (8), and land when sent again.
      if (k >= 2) {
        const id = nextId++;
        b.send({ t: 'update', id, state: states[k - 2]!, sig: sign(states[k - 2]!) });
        expect(await answer(b, id)).toMatchObject({ t: 'reject', code: 'STALE_VERSION', latest: held });
      }
      if (k >= 1) {
        const id = nextId++;
        b.send({ t: 'update', id, state: states[k - 1]!, sig: sign(states[k - 1]!) });
        expect(await answer(b, id)).toMatchObject({ t: 'ack', version: held.state.version });
      }
      const rest = states.slice(k);
      const sent = rest.map((s) => ({ id: nextId++, version: s.version }));
      rest.forEach((s, i) => b.send({ t: 'update', id: sent[i]!.id, state: s, sig: sign(s) }));
      for (const c of await answers(b, sent)) expect(['ack', 'RATE_LIMITED']).toContain(c);
      for (const s of states.filter((x) => x.version > hubLatest(vch.channelId).state.version)) {
        const id = nextId++;
        b.send({ t: 'update', id, state: s, sig: sign(s) });
        expect((await answers(b, [{ id, version: s.version }]))[0]).toBe('ack');
      }
      expect(hubLatest(vch.channelId).state).toEqual(states[19]);
      expect((await stored(vch.channelId))?.state).toEqual(states[19]);
      b.close();
    });
  });

  describe('a backlog of updates (spec §5: the hub verifies only the newest, each is answered on its own)', () => {
    /** Frames in one write behind a sync (which keeps the channel busy, so they make one backlog); every reply. */
    async function backlog(frames: Message[]) {
      const d = await victim();
      const socket = (d.ws as unknown as { _socket: { cork(): void; uncork(): void } })._socket;
      socket.cork();
      d.send({ t: 'sync', id: nextId++, channelId: vch.channelId, latest: null });
      for (const f of frames) d.send(f);
      socket.uncork();
      const ids = frames.map((f) => f.id);
      const replies = new Map<number, Message>();
      for (;;) {
        const m = await d.next((x) => (x.t === 'ack' || x.t === 'reject') && ids.includes(x.id) && !replies.has(x.id));
        replies.set(m.id, m);
        const acked = [...replies.values()].find((x) => x.t === 'ack') as Extract<Message, { t: 'ack' }> | undefined;
        // Answered when each has its reject or an ack at or above its version covers it.
        const open = frames.filter(
          (f) => !replies.has(f.id) && !(acked && f.t === 'update' && f.state.version <= acked.version),
        );
        if (open.length === 0) break;
      }
      d.close();
      await d.closed();
      return ids.map((id) => replies.get(id));
    }
    const update = (id: number, state: State, sig: Uint8Array): Message => ({ t: 'update', id, state, sig });

    it('a good update and a badly signed newer one: the newer is BAD_SIGNATURE, the older acked', async () => {
      const a = nextState(1n);
      const b = { ...a, version: a.version + 1n, paidByDevice: a.paidByDevice + 1n };
      const [ra, rb] = await backlog([update(nextId++, a, sign(a)), update(nextId++, b, new Uint8Array(65))]);
      expect(rb).toMatchObject({ t: 'reject', code: 'BAD_SIGNATURE' });
      expect(ra).toMatchObject({ t: 'ack', version: a.version });
      expect(hubLatest(vch.channelId).state).toEqual(a);
      expect((await stored(vch.channelId))?.state).toEqual(a);
    });

    it('two states at one version in one backlog: the first acked, the second EQUIVOCATION', async () => {
      const a = nextState(1n);
      const b = { ...a, paidByDevice: a.paidByDevice + 1n };
      const [ra, rb] = await backlog([update(nextId++, a, sign(a)), update(nextId++, b, sign(b))]);
      expect(ra).toMatchObject({ t: 'ack', version: a.version });
      expect(rb).toMatchObject({ t: 'reject', code: 'EQUIVOCATION' });
      expect(hubLatest(vch.channelId).state).toEqual(a);
    });

    it('one state twice, badly signed then signed right: the first BAD_SIGNATURE, the copy acked (it was left unanswered)', async () => {
      const before = hubLatest(vch.channelId);
      const a = nextState(4n);
      const [ra, rb] = await backlog([update(nextId++, a, new Uint8Array(65)), update(nextId++, a, sign(a))]);
      expect(ra).toMatchObject({ t: 'reject', code: 'BAD_SIGNATURE' });
      expect(rb).toMatchObject({ t: 'ack', version: a.version });
      const latest = hubLatest(vch.channelId);
      expect(latest.state).toEqual(a);
      expect(latest.deviceSig).toBe(`0x${Buffer.from(sign(a)).toString('hex')}`);
      expect((await stored(vch.channelId))?.deviceSig).toBe(latest.deviceSig);
      expect(latest.state.paidByDevice).toBe(before.state.paidByDevice + 4n);
    });

    it('one state twice, both badly signed: both BAD_SIGNATURE, nothing changes', async () => {
      const before = await snapshot();
      const a = nextState(1n);
      const hi = Uint8Array.from(sign(a));
      hi[64] = 29;
      const [ra, rb] = await backlog([update(nextId++, a, new Uint8Array(65)), update(nextId++, a, hi)]);
      expect(ra).toMatchObject({ t: 'reject', code: 'BAD_SIGNATURE' });
      expect(rb).toMatchObject({ t: 'reject', code: 'BAD_SIGNATURE' });
      expect(await snapshot()).toEqual(before);
    });
  });

  describe('a device that drops right after asking to close (spec §5: cooperative close, hub first)', () => {
    it('the hub signed the final state and takes nothing more; asked again it signs the same, and the device’s countersignature makes it final on both', async () => {
      const c = await w.client(4);
      const ch = await c.openChannel({ token: w.token, deposit: 50_000n });
      await ch.pay(5n);
      await c.disconnect();
      const key = nobleSigner(w.chain.accounts[4]!);
      const id = ch.channelId;
      const before = hubLatest(id);
      const final: State = { ...before.state, version: before.state.version + 1n, isFinal: true };
      const a = await RawDevice.connect(w.hub!.url, key);
      const socket = (a.ws as unknown as { _socket: { cork(): void; uncork(): void; destroy(): void } })._socket;
      socket.cork();
      a.send({ t: 'close', id: nextId++, state: final });
      socket.uncork();
      socket.destroy();
      await waitFor(() => !w.hub!.connectedDevices().includes(key.address));
      const b = await RawDevice.connect(w.hub!.url, key);
      const sync = await syncOf(b, id);
      expect(sync.latest).toEqual(before);
      // Nothing more is taken on the channel: a payment on top is refused, typed, and changes nothing.
      const pay: State = { ...before.state, version: final.version + 1n, paidByDevice: before.state.paidByDevice + 1n };
      const p = nextId++;
      b.send({ t: 'update', id: p, state: pay, sig: sign(pay, key) });
      const refused = await answer(b, p);
      expect(refused.t).toBe('reject');
      expect(['CHANNEL_NOT_OPEN', 'CHANNEL_FINAL', 'STALE_VERSION']).toContain(codeOf(refused));
      expect(hubLatest(id)).toEqual(before);
      // Asked again (its ack was lost): the same final state, signed by the hub.
      const again = nextId++;
      b.send({ t: 'close', id: again, state: final });
      const ack = (await answer(b, again)) as Extract<Message, { t: 'ack' }>;
      expect(ack).toMatchObject({ t: 'ack', version: final.version });
      expect(verifierOf().recoverAddress(stateDigest(sep, final), ack.sig)).toBe(w.hub!.address);
      // A forged countersignature changes nothing; the device's own makes the final state the hub's latest.
      b.send({ t: 'ack', id: again, channelId: id, version: final.version, sig: new Uint8Array(65) });
      expect((await syncOf(b, id)).latest).toEqual(before);
      b.send({ t: 'ack', id: again, channelId: id, version: final.version, sig: sign(final, key) });
      await waitFor(() => hubLatest(id).state.isFinal);
      expect(hubLatest(id).state).toEqual(final);
      expect((await stored(id))?.state).toEqual(final);
      b.close();
    });
  });

  describe('in-flight bound (spec §3: maxInFlightPerConnection, then reject RATE_LIMITED with latest nil)', () => {
    it('16 updates in one write with the bound at 8: the first 8 are answered, the rest refused RATE_LIMITED (latest nil) and accepted when sent again', async () => {
      const d = await victim();
      await syncOf(d);
      const base = hubLatest(vch.channelId).state;
      const states = Array.from({ length: 16 }, (_, k) => ({
        ...base,
        version: base.version + BigInt(k + 1),
        paidByDevice: base.paidByDevice + BigInt(k + 1),
      }));
      const socket = (d.ws as unknown as { _socket: { cork(): void; uncork(): void } })._socket;
      const sent = states.map((s) => ({ id: nextId++, version: s.version }));
      socket.cork();
      states.forEach((s, k) => d.send({ t: 'update', id: sent[k]!.id, state: s, sig: sign(s) }));
      socket.uncork();
      const refusals: Message[] = [];
      const codes = await answers(d, sent, refusals);
      // The bound holds: at most 8 taken in before the first answer; every one past it refused RATE_LIMITED.
      expect(codes.slice(0, 8)).toEqual(Array(8).fill('ack'));
      expect(codes.slice(8).every((c) => c === 'RATE_LIMITED' || c === 'ack')).toBe(true);
      expect(codes.filter((c) => c === 'RATE_LIMITED').length).toBeGreaterThan(0);
      for (const r of refusals) expect(r).toMatchObject({ t: 'reject', code: 'RATE_LIMITED', latest: null });
      const version = hubLatest(vch.channelId).state.version;
      expect(version).toBeLessThan(states[15]!.version);
      for (const s of states.filter((x) => x.version > version)) {
        const id = nextId++;
        d.send({ t: 'update', id, state: s, sig: sign(s) });
        expect((await answers(d, [{ id, version: s.version }]))[0]).toBe('ack');
      }
      expect(hubLatest(vch.channelId).state).toEqual(states[15]);
      d.close();
    });
  });

  describe('before authentication', () => {
    it('a connection that sends only malformed frames before auth is closed with 1007 after maxMalformedFrames and is never authenticated', async () => {
      const d = await RawDevice.connect(w.hub!.url);
      for (let k = 0; k < 4; k++) d.sendRaw(new Uint8Array([0xc1, k]));
      expect(await d.closed()).toBe(1007);
      expect(d.inbox.filter((m) => m.t === 'error').map(codeOf)).toEqual(expect.arrayContaining(['MALFORMED']));
      expect(d.inbox.some((m) => m.t === 'ok')).toBe(false);
    });
  });

  it('the honest device paid throughout, and its totals agree with the hub', async () => {
    streaming = false;
    await streamLoop;
    expect(streamed).toBeGreaterThan(0);
    expect(hubLatest(honest.channelId).state.paidByDevice).toBe(BigInt(streamed));
    expect(honest.latest.state.paidByDevice).toBe(BigInt(streamed));
  });
});

describe('red team: floods of frames that cost the hub signature work (spec §3 message budget)', () => {
  let w: World;
  const limits = { messagesPerSecond: 200, messageBurst: 50, floodCloseMs: 1_500 };
  /** The channel the forged-sync case leaves (device 4's), which the close flood then closes. */
  let closing: { channelId: ChannelId; latest: SignedState; key: Signer } | undefined;
  beforeAll(async () => {
    w = await createWorld({ accounts: 5 });
    await w.startHub({ limits });
  });
  afterAll(async () => w?.close());

  it('acks forged for an open proposal cost what refused frames cost: 100 a second is a flood at 200 tokens a second (closed RATE_LIMITED, 1008); the proposal stays open', async () => {
    const c = await w.client(2);
    const ch = await c.openChannel({ token: w.token, deposit: 10_000n });
    await w.hubDeposit(ch.channelId, 1_000n);
    await c.disconnect();
    const payer = await w.client(3);
    const honest = await payer.openChannel({ token: w.token, deposit: 1_000_000n });
    const key = nobleSigner(w.chain.accounts[2]!);
    const d = await RawDevice.connect(w.hub!.url, key);
    const before = w.hub!.channels.get(ch.channelId)!.latest;
    const credit = w.hub!.credit(ch.channelId, 5n);
    credit.catch(() => undefined); // answered once the device is back, or refused when it never acks
    const proposal = (await d.next((m) => m.t === 'update')) as Extract<Message, { t: 'update' }>;
    // Each a well-formed signature of nobody's: the hub recovers it on its event loop before it drops the ack.
    const forged = (k: number) => {
      const sig = new Uint8Array(65);
      sig[31] = 1;
      sig[62] = k >> 8;
      sig[63] = (k & 0xff) | 1;
      sig[64] = 27;
      return sig;
    };
    let paid = 0;
    let k = 0;
    // 10 every 100 ms: half the budget at one token an ack, five times it at ten.
    while (d.closeCode === undefined && k < 1_000) {
      for (let i = 0; i < 10; i++)
        d.send({
          t: 'ack',
          id: proposal.id,
          channelId: ch.channelId,
          version: proposal.state.version,
          sig: forged(k++),
        });
      await honest.pay(1n);
      paid++;
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(d.closeCode).toBe(1008);
    expect(d.inbox.find((m) => m.t === 'error')).toMatchObject({ t: 'error', id: 0, code: 'RATE_LIMITED' });
    // Nothing of the forged acks landed; the honest device paid throughout.
    expect(w.hub!.channels.get(ch.channelId)!.latest).toEqual(before);
    expect(w.hub!.channels.get(honest.channelId)!.latest.state.paidByDevice).toBe(BigInt(paid));
    // Back, the device is sent the proposal again, and its own ack lands.
    const again = await RawDevice.connect(w.hub!.url, key);
    const resent = (await again.next((m) => m.t === 'update')) as Extract<Message, { t: 'update' }>;
    expect(resent.state).toEqual(proposal.state);
    const sep = domainSeparator(trickleDomain(w.chain.chainId, w.adjudicator));
    again.send({
      t: 'ack',
      id: resent.id,
      channelId: ch.channelId,
      version: resent.state.version,
      sig: key.signDigest(stateDigest(sep, resent.state)),
    });
    expect((await credit).state).toEqual(proposal.state);
    again.close();
  });

  it('syncs offering a forged newer state cost what refused frames cost: 100 a second is a flood at 200 tokens a second; an honest sync costs one', async () => {
    const c = await w.client(4);
    const ch = await c.openChannel({ token: w.token, deposit: 10_000n });
    await ch.pay(1n);
    await c.disconnect();
    const key = nobleSigner(w.chain.accounts[4]!);
    const sep = domainSeparator(trickleDomain(w.chain.chainId, w.adjudicator));
    const before = w.hub!.channels.get(ch.channelId)!.latest;
    // Honest: a sync with the state the hub holds, well past the burst (50), at 100 a second: never a flood.
    const d = await RawDevice.connect(w.hub!.url, key);
    for (let k = 0; k < 200 && d.closeCode === undefined; k += 10) {
      for (let i = 0; i < 10; i++) d.send({ t: 'sync', id: 10 + k + i, channelId: ch.channelId, latest: before });
      await new Promise((r) => setTimeout(r, 100));
    }
    const last = await d.next((m) => m.t === 'sync' && m.id === 209);
    expect((last as Extract<Message, { t: 'sync' }>).latest).toEqual(before);
    expect(d.closeCode).toBeUndefined();
    // Forged: the device's signature on a newer state, and a hub signature of nobody's (recovered, then ignored).
    const newer: State = { ...before.state, version: before.state.version + 1n, paidByDevice: 0n };
    const deviceSig = `0x${Buffer.from(key.signDigest(stateDigest(sep, newer))).toString('hex')}` as const;
    let k = 0;
    while (d.closeCode === undefined && k < 1_000) {
      for (let i = 0; i < 10; i++) {
        const hub = new Uint8Array(65);
        hub[31] = 1;
        hub[63] = (k++ & 0x7f) | 1;
        hub[64] = 27;
        d.send({
          t: 'sync',
          id: 1_000 + k,
          channelId: ch.channelId,
          latest: { state: newer, deviceSig, hubSig: `0x${Buffer.from(hub).toString('hex')}` } as SignedState,
        });
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(d.closeCode).toBe(1008);
    expect(d.inbox.find((m) => m.t === 'error')).toMatchObject({ t: 'error', id: 0, code: 'RATE_LIMITED' });
    expect(w.hub!.channels.get(ch.channelId)!.latest).toEqual(before);
    closing = { channelId: ch.channelId, latest: before, key };
  });

  it('a device refusing every credit and syncing, in turn (the hub signs and commits a state on top each time): each reject costs what a refused frame costs, 50 rounds a second is a flood at 200 tokens a second', async () => {
    const key = nobleSigner(w.chain.accounts[2]!);
    const ch = [...w.hub!.channels.records()].find((r) => r.params.device === key.address)!;
    const before = w.hub!.channels.get(ch.channelId)!.latest;
    const d = await RawDevice.connect(w.hub!.url, key);
    const credit = w.hub!.credit(ch.channelId, 5n);
    credit.catch(() => undefined); // refused: the device never countersigns
    const versions = new Set<bigint>();
    for (let k = 0; k < 500 && d.closeCode === undefined; k++) {
      const p = await d.next((m) => m.t === 'update', 3_000).catch(() => undefined);
      if (!p || p.t !== 'update') break;
      versions.add(p.state.version);
      d.send({ t: 'reject', id: p.id, channelId: ch.channelId, code: 'INVALID_ARGUMENT', message: 'no', latest: null });
      d.send({ t: 'sync', id: 10_000 + k, channelId: ch.channelId, latest: null });
      await new Promise((r) => setTimeout(r, 20));
    }
    await d.closed();
    expect(d.closeCode).toBe(1008);
    expect(d.inbox.find((m) => m.t === 'error')).toMatchObject({ t: 'error', id: 0, code: 'RATE_LIMITED' });
    // Each round was a new state signed on top (which the hub keeps until one both signed goes above it).
    expect(versions.size).toBeGreaterThan(2);
    expect(w.hub!.channels.get(ch.channelId)!.latest).toEqual(before);
  });

  it('closes asked again and again (each signed, its version made durable) cost what refused frames cost: 100 a second is a flood at 200 tokens a second', async () => {
    const { channelId, latest, key } = closing!;
    const d = await RawDevice.connect(w.hub!.url, key);
    let v = latest.state.version;
    while (d.closeCode === undefined && v < latest.state.version + 1_000n) {
      for (let i = 0; i < 10; i++) {
        v++;
        d.send({ t: 'close', id: Number(v), state: { ...latest.state, version: v, isFinal: true } });
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(d.closeCode).toBe(1008);
    expect(d.inbox.find((m) => m.t === 'error')).toMatchObject({ t: 'error', id: 0, code: 'RATE_LIMITED' });
    // Each close that was answered got the hub's signature of the final state at the version asked (spec §5).
    const acks = d.inbox.filter((m): m is Extract<Message, { t: 'ack' }> => m.t === 'ack');
    expect(acks.length).toBeGreaterThan(0);
    for (const a of acks) expect(a.version).toBe(BigInt(a.id));
    expect(w.hub!.channels.get(channelId)!.latest).toEqual(latest);
  });
});
