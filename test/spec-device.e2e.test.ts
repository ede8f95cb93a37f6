import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { WebSocket } from 'ws';
import { Packr } from 'msgpackr';
import { AbiCoder, TypedDataEncoder, Wallet, getAddress, hexlify, keccak256, recoverAddress } from 'ethers';
import { Adjudicator } from '@trickle/chain/adjudicator';
import { approve, balanceOf } from '@trickle/chain/erc20';
import type { TrickleClient } from '@trickle/client/client';
import type { Bytes32 } from '@trickle/protocol/types';
import { createWorld, type World } from './helpers/harness.js';
import { waitFor } from './helpers/wait.js';

/**
 * A device written from protocol-spec §2–§5 alone, as a firmware author in C would write it: a generic MessagePack
 * library (msgpackr, no schema), ethers' EIP-712 encoder and a plain WebSocket. Nothing of @trickle touches the wire or
 * the signatures (the harness only runs the chain and the hub; the deposit and the close on-chain go through the
 * adjudicator's ABI wrapper, §8). If the hub and the spec disagree on a byte, this test says so.
 */

type Frame = Record<string, unknown>;
const packr = new Packr({ useRecords: false, variableMapSize: true });

/** A u64 / u256 as the spec writes it: big-endian binary, no leading zero byte, 0 = empty. */
function uint(v: bigint): Buffer {
  if (v === 0n) return Buffer.alloc(0);
  let hex = v.toString(16);
  if (hex.length % 2) hex = `0${hex}`;
  return Buffer.from(hex, 'hex');
}
const fromUint = (b: unknown): bigint => {
  expect(Buffer.isBuffer(b)).toBe(true);
  const buf = b as Buffer;
  if (buf.length > 0) expect(buf[0]).not.toBe(0); // minimal form
  return buf.length === 0 ? 0n : BigInt(`0x${buf.toString('hex')}`);
};
const bin = (hex: string): Buffer => Buffer.from(hex.slice(2), 'hex');
const hexOf = (b: unknown): string => hexlify(b as Buffer);
/** MessagePack nil, as a frame value. */
const nil = () => ({ raw: Buffer.from([0xc0]) });

/** One map frame, its entries in the given order; a value given as `{ raw }` goes in as those exact bytes. */
function frame(entries: [string, unknown][]): Buffer {
  if (entries.length > 15) throw new Error('fixmap only');
  const parts: Uint8Array[] = [Buffer.from([0x80 | entries.length])];
  for (const [k, v] of entries) {
    parts.push(packr.pack(k));
    parts.push(v && typeof v === 'object' && 'raw' in v ? (v as { raw: Buffer }).raw : packr.pack(v));
  }
  return Buffer.concat(parts);
}

interface SpecState {
  channelId: string;
  version: bigint;
  paidByDevice: bigint;
  paidByHub: bigint;
  round: bigint;
  locksRoot: string;
  lockedByDevice: bigint;
  lockedByHub: bigint;
  isFinal: boolean;
}
const ZERO32 = `0x${'00'.repeat(32)}`;
const stateTypes = {
  State: [
    { name: 'channelId', type: 'bytes32' },
    { name: 'version', type: 'uint64' },
    { name: 'paidByDevice', type: 'uint256' },
    { name: 'paidByHub', type: 'uint256' },
    { name: 'round', type: 'uint64' },
    { name: 'locksRoot', type: 'bytes32' },
    { name: 'lockedByDevice', type: 'uint256' },
    { name: 'lockedByHub', type: 'uint256' },
    { name: 'isFinal', type: 'bool' },
  ],
};
const stateArray = (s: SpecState): unknown[] => [
  bin(s.channelId),
  uint(s.version),
  uint(s.paidByDevice),
  uint(s.paidByHub),
  uint(s.round),
  bin(s.locksRoot),
  uint(s.lockedByDevice),
  uint(s.lockedByHub),
  s.isFinal,
];
function parseState(a: unknown): SpecState {
  expect(Array.isArray(a)).toBe(true);
  const v = a as unknown[];
  expect(v).toHaveLength(9);
  return {
    channelId: hexOf(v[0]),
    version: fromUint(v[1]),
    paidByDevice: fromUint(v[2]),
    paidByHub: fromUint(v[3]),
    round: fromUint(v[4]),
    locksRoot: hexOf(v[5]),
    lockedByDevice: fromUint(v[6]),
    lockedByHub: fromUint(v[7]),
    isFinal: v[8] as boolean,
  };
}

