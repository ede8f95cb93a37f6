import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { Packr } from 'msgpackr';
import { decodeFrame, encodeFrame, peekRequestId, type Message } from './codec.js';
import { ERROR_CODES } from './errors.js';
import { toAddress, toHex } from './hex.js';
import { Writer } from './msgpack.js';
import { ZERO_ROOT } from './types.js';
import {
  MESSAGE_SCHEMA,
  SCALAR_KINDS,
  TUPLE_KINDS,
  WIRE_LIMITS,
  wireSpecMarkdown,
  type FieldSpec,
  type Kind,
  type TupleElement,
} from './wire-schema.js';

const expectMalformed = (bytes: Uint8Array) =>
  expect(() => decodeFrame(bytes, { maxFrameBytes: 1 << 20 })).toThrow(expect.objectContaining({ code: 'MALFORMED' }));

// ---------- arbitrary valid messages, derived from the schema ----------

const bytes = (n: number) => fc.uint8Array({ minLength: n, maxLength: n });
const uint = (bits: bigint, positive = false) => fc.bigInt({ min: positive ? 1n : 0n, max: (1n << bits) - 1n });

function scalar(kind: keyof typeof SCALAR_KINDS, positive = false): fc.Arbitrary<unknown> {
  switch (kind) {
    case 'u32':
      return fc.integer({ min: 0, max: 0xffffffff });
    case 'u64':
      return uint(64n, positive);
    case 'u256':
      return uint(256n, positive);
    case 'address':
      return bytes(20).map((b) => toAddress(b));
    case 'bytes32':
    case 'channelId':
      return bytes(32).map(toHex);
    case 'sig':
      return bytes(65);
    case 'sigHex':
      return bytes(65).map(toHex);
    case 'bool':
      return fc.boolean();
    case 'code':
      return fc.constantFrom(...Object.keys(ERROR_CODES));
    case 'text':
      return fc.string({ unit: 'grapheme', maxLength: 200 }).filter((s) => s.length <= WIRE_LIMITS.maxTextChars);
    case 'market':
      return fc.stringMatching(/^[a-z0-9._-]{1,64}$/);
    case 'side':
      return fc.constantFrom('bid', 'ask');
    case 'blob':
      return fc.uint8Array({ maxLength: 300 });
  }
}

function value(kind: Kind, positive = false): fc.Arbitrary<unknown> {
  if (kind in SCALAR_KINDS) return scalar(kind as keyof typeof SCALAR_KINDS, positive);
  const elements = (TUPLE_KINDS as Record<string, readonly TupleElement[]>)[kind]!;
  const record: Record<string, fc.Arbitrary<unknown>> = {};
  for (const e of elements)
    record[e.name] = e.nilable ? fc.option(value(e.kind, e.positive), { nil: undefined }) : value(e.kind, e.positive);
  let arb = fc
    .record(record)
    .map((o) =>
      Object.fromEntries(
        Object.entries(o).filter(([k, v]) => v !== undefined || !elements.find((e) => e.name === k)!.trailing),
      ),
    );
  // The cross-element rules (TUPLE_RULES).
  if (kind === 'state') {
    arb = arb.map((s) =>
      s['lockedByDevice'] === 0n && s['lockedByHub'] === 0n
        ? { ...s, locksRoot: ZERO_ROOT }
        : s['locksRoot'] === ZERO_ROOT
          ? { ...s, locksRoot: `0x${'01'.repeat(32)}` }
          : s,
    );
  }
  if (kind === 'route') {
    arb = arb.map((r) => {
      const stream = r['stream'] as { total: bigint } | undefined;
      return stream && stream.total < (r['amount'] as bigint) ? { ...r, stream: { ...stream, total: r['amount'] } } : r;
    });
  }
  return arb;
}

function field(f: FieldSpec): fc.Arbitrary<unknown> {
  const v = value(f.kind);
  return f.nullable ? fc.option(v, { nil: null }) : f.optional ? fc.option(v, { nil: undefined }) : v;
}

const anyMessage: fc.Arbitrary<Message> = fc.oneof(
  ...Object.entries(MESSAGE_SCHEMA).map(([t, spec]) =>
    fc
      .record(
        Object.fromEntries(
          Object.entries(spec.fields as Record<string, FieldSpec>).map(([name, f]) => [name, field(f)]),
        ),
      )
      .map(
        (fields) =>
          ({
            t,
            ...Object.fromEntries(Object.entries(fields).filter(([, v]) => v !== undefined)),
          }) as unknown as Message,
      ),
  ),
);

/** A frame written field by field, for hostile shapes no encoder would produce. */
function frame(write: (w: Writer) => void): Uint8Array {
  const w = new Writer();
  write(w);
  return w.b.slice(0, w.p);
}

