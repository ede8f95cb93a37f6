import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Packr } from 'msgpackr';
import { pino } from 'pino';
import { decodeFrame, encodeFrame, type Message } from '@trickle/protocol/codec';
import { domainSeparator, stateDigest, trickleDomain } from '@trickle/protocol/eip712';
import { ERROR_CODES } from '@trickle/protocol/errors';
import { nobleSigner, type Signer } from '@trickle/protocol/signer';
import type { Address, ChannelId, ChannelParams, SignedState, State } from '@trickle/protocol/types';
import type { ClientChannel } from '@trickle/client/channel';
import { createWorld, type World } from './helpers/harness.js';
import { RawDevice, SocketClosed } from './helpers/raw-device.js';

/**
 * Fuzzing probe of a real hub's wire (spec §3, §4, §6): frames of every device-sent type, mutated structurally (field
 * types, extreme integers, wrong-length binaries, nested and huge values, other channels' ids and other devices'
 * states), semantically (states with hostile values, re-signed by the device's own key so they pass the signature
 * check and reach the transition rules) and byte by byte (flips, truncations, insertions), from a fixed seed.
 * After each batch: every reply is an `error`/`reject` with a code of §6 (never INTERNAL) or the type's normal answer;
 * the hostile device's channel is unchanged unless an update was acked (then it holds exactly that state); a third
 * device's channel is untouched; an honest device's payment is acked within a bound; the hostile device can still pay.
 *
 * FUZZ_ITERS (frames, default 2000; half again with a credit open) and FUZZ_SEED (default 0x7121c) reproduce or lengthen a run.
 */
const ITERS = Number(process.env['FUZZ_ITERS'] ?? 2000);
const SEED = Number(process.env['FUZZ_SEED'] ?? 0x7121c);
const BATCH = 40;
const HONEST_BOUND_MS = 3000;

/** mulberry32: a small deterministic PRNG. */
function prng(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n: number) => Math.floor(next() * n);
  return {
    next,
    int,
    pick: <T>(xs: readonly T[]): T => xs[int(xs.length)]!,
    bytes: (n: number) => {
      const b = Buffer.alloc(n);
      for (let i = 0; i < n; i++) b[i] = int(256);
      return b;
    },
  };
}
type Rng = ReturnType<typeof prng>;

const packr = new Packr({ useRecords: false, variableMapSize: true, mapsAsObjects: true });
const CODES = new Set(Object.keys(ERROR_CODES));
const big = (v: bigint) => {
  if (v === 0n) return Buffer.alloc(0);
  let h = v.toString(16);
  if (h.length & 1) h = `0${h}`;
  return Buffer.from(h, 'hex');
};
const canon = (v: unknown) =>
  JSON.stringify(v, (_k, x) =>
    typeof x === 'bigint' ? `${x}n` : x instanceof Uint8Array ? Buffer.from(x).toString('hex') : x,
  );

/** Values a hostile peer puts anywhere. */
function hostileValue(r: Rng): unknown {
  const choices: (() => unknown)[] = [
    () => 0,
    () => -1,
    () => 0xffffffff,
    () => 0x100000000,
    () => Number.MAX_SAFE_INTEGER,
    () => (1n << 64n) - 1n,
    () => -(1n << 63n),
    () => 1.5,
    () => Number.NaN,
    () => true,
    () => false,
    () => null,
    () => '',
    () => 'x'.repeat(r.pick([1, 33, 64, 65, 513, 2000])),
    () => '\u{1F600}'.repeat(300),
    () => 'INTERNAL',
    () => [],
    () => [[[[[[]]]]]],
    () => Array.from({ length: r.pick([1, 9, 100, 5000]) }, () => 0),
    () => ({}),
    () => ({ t: 'update', id: 1 }),
    () => Buffer.alloc(0),
    () => big(1n),
    () => big((1n << 64n) - 1n),
    () => big(1n << 64n),
    () => big((1n << 256n) - 1n),
    () => big(1n << 256n),
    () => Buffer.concat([Buffer.alloc(1), big(5n)]),
    () => r.bytes(r.pick([1, 19, 20, 21, 31, 32, 33, 64, 65, 66])),
    () => Buffer.alloc(r.pick([20, 32, 65])),
    () => Buffer.alloc(r.pick([20, 32, 65]), 0xff),
    () => r.bytes(r.pick([1024, 61_440, 61_441])),
  ];
  return r.pick(choices)();
}