/** A connection that keeps every frame it receives, and checks each against §3's encoding rules. */
class SpecSocket {
  readonly inbox: Frame[] = [];
  /** Frames that broke an encoding rule of §3. */
  readonly violations: string[] = [];
  closeCode: number | undefined;
  #wake: (() => void)[] = [];
  private constructor(readonly ws: WebSocket) {
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      const m = packr.unpack(data) as Frame;
      // Binary frames only; `t` first, then `id`; each value in its shortest form (re-encoding the decoded map with
      // a generic encoder, which writes shortest forms, gives the same bytes).
      if (!isBinary) this.violations.push(`a text frame: ${data.toString()}`);
      else if (Object.keys(m)[0] !== 't' || Object.keys(m)[1] !== 'id')
        this.violations.push(`keys ${Object.keys(m).join(',')}: t and id do not come first`);
      else if (Buffer.compare(frame(Object.entries(m)), data) !== 0)
        this.violations.push(`not in shortest form: ${data.toString('hex')}`);
      this.inbox.push(m);
      for (const w of this.#wake.splice(0)) w();
    });
    ws.on('close', (code) => {
      this.closeCode = code;
      for (const w of this.#wake.splice(0)) w();
    });
  }
  static async connect(url: string): Promise<SpecSocket> {
    const ws = new WebSocket(url);
    const s = new SpecSocket(ws);
    await new Promise((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('error', reject);
    });
    return s;
  }
  send(bytes: Buffer): void {
    this.ws.send(bytes);
  }
  async next(pred: (m: Frame) => boolean, timeoutMs = 10_000): Promise<Frame> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      expect(this.violations).toEqual([]);
      const i = this.inbox.findIndex(pred);
      if (i >= 0) return this.inbox.splice(i, 1)[0]!;
      if (this.closeCode !== undefined) throw new Error(`closed with ${this.closeCode}`);
      if (Date.now() > until) throw new Error('timed out waiting for a frame');
      await new Promise<void>((r) => {
        this.#wake.push(r);
        setTimeout(r, 200);
      });
    }
  }
  close(): void {
    this.ws.close();
  }
}