const okFrame = (extra: (w: Writer) => void, n = 3) =>
  frame((w) => {
    w.map(n);
    w.str('t');
    w.str('ok');
    extra(w);
  });

describe('wire: round trips of every message the schema allows', () => {
  it('decode(encode(m)) equals m, for random messages of every type', () => {
    fc.assert(
      fc.property(anyMessage, (m) => {
        expect(decodeFrame(encodeFrame(m))).toEqual(m);
      }),
      { numRuns: 3_000 },
    );
  });

  it('a general MessagePack library reads our frames as the same map, and we read its encoding of them', () => {
    const packr = new Packr({
      useRecords: false,
      mapsAsObjects: true,
      moreTypes: false,
      bundleStrings: false,
      variableMapSize: true,
    });
    fc.assert(
      fc.property(anyMessage, (m) => {
        const ours = encodeFrame(m);
        const generic = packr.unpack(ours) as Record<string, unknown>;
        expect(generic['t']).toBe(m.t);
        // msgpackr picks its own widths for some headers: whatever it writes for the same map, we decode to `m`.
        expect(decodeFrame(packr.pack(generic))).toEqual(m);
      }),
      { numRuns: 500 },
    );
  });

  it('keys in any order: `t` may come last', () => {
    const f = frame((w) => {
      w.map(2);
      w.str('id');
      w.uint(9);
      w.str('t');
      w.str('ok');
    });
    expect(decodeFrame(f)).toEqual({ t: 'ok', id: 9 });
    expect(peekRequestId(f)).toBe(9);
  });
});