/** Every path in a decoded MessagePack tree (map keys and array indices). */
function paths(v: unknown, at: (string | number)[] = [], out: (string | number)[][] = []) {
  if (Array.isArray(v)) v.slice(0, 12).forEach((x, i) => (out.push([...at, i]), paths(x, [...at, i], out)));
  else if (v !== null && typeof v === 'object' && !(v instanceof Uint8Array))
    for (const k of Object.keys(v)) (out.push([...at, k]), paths((v as Record<string, unknown>)[k], [...at, k], out));
  return out;
}
function getAt(root: unknown, p: (string | number)[]): unknown {
  return p.reduce((o: any, k) => o?.[k], root);
}
function parentOf(root: unknown, p: (string | number)[]): any {
  return getAt(root, p.slice(0, -1));
}

describe('wire fuzz: mutated frames of every device-sent type against a real hub', () => {
  let w: World;
  let victimKey: Signer;
  let vparams: ChannelParams;
  let vid: ChannelId;
  let honest: ClientChannel;
  let thirdId: ChannelId;
  let honestAddr: Address;
  let sep: Uint8Array;
  let raw: RawDevice;
  let round = 1n;
  const logs: string[] = [];
  const undecodable: Buffer[] = [];
  const closes: number[] = [];

  const rec = (id: ChannelId) => w.hub!.channels.get(id)!;
  /** Phase 2: the hub has a credit open toward the victim; its proposals (the states it may land on an ack). */
  let crediting = false;
  let proposal: State | undefined;
  let proposalId = 0;
  const proposals = new Set<string>();
  const snap = (id: ChannelId) => {
    const r = rec(id);
    return canon({
      latest: r.latest,
      status: r.status,
      funding: r.funding,
      // With a credit open, a reject has the hub keep the refused state and sign another on top (spec §5).
      ...(crediting && id === vid ? {} : { hubSignedVersion: r.hubSignedVersion, unsettled: r.unsettled ?? [] }),
      locks: r.locks ?? [],
    });
  };
  const sign = (s: State) => Buffer.from(victimKey.signDigest(stateDigest(sep, s)));

  async function connectVictim() {
    raw = await RawDevice.connect(w.hub!.url, victimKey, ['trickle.v3']);
    raw.ws.on('message', (data: Buffer) => {
      try {
        decodeFrame(data);
      } catch {
        undecodable.push(data);
      }
    });
    const r = raw.inbox.find((m) => m.t === 'round') as Extract<Message, { t: 'round' }> | undefined;
    if (r && r.round > 0n) round = r.round;
  }

  beforeAll(async () => {
    w = await createWorld();
    const logger = pino({ level: 'warn' }, { write: (s: string) => void logs.push(s) });
    await w.startHub({
      limits: {
        maxMalformedFrames: 1_000_000,
        messagesPerSecond: 100_000,
        messageBurst: 100_000,
        maxInFlightPerConnection: 256,
      },
      market: { roundMs: 60_000, feeBps: 0n },
      more: { logger },
    });
    const v = await w.client(2);
    const vch = await v.openChannel({ token: w.token, deposit: 1_000_000n });
    await vch.pay(1_000n);
    await w.hubDeposit(vch.channelId, 100_000n);
    vid = vch.channelId;
    vparams = rec(vid).params;
    await v.disconnect();
    const t = await w.client(4);
    const tch = await t.openChannel({ token: w.token, deposit: 10_000n });
    await tch.pay(7n);
    thirdId = tch.channelId;
    await t.disconnect();
    const h = await w.client(3);
    honest = await h.openChannel({ token: w.token, deposit: 100_000_000n });
    await honest.pay(1n);
    honestAddr = w.chain.addresses[3]! as Address;
    victimKey = nobleSigner(w.chain.accounts[2]!);
    sep = domainSeparator(trickleDomain(w.chain.chainId, w.adjudicator));
    await connectVictim();
  });
  afterAll(async () => {
    raw?.close();
    await w?.close();
  });

  let nextId = 10_000;

  /** A valid frame of each device-sent type, from the hub's current state of the victim's channel. */
  function baseFrames(r: Rng): Message[] {
    const s = rec(vid).latest.state;
    // Above any version the hub signed (a proposal of its own open toward the device, phase 2).
    const v = (rec(vid).hubSignedVersion > s.version ? rec(vid).hubSignedVersion : s.version) + 1n;
    const next: State = { ...s, version: v, paidByDevice: s.paidByDevice + 1n };
    const routed: State = { ...s, version: v, paidByDevice: s.paidByDevice + 3n };
    const fin: State = { ...s, version: v, isFinal: true };
    const honestLatest = rec(honest.channelId).latest;
    const id = 0; // replaced per frame
    const pid = `0x${r.bytes(32).toString('hex')}` as never;
    return [
      { t: 'update', id, state: next, sig: sign(next) },
      {
        t: 'update',
        id,
        state: routed,
        sig: sign(routed),
        route: { to: honestAddr, amount: 3n, paymentId: pid },
      },
      { t: 'update', id, state: next, sig: sign(next), paymentId: pid },
      proposal
        ? { t: 'ack', id, channelId: vid, version: proposal.version, sig: sign(proposal) }
        : { t: 'ack', id, channelId: vid, version: s.version, sig: sign(s) },
      { t: 'reject', id, channelId: vid, code: 'INVALID_ARGUMENT', message: 'no', latest: rec(vid).latest },
      { t: 'reject', id: -1, channelId: vid, code: 'INVALID_ARGUMENT', message: 'no', latest: null },
      { t: 'close', id, state: fin, sig: sign(fin) },
      { t: 'sync', id, channelId: vid, latest: rec(vid).latest },
      { t: 'sync', id, channelId: honest.channelId, latest: honestLatest },
      { t: 'open', id, params: vparams },
      {
        t: 'claim',
        id,
        channelId: vid,
        unlock: {
          hash: `0x${r.bytes(32).toString('hex')}` as never,
          preimage: `0x${r.bytes(32).toString('hex')}` as never,
        },
      },
      {
        t: 'order',
        id,
        order: { id: pid, market: 'kwh', side: r.pick(['bid', 'ask'] as const), quantity: 1n, price: 1n, round },
        sig: sign(next),
      },
      { t: 'outcome', id, paymentId: pid },
      { t: 'ping', id },
      { t: 'error', id, code: 'INTERNAL', message: 'fuzz' },
    ];
  }

  const statePaths = ['state', 'latest'];

  /** Mutate one valid frame. @returns the bytes to send, or undefined to skip (a mutation that would close the channel) */
  function mutate(r: Rng, base: Message, id: number): Uint8Array | undefined {
    const tree = packr.unpack(encodeFrame({ ...base, id } as Message)) as Record<string, any>;
    const mode = r.next();
    let bytes: Uint8Array;
    if (mode < 0.3) {
      // Structural: one or a few edits of the tree.
      for (let n = 1 + r.int(3); n > 0; n--) {
        const ps = paths(tree).filter((p) => !(p.length === 1 && p[0] === 't') || r.next() < 0.2);
        if (ps.length === 0) break;
        const p = r.pick(ps);
        const parent = parentOf(tree, p);
        const key = p[p.length - 1]!;
        const op = r.int(7);
        if (op <= 2) parent[key] = hostileValue(r);
        else if (op === 3) {
          if (Array.isArray(parent)) parent.splice(key as number, 1);
          else delete parent[key];
        } else if (op === 4) {
          if (Array.isArray(parent)) parent.splice(key as number, 0, hostileValue(r));
          else
            parent[r.pick(['lock', 'unlock', 'route', 'locks', 'latest', 'zzz', 'paymentId', 'sig'])] = hostileValue(r);
        } else if (op === 5) {
          // Other channels' ids wherever a 32-byte value is.
          const v = getAt(tree, p);
          if (v instanceof Uint8Array && v.length === 32)
            parent[key] = Buffer.from(r.pick([honest.channelId, thirdId, `0x${'00'.repeat(32)}`]).slice(2), 'hex');
          else parent[key] = structuredClone(getAt(tree, r.pick(ps))); // type confusion: another field's value
        } else {
          // Another device's state (the honest one's latest, fully signed by it and the hub).
          const hl = rec(honest.channelId).latest;
          const st = packr.unpack(encodeFrame({ t: 'sync', id: 0, channelId: honest.channelId, latest: hl }));
          if ('state' in tree) tree['state'] = st.latest[0];
          else if ('latest' in tree) tree['latest'] = st.latest;
          else parent[key] = st.latest;
        }
      }
      try {
        bytes = packr.pack(tree);
      } catch {
        return undefined;
      }
    } else if (mode < 0.6 && (base.t === 'update' || base.t === 'close' || base.t === 'ack')) {
      // Semantic: a hostile value in one state field, re-signed with the device's key (passes the signature check).
      const s = base.t === 'ack' ? (proposal ?? rec(vid).latest.state) : base.state;
      const fields = [
        'version',
        'paidByDevice',
        'paidByHub',
        'round',
        'locksRoot',
        'lockedByDevice',
        'lockedByHub',
        'isFinal',
        'channelId',
      ] as const;
      let st: Record<string, unknown> = { ...s };
      for (let n = 1 + r.int(2); n > 0; n--) {
        const f = r.pick(fields);
        const u256 = [
          0n,
          1n,
          s.paidByDevice - 1n,
          s.paidByDevice + 10_000_000n,
          (1n << 64n) - 1n,
          1n << 255n,
          (1n << 256n) - 1n,
        ];
        if (f === 'version')
          st[f] = r.pick([0n, s.version, s.version - 1n, s.version + 2n, 1n << 63n, (1n << 64n) - 1n]);
        else if (f === 'round') st[f] = r.pick([0n, 1n, round, round + 1n, (1n << 64n) - 1n]);
        else if (f === 'locksRoot') {
          st[f] = `0x${r.bytes(32).toString('hex')}`;
          st['lockedByDevice'] = r.pick([1n, 5n, (1n << 256n) - 1n]);
        } else if (f === 'isFinal') st[f] = !s.isFinal;
        else if (f === 'channelId') st[f] = r.pick([honest.channelId, thirdId, `0x${r.bytes(32).toString('hex')}`]);
        else if (f === 'lockedByDevice' || f === 'lockedByHub') {
          st[f] = r.pick(u256);
          st['locksRoot'] = `0x${r.bytes(32).toString('hex')}`;
        } else st[f] = r.pick(u256);
      }
      // A version pushed to the top of uint64 with the rest valid would be a valid transition that leaves the channel
      // no version to move on to: re-signed only when a decreased counter makes it refused anyway.
      // (spec §2 rule 2: such a channel takes no more states, harmless to the hub; the engine's own tests cover it.)
      if ((st['version'] as bigint) > 1n << 40n) st['paidByDevice'] = rec(vid).latest.state.paidByDevice - 1n;
      const state = st as unknown as State;
      const sig = sign(state);
      let msg: Message;
      if (base.t === 'ack') msg = { ...base, id, version: state.version, sig };
      else msg = { ...base, id, state, sig } as Message;
      try {
        bytes = encodeFrame(msg);
      } catch {
        return undefined; // the codec refuses to encode it (the locks rule): the structural mode covers those
      }
    } else {
      bytes = Buffer.from(encodeFrame({ ...base, id } as Message));
      const b = Buffer.from(bytes);
      const op = r.int(6);
      if (op === 0) {
        for (let n = 1 + r.int(3); n > 0; n--) b[r.int(b.length)]! ^= 1 << r.int(8);
        bytes = b;
      } else if (op === 1) bytes = b.subarray(0, r.int(b.length));
      else if (op === 2) {
        const at = r.int(b.length);
        bytes = Buffer.concat([b.subarray(0, at), r.bytes(1 + r.int(8)), b.subarray(at)]);
      } else if (op === 3) {
        const at = r.int(b.length);
        bytes = Buffer.concat([b.subarray(0, at), b.subarray(at + 1 + r.int(8))]);
      } else if (op === 4) {
        b[r.int(b.length)] = r.pick([
          0xc1, 0xc4, 0xc5, 0xc6, 0xca, 0xcb, 0xd4, 0xd8, 0xdc, 0xdd, 0xde, 0xdf, 0xc0, 0xff, 0x00,
        ]);
        bytes = b;
      } else {
        const at = r.int(b.length);
        bytes = Buffer.concat([b.subarray(0, at), Buffer.from([0xdd, 0xff, 0xff, 0xff, 0xff]), b.subarray(at)]);
      }
    }
    // Skip the exact valid ack of the open proposal (it would land the credit: phase 2 then starts another).
    // Skip what would be a valid cooperative close of the victim's channel (the fuzzing would stop on a closed channel).
    try {
      const m = decodeFrame(bytes, { maxFrameBytes: 1 << 20 });
      if (m.t === 'close' && m.state.channelId === vid && m.state.isFinal) {
        const s = rec(vid).latest.state;
        if (m.state.version > s.version && m.state.paidByDevice === s.paidByDevice && m.state.paidByHub === s.paidByHub)
          return undefined;
      }
    } catch {
      /* not decodable: sent as is */
    }
    return bytes;
  }

  /** Replies that answer a frame as the spec allows. */
  const histogram = new Map<string, number>();
  function checkReply(m: Message, problems: string[]) {
    const k = m.t === 'error' || m.t === 'reject' ? `${m.t}:${m.code}` : m.t;
    histogram.set(k, (histogram.get(k) ?? 0) + 1);
    if (m.t === 'error' || m.t === 'reject') {
      const code = m.code as string;
      if (!CODES.has(code) || code === 'INTERNAL' || code === 'UNKNOWN_CODE')
        problems.push(`${m.t} ${code} (${m.message}) for id ${m.id}`);
    } else if (
      ![
        'ack',
        'sync',
        'pong',
        'receipt',
        'accepted',
        'round',
        'update',
        'ok',
        'challenge',
        'stream',
        'clearing',
      ].includes(m.t)
    )
      problems.push(`unexpected ${m.t}`);
  }

  async function barrier(d: RawDevice, timeoutMs = 10_000) {
    const id = nextId++;
    d.send({ t: 'sync', id, channelId: vid, latest: null });
    return (await d.next((m) => m.t === 'sync' && m.id === id, timeoutMs)) as Extract<Message, { t: 'sync' }>;
  }

  async function honestPays() {
    const t0 = Date.now();
    await Promise.race([
      honest.pay(1n),
      new Promise((_, j) => setTimeout(() => j(new Error('honest payment not acked in time')), HONEST_BOUND_MS)),
    ]);
    return Date.now() - t0;
  }

  async function victimPays() {
    const s = rec(vid).latest.state;
    const v = (rec(vid).hubSignedVersion > s.version ? rec(vid).hubSignedVersion : s.version) + 1n;
    const next: State = { ...s, version: v, paidByDevice: s.paidByDevice + 1n };
    const id = nextId++;
    raw.send({ t: 'update', id, state: next, sig: sign(next) });
    const m = await raw.next(
      (x) =>
        (x.t === 'ack' && x.channelId === vid && x.version >= next.version) ||
        ((x.t === 'reject' || x.t === 'error') && x.id === id),
      5000,
    );
    expect(m.t, `victim's valid payment: ${canon(m)}`).toBe('ack');
    expect(rec(vid).latest.state).toEqual(next);
  }

  /**
   * Send `frames` (bytes) on the victim's connection, then a barrier; check replies and the states. @returns problems
   */
  async function runBatch(frames: { bytes: Uint8Array; label: string }[]): Promise<string[]> {
    const problems: string[] = [];
    const before = snap(vid);
    const thirdBefore = snap(thirdId);
    const sentStates = new Map<string, string>();
    for (const f of frames) {
      try {
        const m = decodeFrame(f.bytes, { maxFrameBytes: 1 << 20 });
        if (m.t === 'update' && m.state.channelId === vid) sentStates.set(canon(m.state), f.label);
      } catch {
        /* undecodable */
      }
      raw.sendRaw(f.bytes);
    }
    try {
      await barrier(raw);
    } catch (e) {
      if (!(e instanceof SocketClosed)) throw e;
      closes.push(e.code);
      if (![1007, 1009].includes(e.code)) problems.push(`victim closed with ${e.code}`);
      await new Promise((res) => setTimeout(res, 20));
    }
    // Let the asynchronous answers (open's chain read, order, outcome) come.
    await new Promise((res) => setTimeout(res, 30));
    for (const m of raw.inbox.splice(0)) {
      checkReply(m, problems);
      if (m.t === 'update' && m.state.channelId === vid) {
        proposal = m.state;
        proposalId = m.id;
        proposals.add(canon(m.state));
      }
    }
    const after = snap(vid);
    if (after !== before) {
      const latest = canon(rec(vid).latest.state);
      if (!sentStates.has(latest) && !proposals.has(latest))
        problems.push(`victim state changed without an acked update: ${before} -> ${after}`);
      else if (!crediting && rec(vid).hubSignedVersion !== rec(vid).latest.state.version)
        problems.push(`hub signed above the latest: ${after}`);
    }
    if (snap(thirdId) !== thirdBefore)
      problems.push(`third device's channel changed: ${thirdBefore} -> ${snap(thirdId)}`);
    if (raw.closeCode !== undefined) {
      if (![1007, 1009].includes(raw.closeCode)) problems.push(`victim closed with ${raw.closeCode}`);
      await connectVictim();
    }
    return problems;
  }

  async function fuzz(r: Rng, iters: number, beforeBatch: () => Promise<void> = async () => {}) {
    const all: string[] = [];
    let sent = 0;
    let skipped = 0;
    let worstHonest = 0;
    const t0 = Date.now();
    while (sent < iters) {
      await beforeBatch();
      const frames: { bytes: Uint8Array; label: string }[] = [];
      const bases = baseFrames(r);
      while (frames.length < BATCH && sent + frames.length < iters) {
        const base = r.pick(bases);
        // The second reject answers the hub's open proposal (its id), when there is one (phase 2).
        const bytes = mutate(r, base, base.id === -1 && proposal ? proposalId : nextId++);
        if (bytes === undefined) {
          skipped++;
          continue;
        }
        frames.push({ bytes, label: `${base.t}#${sent + frames.length}` });
      }
      sent += frames.length;
      const problems = await runBatch(frames);
      if (problems.length > 0) {
        // Reduce: replay the batch's frames one by one to name the culprit(s).
        all.push(...problems.map((p) => `batch ending ${sent}: ${p}`));
        for (const f of frames) {
          const one = await runBatch([f]);
          if (one.length > 0)
            all.push(`  culprit ${f.label} ${Buffer.from(f.bytes).toString('hex').slice(0, 400)}: ${one.join('; ')}`);
        }
      }
      worstHonest = Math.max(worstHonest, await honestPays());
      await victimPays();
      if (all.length > 40) break;
    }
    const errorLogs = logs.filter((l) => /"level":(50|60)/.test(l));
    console.log(
      `fuzz: seed ${SEED}, ${sent} frames sent (${skipped} skipped), ${Date.now() - t0} ms, worst honest ack ${worstHonest} ms, closes ${JSON.stringify(closes)}, ${logs.length} warn+ logs`,
    );
    if (process.env['FUZZ_VERBOSE']) console.log([...histogram].sort().join(' '), '\n', logs.slice(0, 5).join('\n'));
    if (errorLogs.length > 0) console.log(errorLogs.slice(0, 5).join('\n'));
    expect(all).toEqual([]);
    expect(undecodable.map((b) => b.toString('hex'))).toEqual([]);
    expect(errorLogs).toEqual([]);
  }

  it(`${ITERS} mutated frames (seed ${SEED}): typed refusals, no state change from a refused frame, others served`, async () => {
    await fuzz(prng(SEED), ITERS);
  });

  it(`${ITERS / 2} mutated frames with a hub credit open toward the hostile device (seed ${SEED + 1}): acks, rejects and crossing updates`, async () => {
    crediting = true;
    let open: Promise<unknown> | undefined;
    const outcomes: string[] = [];
    await fuzz(prng(SEED + 1), ITERS / 2, async () => {
      if (open) return;
      open = w.hub!.credit(vid, 1n).then(
        () => outcomes.push('landed'),
        (e: { code?: string }) => outcomes.push(String(e.code)),
      );
      void open.then(() => (open = undefined));
      await raw
        .next((m) => m.t === 'update' && m.state.channelId === vid, 5000)
        .then((m) => {
          if (m.t === 'update') {
            proposal = m.state;
            proposalId = m.id;
            proposals.add(canon(m.state));
          }
        });
    });
    // The open credit, if any, lands on the valid ack of the hub's newest proposal.
    if (open) {
      await barrier(raw);
      const mine = [...raw.inbox].reverse().find((m) => m.t === 'update' && m.state.channelId === vid);
      const p = mine?.t === 'update' ? mine.state : proposal!;
      raw.send({ t: 'ack', id: nextId++, channelId: vid, version: p.version, sig: sign(p) });
      await Promise.race([open, new Promise((_, j) => setTimeout(() => j(new Error('credit never settled')), 5000))]);
    }
    for (const o of outcomes) expect(o === 'landed' || CODES.has(o), o).toBe(true);
    console.log(
      `credits: ${JSON.stringify(outcomes.reduce((a: Record<string, number>, o) => ((a[o] = (a[o] ?? 0) + 1), a), {}))}`,
    );
    crediting = false;
  });
});