describe('a device written from the spec alone (generic MessagePack, ethers EIP-712, plain WebSocket)', () => {
  let w: World;
  let device: Wallet;
  let hub: string;
  let domain: { name: string; version: string; chainId: bigint; verifyingContract: string };
  let channelId: string;
  let sock: SpecSocket;
  const deposit = 1_000_000n;
  let latest: { state: SpecState; deviceSig: string; hubSig: string };
  /** A device of the library's client, the other end of the routed payments. */
  let payee: TrickleClient;

  const digest = (s: SpecState) => TypedDataEncoder.hash(domain, stateTypes, s);
  const sign = (s: SpecState) => device.signingKey.sign(digest(s)).serialized;
  const state = (over: Partial<SpecState>): SpecState => ({
    channelId,
    version: 0n,
    paidByDevice: 0n,
    paidByHub: 0n,
    round: 0n,
    locksRoot: ZERO32,
    lockedByDevice: 0n,
    lockedByHub: 0n,
    isFinal: false,
    ...over,
  });
  const update = (id: number, s: SpecState) =>
    frame([
      ['t', 'update'],
      ['id', id],
      ['state', stateArray(s)],
      ['sig', bin(sign(s))],
    ]);

  /** Connect, answer the challenge (§4 `challenge` / `auth`), and wait for `ok`. */
  async function authenticate(): Promise<SpecSocket> {
    const s = await SpecSocket.connect(w.hub!.url);
    const ch = await s.next((m) => m.t === 'challenge');
    expect(Object.keys(ch).slice(2, 6)).toEqual(['nonce', 'hub', 'chainId', 'adjudicator']);
    expect((ch['nonce'] as Buffer).length).toBe(32);
    expect((ch['hub'] as Buffer).length).toBe(20);
    hub = getAddress(hexOf(ch['hub']));
    domain = {
      name: 'Trickle',
      version: '1',
      chainId: fromUint(ch['chainId']),
      verifyingContract: getAddress(hexOf(ch['adjudicator'])),
    };
    const nonce = hexOf(ch['nonce']);
    const authDigest = TypedDataEncoder.hash(
      domain,
      {
        Auth: [
          { name: 'device', type: 'address' },
          { name: 'hub', type: 'address' },
          { name: 'nonce', type: 'bytes32' },
        ],
      },
      { device: device.address, hub, nonce },
    );
    // Keys in another order than an encoder writes them, and the id as a uint32 (§3: any order, any integer width).
    s.send(
      frame([
        ['sig', bin(device.signingKey.sign(authDigest).serialized)],
        ['nonce', bin(nonce)],
        ['id', { raw: Buffer.from([0xce, 0, 0, 0, 1]) }],
        ['device', bin(device.address)],
        ['t', 'auth'],
      ]),
    );
    expect(await s.next((m) => m.id === 1)).toEqual({ t: 'ok', id: 1 });
    return s;
  }

  beforeAll(async () => {
    w = await createWorld({ accounts: 4 });
    await w.startHub();
    device = new Wallet(w.chain.accounts[2]!);
  });
  afterAll(async () => {
    sock?.close();
    await w?.close();
  });

  it('authenticates; a hub without a market announces round 0 after ok, and answers an order with MARKET_DISABLED', async () => {
    sock = await authenticate();
    const round = await sock.next((m) => m.t === 'round');
    expect(fromUint(round['round'])).toBe(0n);
    expect(round.id).toBe(0);
    const order = [bin(`0x${'0a'.repeat(32)}`), 'kwh', 0, uint(1n), uint(10n), uint(1n)];
    sock.send(
      frame([
        ['t', 'order'],
        ['id', 2],
        ['order', order],
        ['sig', bin(`0x${'11'.repeat(65)}`)],
      ]),
    );
    const o = await sock.next((m) => m.id === 2);
    expect(o).toMatchObject({ t: 'error', id: 2, code: 'MARKET_DISABLED' });
  });

  it('opens a channel it funded on-chain: the hub answers sync with the zero state, unsigned', async () => {
    const salt = hexlify(randomBytes(32));
    const challengeDuration = 3600n;
    const params = {
      chainId: domain.chainId,
      adjudicator: domain.verifyingContract,
      device: device.address,
      hub,
      token: w.token,
      challengeDuration,
      salt,
    };
    channelId = keccak256(
      AbiCoder.defaultAbiCoder().encode(
        ['uint256', 'address', 'address', 'address', 'address', 'uint64', 'bytes32'],
        [params.chainId, params.adjudicator, params.device, params.hub, params.token, challengeDuration, salt],
      ),
    );
    const wallet = w.chain.wallet(2);
    await approve(wallet, w.token, w.adjudicator, deposit);
    await new Adjudicator(w.adjudicator, wallet).open(params as never, deposit);
    const open = (id: number) =>
      frame([
        ['t', 'open'],
        ['id', id],
        [
          'params',
          [
            uint(params.chainId),
            bin(params.adjudicator),
            bin(params.device),
            bin(params.hub),
            bin(params.token),
            uint(challengeDuration),
            bin(salt),
          ],
        ],
      ]);
    // Until the hub has seen the deposit it answers CHANNEL_NOT_OPEN, and the device asks again.
    let id = 3;
    sock.send(open(id));
    let reply = await sock.next((m) => m.id === id);
    while (reply.t === 'error' && reply['code'] === 'CHANNEL_NOT_OPEN' && id < 100) {
      await new Promise((r) => setTimeout(r, 100));
      sock.send(open(++id));
      reply = await sock.next((m) => m.id === id);
    }
    expect(reply.t).toBe('sync');
    expect(hexOf(reply['channelId'])).toBe(channelId);
    const [s, dsig, hsig] = reply['latest'] as [unknown, unknown, unknown];
    expect(parseState(s)).toEqual(state({}));
    expect(dsig).toBeNull();
    expect(hsig).toBeNull();
  });

  /** Check an `ack` for `s`: the hub's signature over it (EIP-712, 65 bytes r‖s‖v, v ∈ {27, 28}). */
  function expectAck(a: Frame, s: SpecState): string {
    expect(a.t).toBe('ack');
    expect(hexOf(a['channelId'])).toBe(channelId);
    expect(fromUint(a['version'])).toBe(s.version);
    const sig = a['sig'] as Buffer;
    expect(sig.length).toBe(65);
    expect([27, 28]).toContain(sig[64]);
    expect(recoverAddress(digest(s), hexlify(sig))).toBe(hub);
    return hexlify(sig);
  }

  it('an open naming another chain, or an update for a channel it does not hold: WRONG_CHANNEL', async () => {
    const params = (chainId: bigint) => [
      uint(chainId),
      bin(domain.verifyingContract),
      bin(device.address),
      bin(hub),
      bin(w.token),
      uint(3600n),
      bin(hexlify(randomBytes(32))),
    ];
    sock.send(
      frame([
        ['t', 'open'],
        ['id', 5],
        ['params', params(domain.chainId + 1n)],
      ]),
    );
    expect(await sock.next((m) => m.id === 5)).toMatchObject({ t: 'error', code: 'WRONG_CHANNEL' });
    const foreign = state({ channelId: hexlify(randomBytes(32)), version: 1n, paidByDevice: 1n });
    sock.send(update(6, foreign));
    const r = await sock.next((m) => m.id === 6);
    expect(r).toMatchObject({ t: 'reject', code: 'WRONG_CHANNEL', latest: null });
  });

  it('pays: the hub acks each update with its signature over the state', async () => {
    const s1 = state({ version: 1n, paidByDevice: 100n });
    sock.send(update(10, s1));
    const hubSig = expectAck(await sock.next((m) => m.id === 10), s1);
    latest = { state: s1, deviceSig: sign(s1), hubSig };
  });

  it('pipelines: updates in flight each build on the previous one; acks are cumulative and end at the newest', async () => {
    const states = [2n, 3n, 4n].map((v) => state({ version: v, paidByDevice: v * 100n }));
    states.forEach((s, k) => sock.send(update(20 + k, s)));
    let last: Frame;
    do {
      last = await sock.next((m) => m.t === 'ack' || m.t === 'reject');
      expect(last.t).toBe('ack');
      expectAck(
        last,
        states.find((s) => s.version === fromUint(last['version']))!,
      );
    } while (fromUint(last['version']) < 4n);
    expect(last.id).toBe(22);
    latest = { state: states[2]!, deviceSig: sign(states[2]!), hubSig: hexlify(last['sig'] as Buffer) };
    expect(w.hub!.channels.get(channelId as never)!.latest.state.paidByDevice).toBe(400n);
  });

  it('a replayed older update is refused STALE_VERSION with the hub’s latest; the current one is re-acked', async () => {
    sock.send(update(30, state({ version: 2n, paidByDevice: 200n })));
    const r = await sock.next((m) => m.id === 30);
    expect(r).toMatchObject({ t: 'reject', code: 'STALE_VERSION' });
    expect(typeof r['message']).toBe('string');
    const [s, dsig, hsig] = r['latest'] as [unknown, Buffer, Buffer];
    expect(parseState(s)).toEqual(latest.state);
    expect(hexlify(dsig)).toBe(latest.deviceSig);
    expect(hexlify(hsig)).toBe(latest.hubSig);

    sock.send(update(31, latest.state));
    expect(expectAck(await sock.next((m) => m.id === 31), latest.state)).toBe(latest.hubSig); // the same ack, byte for byte
  });

  it('an escrow payment (an update with paymentId, §7) to a hub without a market is refused MARKET_DISABLED: it would never come back', async () => {
    const s = state({
      ...latest.state,
      version: latest.state.version + 1n,
      paidByDevice: latest.state.paidByDevice + 20n,
    });
    sock.send(
      frame([
        ['t', 'update'],
        ['id', 35],
        ['state', stateArray(s)],
        ['sig', bin(sign(s))],
        ['paymentId', bin(hexlify(randomBytes(32)))],
      ]),
    );
    expect(await sock.next((m) => m.id === 35)).toMatchObject({ t: 'reject', code: 'MARKET_DISABLED' });
    expect(w.hub!.channels.get(channelId as never)!.latest.state.paidByDevice).toBe(latest.state.paidByDevice);
  });

  it('reconnects: a sync with its latest fully signed state is answered with the hub’s', async () => {
    sock.close();
    sock = await authenticate();
    sock.send(
      frame([
        ['t', 'sync'],
        ['id', 40],
        ['channelId', bin(channelId)],
        ['latest', [stateArray(latest.state), bin(latest.deviceSig), bin(latest.hubSig)]],
      ]),
    );
    const r = await sock.next((m) => m.id === 40);
    expect(r.t).toBe('sync');
    expect(Object.keys(r)).toEqual(['t', 'id', 'channelId', 'latest']); // no locks: `locks` absent
    const [s, dsig, hsig] = r['latest'] as [unknown, Buffer, Buffer];
    expect(parseState(s)).toEqual(latest.state);
    expect(hexlify(dsig)).toBe(latest.deviceSig);
    expect(hexlify(hsig)).toBe(latest.hubSig);
  });

  it('a refused update in flight does not refuse the next one for it: a state that holds over the hub’s own is acked', async () => {
    // v5 is refused: a final state moves no money (§2 rule 8, BAD_FINAL; one that keeps every rule is still refused,
    // MALFORMED: a final state travels in `close`, not `update`). v6 was built on it and carries its payment too, and
    // holds over v4 by itself (states are cumulative), so the hub takes it: the device is paid up to v6.
    const v5 = state({ ...latest.state, version: latest.state.version + 1n, paidByDevice: 450n, isFinal: true });
    const v6 = state({ ...latest.state, version: latest.state.version + 2n, paidByDevice: 500n });
    sock.send(update(42, v5));
    sock.send(update(43, v6));
    const r = await sock.next((m) => m.id === 42);
    expect(r).toMatchObject({ t: 'reject', code: 'BAD_FINAL' });
    expect(parseState((r['latest'] as unknown[])[0]).version).toBeLessThan(v6.version);
    const hubSig = expectAck(await sock.next((m) => m.id === 43), v6);
    latest = { state: v6, deviceSig: sign(v6), hubSig };
  });

  it('routes a payment: acked on its own durable state, then a receipt (delivered) once the payee countersigned; an unknown payee is refused NO_ROUTE up front', async () => {
    // The payee's guard holds its countersignature until A's ack is in: the hub acks A on A's durable state alone.
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    payee = await w.client(3, { creditGuard: () => held });
    const bch = await payee.openChannel({ token: w.token, deposit: 1_000n });
    await w.hubDeposit(bch.channelId, 1_000n);
    const paymentId = hexlify(randomBytes(32));
    const routed = (id: number, s: SpecState, to: string, pid: string) =>
      frame([
        ['t', 'update'],
        ['id', id],
        ['state', stateArray(s)],
        ['sig', bin(sign(s))],
        ['route', [bin(to), uint(50n), bin(pid)]],
      ]);
    // Nobody to pay at this address: refused before anything moves.
    const nowhere = state({
      ...latest.state,
      version: latest.state.version + 1n,
      paidByDevice: latest.state.paidByDevice + 50n,
    });
    sock.send(routed(60, nowhere, hexlify(randomBytes(20)), hexlify(randomBytes(32))));
    const r = await sock.next((m) => m.id === 60);
    expect(r).toMatchObject({ t: 'reject', code: 'NO_ROUTE' });
    expect(parseState((r['latest'] as unknown[])[0])).toEqual(latest.state);

    sock.send(routed(61, nowhere, payee.address, paymentId));
    const hubSig = expectAck(await sock.next((m) => m.id === 61), nowhere);
    latest = { state: nowhere, deviceSig: sign(nowhere), hubSig };
    expect(sock.inbox.some((m) => m.t === 'receipt')).toBe(false);
    release();
    const receipt = await sock.next((m) => m.t === 'receipt');
    expect(hexOf(receipt['paymentId'])).toBe(paymentId);
    expect(receipt['delivered']).toBe(true);
    expect(bch.latest.state.paidByHub).toBe(50n);
  });

  it('is paid: the hub proposes a state it signed first (paymentId set), the device countersigns it with ack', async () => {
    await w.hubDeposit(channelId as `0x${string}`, 300n);
    const pay = payee.channels()[0]!.pay(70n, { to: device.address as `0x${string}` }) as Promise<unknown>;
    const u = await sock.next((m) => m.t === 'update');
    expect(Object.keys(u)).toEqual(['t', 'id', 'state', 'sig', 'paymentId']);
    const s = parseState(u['state']);
    // Only the hub's counter rose, by the amount; nothing else moved.
    expect(s).toEqual({ ...latest.state, version: latest.state.version + 1n, paidByHub: latest.state.paidByHub + 70n });
    expect(recoverAddress(digest(s), hexlify(u['sig'] as Buffer))).toBe(hub);
    const ackWith = (sig: string) =>
      frame([
        ['t', 'ack'],
        ['id', u.id],
        ['channelId', bin(channelId)],
        ['version', uint(s.version)],
        ['sig', bin(sig)],
      ]);
    // An ack whose signature is not the countersignature (here: over another state) is dropped, unanswered (an ack
    // answers the hub's request: its id is the hub's, so an error under it could meet one of the device's own).
    sock.send(ackWith(sign({ ...s, paidByHub: s.paidByHub + 1n })));
    sock.send(
      frame([
        ['t', 'sync'],
        ['id', 56],
        ['channelId', bin(channelId)],
        ['latest', nil()],
      ]),
    );
    const sync = await sock.next((m) => m.t !== 'round');
    expect(sync).toMatchObject({ t: 'sync', id: 56 });
    expect(parseState((sync['latest'] as unknown[])[0])).toEqual(latest.state);
    // The device's sync (latest nil) made the hub send its open proposal again, after its sync reply.
    const again = await sock.next((m) => m.t === 'update');
    expect(again).toMatchObject({ t: 'update', id: u.id });
    expect(parseState(again['state'])).toEqual(s);
    sock.send(ackWith(sign(s)));
    await pay;
    await waitFor(() => w.hub!.channels.get(channelId as never)!.latest.state.version === s.version);
    expect(w.hub!.channels.get(channelId as never)!.latest.state.paidByHub).toBe(70n);
    latest = { state: s, deviceSig: sign(s), hubSig: hexlify(u['sig'] as Buffer) };
  });

  it('is paid by a lock it claims: the hub locks (its locksRoot as §2 defines it), the device shows the preimage, the hub claims it', async () => {
    const preimage = hexlify(randomBytes(32));
    const hash = keccak256(preimage);
    const handle = payee.channels()[0]!.pay(30n, {
      to: device.address as `0x${string}`,
      lock: { hash: hash as Bytes32, expiresIn: 7200 },
    }) as { locked: Promise<unknown>; result: Promise<unknown>; expiresAt: bigint };
    // The hub's lock toward this device: the state adds it, paid by the hub (payer 1), and nothing else moves.
    const u = await sock.next((m) => m.t === 'update');
    const [amount, lockHash, expiry] = u['lock'] as [Buffer, Buffer, Buffer];
    expect(fromUint(amount)).toBe(30n);
    expect(hexOf(lockHash)).toBe(hash);
    // §5: T − Δ, Δ = the longer challenge duration of the two channels (3600 s) + lockMarginSeconds (60 s).
    expect(fromUint(expiry)).toBe(handle.expiresAt - 3660n);
    const added = parseState(u['state']);
    const root = keccak256(
      AbiCoder.defaultAbiCoder().encode(['uint256', 'bytes32', 'uint64', 'uint8'], [30n, hash, fromUint(expiry), 1]),
    );
    expect(added).toEqual({ ...latest.state, version: latest.state.version + 1n, locksRoot: root, lockedByHub: 30n });
    expect(recoverAddress(digest(added), hexlify(u['sig'] as Buffer))).toBe(hub);
    const ack = (id: unknown, s: SpecState) =>
      frame([
        ['t', 'ack'],
        ['id', id],
        ['channelId', bin(channelId)],
        ['version', uint(s.version)],
        ['sig', bin(sign(s))],
      ]);
    sock.send(ack(u.id, added));
    await handle.locked;
    // A preimage that is not the hash's, and a hash no lock has: reject under the claim's id, nothing moves.
    const claim = (id: number, h: string, pre: string) =>
      frame([
        ['t', 'claim'],
        ['id', id],
        ['channelId', bin(channelId)],
        ['unlock', [bin(h), bin(pre)]],
      ]);
    sock.send(claim(68, hash, hexlify(randomBytes(32))));
    expect(await sock.next((m) => m.id === 68)).toMatchObject({ t: 'reject', code: 'BAD_PREIMAGE' });
    const stranger = hexlify(randomBytes(32));
    sock.send(claim(69, keccak256(stranger), stranger));
    expect(await sock.next((m) => m.id === 69)).toMatchObject({ t: 'reject', code: 'UNKNOWN_LOCK' });
    // The claim: the hub answers with the update that claims its lock (unlock with the preimage).
    sock.send(
      frame([
        ['t', 'claim'],
        ['id', 70],
        ['channelId', bin(channelId)],
        ['unlock', [bin(hash), bin(preimage)]],
      ]),
    );
    const c = await sock.next((m) => m.t === 'update');
    expect((c['unlock'] as Buffer[]).map(hexOf)).toEqual([hash, preimage]);
    const claimed = parseState(c['state']);
    expect(claimed).toEqual({ ...latest.state, version: added.version + 1n, paidByHub: latest.state.paidByHub + 30n });
    expect(recoverAddress(digest(claimed), hexlify(c['sig'] as Buffer))).toBe(hub);
    sock.send(ack(c.id, claimed));
    expect(await handle.result).toEqual({ status: 'claimed', preimage });
    await waitFor(() => w.hub!.channels.get(channelId as never)!.latest.state.version === claimed.version);
    latest = { state: claimed, deviceSig: sign(claimed), hubSig: hexlify(c['sig'] as Buffer) };
  });

  it('pays by a lock: the update adds it (payer 0) with a route; the payee claims; the hub shows the preimage; the device claims its own lock', async () => {
    const preimage = hexlify(randomBytes(32));
    const hash = keccak256(preimage);
    const paymentId = hexlify(randomBytes(32));
    const expiry = BigInt(Math.floor(Date.now() / 1000) + 7200);
    const stop = payee.channels()[0]!.onConditionalPayment((p) => void p.claim(preimage as Bytes32));
    const root = keccak256(
      AbiCoder.defaultAbiCoder().encode(['uint256', 'bytes32', 'uint64', 'uint8'], [40n, hash, expiry, 0]),
    );
    const locked = state({
      ...latest.state,
      version: latest.state.version + 1n,
      locksRoot: root,
      lockedByDevice: 40n,
    });
    sock.send(
      frame([
        ['t', 'update'],
        ['id', 80],
        ['state', stateArray(locked)],
        ['sig', bin(sign(locked))],
        ['route', [bin(payee.address), uint(40n), bin(paymentId)]],
        ['lock', [uint(40n), bin(hash), uint(expiry)]],
      ]),
    );
    const lockSig = expectAck(await sock.next((m) => m.id === 80), locked);
    latest = { state: locked, deviceSig: sign(locked), hubSig: lockSig };
    // The payee claimed downstream: the hub shows this device the preimage, and the device claims its own lock.
    const c = await sock.next((m) => m.t === 'claim');
    expect(hexOf(c['channelId'])).toBe(channelId);
    expect((c['unlock'] as Buffer[]).map(hexOf)).toEqual([hash, preimage]);
    const claimed = state({
      ...latest.state,
      version: locked.version + 1n,
      paidByDevice: locked.paidByDevice + 40n,
      locksRoot: ZERO32,
      lockedByDevice: 0n,
    });
    sock.send(
      frame([
        ['t', 'update'],
        ['id', 81],
        ['state', stateArray(claimed)],
        ['sig', bin(sign(claimed))],
        ['unlock', [bin(hash), bin(preimage)]],
      ]),
    );
    const hubSig = expectAck(await sock.next((m) => m.id === 81), claimed);
    latest = { state: claimed, deviceSig: sign(claimed), hubSig };
    stop();
    // The claim settled the route; a conditional route's payer gets no receipt (§4): its own lock told it.
    await waitFor(() => payee.channels()[0]!.locks.length === 0);
    expect(sock.inbox.some((m) => m.t === 'receipt' && hexOf(m['paymentId']) === paymentId)).toBe(false);
  });

  it('may send `error` (§4: either side): the hub takes it without answering, and serves the next request', async () => {
    // A device that cannot use a push (here: a made-up one) says so; answering an error with an error would let two
    // peers that both do so bounce frames for ever.
    sock.send(
      frame([
        ['t', 'error'],
        ['id', 45],
        ['code', 'MALFORMED'],
        ['message', 'could not read your frame'],
      ]),
    );
    sock.send(update(46, latest.state)); // the current state again: re-acked
    const next = await sock.next((m) => m.t !== 'round');
    expect(next).toMatchObject({ t: 'ack', id: 46 });
    expect(sock.closeCode).toBeUndefined();
  });

  it('a frame with an unknown field, or a u64 with a leading zero byte, is an error MALFORMED (its id); an oversized frame closes 1009; a newer connection replaces an older one with 4000', async () => {
    const next = state({
      ...latest.state,
      version: latest.state.version + 1n,
      paidByDevice: latest.state.paidByDevice + 1n,
    });
    sock.send(
      frame([
        ['t', 'update'],
        ['id', 90],
        ['state', stateArray(next)],
        ['sig', bin(sign(next))],
        ['note', 'hello'],
      ]),
    );
    expect(await sock.next((m) => m.id === 90)).toMatchObject({ t: 'error', code: 'MALFORMED' });
    const padded = stateArray(next);
    padded[1] = Buffer.concat([Buffer.from([0]), uint(next.version)]);
    sock.send(
      frame([
        ['t', 'update'],
        ['id', 91],
        ['state', padded],
        ['sig', bin(sign(next))],
      ]),
    );
    expect(await sock.next((m) => m.id === 91)).toMatchObject({ t: 'error', code: 'MALFORMED' });
    expect(w.hub!.channels.get(channelId as never)!.latest.state).toMatchObject({ version: latest.state.version });
    const first = sock;
    const other = await authenticate();
    // A newer connection of the same device replaces the older one (4000).
    await expect(first.next(() => false)).rejects.toThrow('closed with 4000');
    other.send(Buffer.alloc(64 * 1024 + 1));
    await expect(other.next(() => false)).rejects.toThrow('closed with 1009');
    sock = await authenticate();
  });

  it('closes cooperatively: the hub countersigns the final state, which the adjudicator pays out', async () => {
    const fin = state({ ...latest.state, version: latest.state.version + 1n, isFinal: true });
    sock.send(
      frame([
        ['t', 'close'],
        ['id', 50],
        ['state', stateArray(fin)],
        ['sig', bin(sign(fin))],
      ]),
    );
    const hubSig = expectAck(await sock.next((m) => m.id === 50), fin);
    const wallet = w.chain.wallet(2);
    const before = await balanceOf(wallet, w.token, device.address as never);
    await new Adjudicator(w.adjudicator, wallet).cooperativeClose({
      state: fin,
      deviceSig: sign(fin),
      hubSig,
    } as never);
    expect((await balanceOf(wallet, w.token, device.address as never)) - before).toBe(deposit - 550n + 70n + 30n - 40n);
  });
});