describe('wire: the decoder refuses everything outside the subset, with MALFORMED', () => {
  it('a duplicate key (the later value would win in a lenient decoder)', () => {
    expectMalformed(okFrame((w) => (w.str('id'), w.uint(1), w.str('id'), w.uint(2))));
    expectMalformed(
      frame((w) => {
        w.map(3);
        w.str('id');
        w.uint(1);
        w.str('id');
        w.uint(2);
        w.str('t');
        w.str('ok');
      }),
    );
    expectMalformed(frame((w) => (w.map(3), w.str('t'), w.str('ok'), w.str('t'), w.str('ok'), w.str('id'), w.uint(1))));
  });

  it('extension types of every size, the timestamp and msgpackr bigint extension included', () => {
    const ext = [
      [0xd4, 0x01, 0x00], // fixext 1
      [0xd5, 0x01, 0x00, 0x00], // fixext 2
      [0xd6, 0xff, 0, 0, 0, 1], // fixext 4, type -1: timestamp 32
      [0xd7, 0xff, 0, 0, 0, 0, 0, 0, 0, 1], // fixext 8: timestamp 64
      [0xd8, 0x01, ...new Array(16).fill(0)], // fixext 16
      [0xc7, 0x01, 0x42, 0x01], // ext 8, type 0x42: msgpackr's bigint extension
      [0xc8, 0x00, 0x01, 0x01, 0x00], // ext 16
      [0xc9, 0x00, 0x00, 0x00, 0x01, 0x01, 0x00], // ext 32
    ];
    for (const e of ext) {
      expectMalformed(new Uint8Array([0x82, 0xa1, 0x74, 0xa2, 0x6f, 0x6b, 0xa2, 0x69, 0x64, ...e])); // { t: 'ok', id: <ext> }
      // As a state element where binary is expected, and as the value of a field that comes before `t`.
      expectMalformed(new Uint8Array([0x82, 0xa2, 0x69, 0x64, ...e, 0xa1, 0x74, 0xa2, 0x6f, 0x6b]));
    }
    const viaLibrary = new Packr({
      useRecords: false,
      mapsAsObjects: true,
      useBigIntExtension: true,
    } as ConstructorParameters<typeof Packr>[0]);
    expectMalformed(viaLibrary.pack({ t: 'accepted', id: 1, arrival: 2n ** 70n }));
    expectMalformed(viaLibrary.pack({ t: 'ok', id: new Date(0) }));
  });

  it('a float where an integer is expected, even an integral one', () => {
    expectMalformed(
      new Uint8Array([0x82, 0xa1, 0x74, 0xa2, 0x6f, 0x6b, 0xa2, 0x69, 0x64, 0xcb, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0]),
    ); // id: 1.0 (float64)
    expectMalformed(new Uint8Array([0x82, 0xa1, 0x74, 0xa2, 0x6f, 0x6b, 0xa2, 0x69, 0x64, 0xca, 0x3f, 0x80, 0, 0])); // id: 1.0 (float32)
    const order = encodeFrame({
      t: 'order',
      id: 1,
      order: { id: `0x${'11'.repeat(32)}`, market: 'kwh', side: 'ask', quantity: 1n, price: 1n, round: 1n },
      sig: new Uint8Array(65),
    } as Message);
    const side = order.indexOf(0xa3) + 4; // after the market string 'kwh' comes the side: positive fixint 1
    expect(order[side]).toBe(1);
    const withFloat = new Uint8Array([
      ...order.subarray(0, side),
      0xcb,
      0x3f,
      0xf0,
      0,
      0,
      0,
      0,
      0,
      0,
      ...order.subarray(side + 1),
    ]);
    expectMalformed(withFloat);
  });

  it('negative integers, integers above the field range, integers where binary is expected', () => {
    expectMalformed(okFrame((w) => (w.str('id'), w.b.set([0xff], w.p), (w.p += 1)), 2)); // -1
    expectMalformed(okFrame((w) => (w.str('id'), w.b.set([0xd0, 0x80], w.p), (w.p += 2)), 2)); // int8 -128
    expectMalformed(okFrame((w) => (w.str('id'), w.b.set([0xcf, 0, 0, 0, 1, 0, 0, 0, 0], w.p), (w.p += 9)), 2)); // 2^32
    expect(
      decodeFrame(okFrame((w) => (w.str('id'), w.b.set([0xcf, 0, 0, 0, 0, 0, 0, 0, 7], w.p), (w.p += 9)), 2)),
    ).toEqual({ t: 'ok', id: 7 });
    expectMalformed(
      frame((w) => (w.map(3), w.str('t'), w.str('accepted'), w.str('id'), w.uint(1), w.str('arrival'), w.uint(5))),
    );
  });

  it('strings that are not valid UTF-8, in a value and in a key', () => {
    const errorFrame = (text: number[]) =>
      frame((w) => {
        w.map(4);
        w.str('t');
        w.str('error');
        w.str('id');
        w.uint(1);
        w.str('code');
        w.str('INTERNAL');
        w.str('message');
        w.b.set([0xa0 | text.length, ...text], w.p);
        w.p += 1 + text.length;
      });
    expect(decodeFrame(errorFrame([0xc3, 0xa9]))).toMatchObject({ message: 'é' });
    expectMalformed(errorFrame([0xc3])); // truncated sequence
    expectMalformed(errorFrame([0xc0, 0x80])); // overlong encoding
    expectMalformed(errorFrame([0xed, 0xa0, 0x80])); // a UTF-16 surrogate
    expectMalformed(errorFrame([0xff]));
    expectMalformed(new Uint8Array([0x82, 0xa1, 0x74, 0xa2, 0x6f, 0x6b, 0xa2, 0x69, 0xff, 0x01]));
  });

  it('deep nesting is refused before any recursion, however deep', () => {
    const depth = 200_000;
    const deep = new Uint8Array(depth + 20);
    deep.set([0x82, 0xa1, 0x74, 0xa4, ...Buffer.from('sync'), 0xa6, ...Buffer.from('latest')]);
    deep.fill(0x91, 14); // [[[[…]]]]
    expectMalformed(deep);
    // The same before `t`, where the value is skipped rather than read.
    const early = new Uint8Array(depth + 20);
    early.set([0x82, 0xa6, ...Buffer.from('latest')]);
    early.fill(0x91, 8);
    expectMalformed(early);
    // A state nested one level deeper than the schema nests it.
    const sync = encodeFrame({
      t: 'sync',
      id: 1,
      channelId: `0x${'ab'.repeat(32)}`,
      latest: {
        state: {
          channelId: `0x${'ab'.repeat(32)}`,
          version: 1n,
          paidByDevice: 1n,
          paidByHub: 0n,
          round: 0n,
          locksRoot: ZERO_ROOT,
          lockedByDevice: 0n,
          lockedByHub: 0n,
          isFinal: false,
        },
      },
    } as Message);
    const at = sync.indexOf(0x93); // [state, deviceSig, hubSig]
    expectMalformed(new Uint8Array([...sync.subarray(0, at + 1), 0x91, ...sync.subarray(at + 1)]));
  });

  it('maps and non-string keys, nested maps, unknown and missing fields, the wrong array length', () => {
    expectMalformed(frame((w) => (w.map(2), w.str('t'), w.str('ok'), w.uint(1), w.uint(1))));
    expectMalformed(frame((w) => (w.map(2), w.str('t'), w.str('ok'), w.str('id'), w.map(0))));
    expectMalformed(frame((w) => (w.map(3), w.str('t'), w.str('ok'), w.str('id'), w.uint(1), w.str('x'), w.nil())));
    expectMalformed(frame((w) => (w.map(1), w.str('t'), w.str('ok'))));
    expectMalformed(frame((w) => (w.map(2), w.str('id'), w.uint(1), w.str('__proto__'), w.nil())));
    expectMalformed(frame((w) => (w.array(2), w.str('ok'), w.uint(1))));
    const params = {
      chainId: 1n,
      adjudicator: toAddress(`0x${'11'.repeat(20)}`),
      device: toAddress(`0x${'22'.repeat(20)}`),
      hub: toAddress(`0x${'33'.repeat(20)}`),
      token: toAddress(`0x${'00'.repeat(20)}`),
      challengeDuration: 60n,
      salt: `0x${'44'.repeat(32)}`,
    };
    const open = encodeFrame({ t: 'open', id: 1, params } as Message);
    const at = open.indexOf(0x97);
    expectMalformed(new Uint8Array([...open.subarray(0, at), 0x96, ...open.subarray(at + 1, open.length - 34)]));
  });

  it('optional trailing tuple elements: all or none, and not all nil', () => {
    const route = { to: toAddress(`0x${'55'.repeat(20)}`), amount: 5n, paymentId: `0x${'66'.repeat(32)}` };
    const state = {
      channelId: `0x${'ab'.repeat(32)}`,
      version: 1n,
      paidByDevice: 5n,
      paidByHub: 0n,
      round: 0n,
      locksRoot: ZERO_ROOT,
      lockedByDevice: 0n,
      lockedByHub: 0n,
      isFinal: false,
    };
    const plain = encodeFrame({ t: 'update', id: 1, state, sig: new Uint8Array(65), route } as Message);
    expect(decodeFrame(plain)).toEqual({ t: 'update', id: 1, state, sig: new Uint8Array(65), route });
    const at = plain.lastIndexOf(0x93); // the route array of 3
    const fiveNil = new Uint8Array([...plain.subarray(0, at), 0x95, ...plain.subarray(at + 1), 0xc0, 0xc0]);
    expectMalformed(fiveNil);
    const four = new Uint8Array([...plain.subarray(0, at), 0x94, ...plain.subarray(at + 1), 0xc0]);
    expectMalformed(four);
  });

  it('the state rule: a zero lock root exactly when nothing is locked', () => {
    const root = `0x${'cd'.repeat(32)}`;
    const state = {
      channelId: `0x${'ab'.repeat(32)}`,
      version: 1n,
      paidByDevice: 5n,
      paidByHub: 0n,
      round: 0n,
      locksRoot: root,
      lockedByDevice: 3n,
      lockedByHub: 0n,
      isFinal: false,
    };
    const good = encodeFrame({ t: 'close', id: 1, state, sig: new Uint8Array(65) } as Message);
    // The encoder refuses the zero root with a locked total, so the frame is made by zeroing the good one's root.
    const at = toHex(good).indexOf(root.slice(2)) / 2 - 1;
    const zeroRoot = good.slice();
    zeroRoot.fill(0, at, at + 32);
    expectMalformed(zeroRoot);
    expect(() =>
      encodeFrame({ t: 'close', id: 1, state: { ...state, locksRoot: ZERO_ROOT }, sig: new Uint8Array(65) } as Message),
    ).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT', details: { field: 'state.locksRoot' } }));
  });

  it('random bytes and mutated valid frames: only MALFORMED, never another error, never a hang', () => {
    fc.assert(
      fc.property(anyMessage, fc.array(fc.tuple(fc.nat(), fc.nat(255)), { minLength: 1, maxLength: 3 }), (m, edits) => {
        const b = encodeFrame(m);
        for (const [i, v] of edits) b[i % b.length] = v;
        try {
          decodeFrame(b);
        } catch (e) {
          expect(e).toMatchObject({ code: 'MALFORMED' });
        }
      }),
      { numRuns: 2_000 },
    );
  });
});

describe('wire: the spec is generated from the schema', () => {
  it("protocol-spec/README.md's kind and message tables are the schema's", () => {
    const readme = readFileSync(new URL('../../../protocol-spec/README.md', import.meta.url), 'utf8');
    const { kinds, messages } = wireSpecMarkdown();
    const section = (name: string) =>
      readme.match(new RegExp(`<!-- wire:${name} -->\\n([\\s\\S]*?)<!-- /wire:${name} -->`))?.[1];
    expect(section('kinds'), 'run node scripts/gen-wire-spec.mjs').toBe(kinds);
    expect(section('messages'), 'run node scripts/gen-wire-spec.mjs').toBe(messages);
    for (const t of Object.keys(MESSAGE_SCHEMA)) expect(messages).toContain(`| \`${t}\` |`);
  });

  it('protocol-spec/vectors/frames.json has a frame of every message type, each decoding strictly', () => {
    const vectors = JSON.parse(
      readFileSync(new URL('../../../protocol-spec/vectors/frames.json', import.meta.url), 'utf8'),
    ).vectors as { message: { t: string }; frame: string }[];
    expect(new Set(vectors.map((v) => v.message.t))).toEqual(new Set(Object.keys(MESSAGE_SCHEMA)));
    for (const v of vectors)
      expect(decodeFrame(Uint8Array.from(Buffer.from(v.frame.slice(2), 'hex'))).t).toBe(v.message.t);
  });
});