describe('idle connections (spec §3): the hub pings, and closes a peer that answers nothing with 1001', () => {
  let w: World;
  beforeAll(async () => {
    w = await createWorld({ accounts: 4 });
    await w.startHub({ limits: { idleTimeoutMs: 1_500 } });
  });
  afterAll(async () => w?.close());

  /** An authenticated raw connection; `autoPong: false` makes it a peer that never answers pings. */
  async function connect(
    account: number,
    autoPong: boolean,
  ): Promise<{ ws: WebSocket; pings: () => number; closed: Promise<number> }> {
    const ws = new WebSocket(w.hub!.url, { autoPong });
    let pings = 0;
    ws.on('ping', () => pings++);
    const closed = new Promise<number>((r) => ws.once('close', (code) => r(code)));
    const first = new Promise<Frame>((r) => ws.once('message', (d: Buffer) => r(packr.unpack(d) as Frame)));
    await new Promise((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('error', reject);
    });
    const ch = await first;
    const device = new Wallet(w.chain.accounts[account]!);
    const authDigest = TypedDataEncoder.hash(
      {
        name: 'Trickle',
        version: '1',
        chainId: fromUint(ch['chainId']),
        verifyingContract: getAddress(hexOf(ch['adjudicator'])),
      },
      {
        Auth: [
          { name: 'device', type: 'address' },
          { name: 'hub', type: 'address' },
          { name: 'nonce', type: 'bytes32' },
        ],
      },
      { device: device.address, hub: getAddress(hexOf(ch['hub'])), nonce: hexOf(ch['nonce']) },
    );
    const ok = new Promise<Frame>((r) => ws.once('message', (d: Buffer) => r(packr.unpack(d) as Frame)));
    ws.send(
      frame([
        ['t', 'auth'],
        ['id', 1],
        ['device', bin(device.address)],
        ['nonce', ch['nonce']],
        ['sig', bin(device.signingKey.sign(authDigest).serialized)],
      ]),
    );
    expect(await ok).toEqual({ t: 'ok', id: 1 });
    return { ws, pings: () => pings, closed };
  }

  it('a peer that answers pings stays; one that answers nothing is closed with 1001 after idleTimeoutMs', async () => {
    const answering = await connect(2, true);
    const silent = await connect(3, false);
    expect(await silent.closed).toBe(1001);
    // By then the hub pinged both at least once; the one that answered is still open, and stays through more pings.
    const seen = answering.pings();
    expect(seen).toBeGreaterThan(0);
    await waitFor(() => answering.pings() >= seen + 2, 10_000);
    expect(answering.ws.readyState).toBe(WebSocket.OPEN);
    answering.ws.close();
  });
});
