import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { Packr } from 'msgpackr';
import {
  decodeFrame,
  encodeFrame,
  DEFAULT_MAX_FRAME_BYTES,
  uintToBytes,
  peekRequestId,
  type Message,
} from './codec.js';
import { isTrickleError } from './errors.js';
import { toHex, fromHex } from './hex.js';
import { TUPLE_RULES } from './wire-schema.js';

const vectors = JSON.parse(readFileSync(new URL('../../../protocol-spec/vectors/frames.json', import.meta.url), 'utf8'))
  .vectors as { message: any; frame: string }[];
const BIG = new Set([
  'chainId',
  'version',
  'paidByDevice',
  'paidByHub',
  'round',
  'lockedByDevice',
  'lockedByHub',
  'challengeDuration',
  'amount',
  'quantity',
  'price',
  'arrival',
  'feeBps',
  'expiry',
  'ratePerSecond',
  'total',
]);
const revive = (v: any, key = ''): any => {
  if (Array.isArray(v)) return v.map((x) => revive(x));
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, revive(x, k)]));
  if (typeof v === 'string' && BIG.has(key)) return BigInt(v);
  if (typeof v === 'string' && (key === 'sig' || key === 'record' || key === 'locks')) return fromHex(v);
  return v;
};
const raw = new Packr({ useRecords: false, mapsAsObjects: true });
const expectCode = (fn: () => unknown, code: string) => expect(fn).toThrow(expect.objectContaining({ code }));
const expectRefused = (fn: () => unknown, code: string, field: string) =>
  expect(fn).toThrow(expect.objectContaining({ code, details: expect.objectContaining({ field }) }));

describe('codec vectors', () => {
  it('covers every message type', () => {
    const types = new Set(vectors.map((v) => v.message.t));
    for (const t of [
      'challenge',
      'auth',
      'ok',
      'open',
      'sync',
      'update',
      'ack',
      'reject',
      'close',
      'order',
      'accepted',
      'clearing',
      'round',
      'receipt',
      'stream',
      'error',
    ])
      expect(types).toContain(t);
  });
  for (const v of vectors) {
    it(`${v.message.t}: encodes to the vector and decodes back`, () => {
      const msg = revive(v.message) as Message;
      // A receipt's hub signature is bytes (a signed state's signatures, under the same name, stay hex).
      if (msg.t === 'receipt' && msg.hubSig !== undefined)
        (msg as { hubSig: unknown }).hubSig = fromHex(msg.hubSig as unknown as string);
      expect(toHex(encodeFrame(msg))).toBe(v.frame);
      expect(decodeFrame(fromHex(v.frame))).toEqual(msg);
    });
  }
});

describe('decode refuses what is not a message, always with MALFORMED', () => {
  const update = fromHex(vectors.find((v) => v.message.t === 'update')!.frame);
  const obj = () => raw.unpack(update) as Record<string, unknown>;
  it('unknown field', () => expectCode(() => decodeFrame(raw.pack({ ...obj(), extra: 1 })), 'MALFORMED'));
  it('missing field', () => {
    const o = obj();
    delete o['sig'];
    expectCode(() => decodeFrame(raw.pack(o)), 'MALFORMED');
  });
  it('unknown type', () => expectCode(() => decodeFrame(raw.pack({ ...obj(), t: 'steal' })), 'MALFORMED'));
  it('trailing bytes', () => expectCode(() => decodeFrame(new Uint8Array([...update, 0xc0])), 'MALFORMED'));
  it('truncated', () => expectCode(() => decodeFrame(update.subarray(0, update.length - 3)), 'MALFORMED'));
  it('extension types (a timestamp) are not values of the protocol', () =>
    expectCode(() => decodeFrame(raw.pack({ ...obj(), sig: new Date() })), 'MALFORMED'));
  it('non-minimal integers', () => {
    const o = obj();
    (o['state'] as unknown[])[1] = new Uint8Array([0, 2]);
    expectCode(() => decodeFrame(raw.pack(o)), 'MALFORMED');
  });
  it('a version over 64 bits', () => {
    const o = obj();
    (o['state'] as unknown[])[1] = new Uint8Array(9).fill(1);
    expectCode(() => decodeFrame(raw.pack(o)), 'MALFORMED');
  });
  it('an amount over 256 bits', () => {
    const o = obj();
    (o['state'] as unknown[])[2] = new Uint8Array(33).fill(1);
    expectCode(() => decodeFrame(raw.pack(o)), 'MALFORMED');
  });
  it('a short signature, a string for bytes, a negative request id', () => {
    expectCode(() => decodeFrame(raw.pack({ ...obj(), sig: new Uint8Array(64) })), 'MALFORMED');
    expectCode(() => decodeFrame(raw.pack({ ...obj(), sig: 'ff'.repeat(65) })), 'MALFORMED');
    expectCode(() => decodeFrame(raw.pack({ ...obj(), id: -1 })), 'MALFORMED');
  });
  it('__proto__ keys do not pollute', () => {
    const evil = new Uint8Array([
      0x82,
      0xa1,
      0x74,
      0xa2,
      0x6f,
      0x6b,
      0xa9,
      ...Buffer.from('__proto__'),
      0x81,
      0xa2,
      0x69,
      0x64,
      0x01,
    ]);
    expectCode(() => decodeFrame(evil), 'MALFORMED');
  });
  it('FRAME_TOO_LARGE above the limit, with close status 1009', () => {
    const big = new Uint8Array(DEFAULT_MAX_FRAME_BYTES + 1);
    try {
      decodeFrame(big);
      expect.unreachable();
    } catch (e) {
      expect(isTrickleError(e, 'FRAME_TOO_LARGE')).toBe(true);
      expect((e as { closeStatus: number }).closeStatus).toBe(1009);
    }
    expectCode(() => decodeFrame(update, { maxFrameBytes: 64 }), 'FRAME_TOO_LARGE');
  });
  it('peekRequestId reads the id of a bad frame to answer it', () => {
    expect(peekRequestId(raw.pack({ t: 'x', id: 42 }))).toBe(42);
    expect(peekRequestId(new Uint8Array([0xc1]))).toBe(0);
  });
  it('a text longer than a decoder takes is cut to 512 characters when encoded, so the frame still decodes', () => {
    // A refusal's message is often an error's from a caller's guard: the peer must still get the reject and its code.
    for (const message of ['x'.repeat(600), 'é'.repeat(513), `${'y'.repeat(511)}😀tail`]) {
      const m = decodeFrame(encodeFrame({ t: 'error', id: 3, code: 'BAD_ORDER', message }));
      expect(m).toMatchObject({ t: 'error', id: 3, code: 'BAD_ORDER' });
      const text = (m as { message: string }).message;
      expect(message.startsWith(text)).toBe(true);
      expect(text.length).toBeGreaterThanOrEqual(511);
      expect(text.length).toBeLessThanOrEqual(512);
    }
  });
  it('a zero in a field every decoder refuses as zero is not encoded (INVALID_ARGUMENT names it): nothing MALFORMED is sent', () => {
    const route = { to: `0x${'11'.repeat(20)}`, amount: 5n, paymentId: `0x${'22'.repeat(32)}` };
    const tick = { streamId: `0x${'33'.repeat(32)}`, ratePerSecond: 0n, total: 5n, final: false };
    const m = decodeFrame(update) as Extract<Message, { t: 'update' }>;
    for (const [r, field] of [
      [{ ...route, amount: 0n }, 'route.amount'],
      [{ ...route, stream: tick }, 'route.stream.ratePerSecond'],
    ] as const)
      expect(() => encodeFrame({ ...m, route: r } as Message)).toThrow(
        expect.objectContaining({ code: 'INVALID_ARGUMENT', details: { field } }),
      );
    expect(() =>
      encodeFrame({ ...m, route: { ...route, stream: { ...tick, ratePerSecond: 1n } } } as Message),
    ).not.toThrow();
  });
  it('every rule across a tuple (TUPLE_RULES) is refused by encode (INVALID_ARGUMENT) as by decode (MALFORMED), naming the same element', () => {
    const sig = new Uint8Array(65);
    const state = {
      channelId: `0x${'ab'.repeat(32)}`,
      version: 1n,
      paidByDevice: 5n,
      paidByHub: 0n,
      round: 0n,
      locksRoot: `0x${'cd'.repeat(32)}`,
      lockedByDevice: 3n,
      lockedByHub: 0n,
      isFinal: false,
    };
    const route = { to: `0x${'11'.repeat(20)}`, amount: 5n, paymentId: `0x${'22'.repeat(32)}` };
    const tick = { streamId: `0x${'33'.repeat(32)}`, ratePerSecond: 1n, total: 5n, final: false };
    const plain = { ...state, locksRoot: `0x${'00'.repeat(32)}`, lockedByDevice: 0n };
    // Each case: a message that keeps the rule, the same message breaking it, and the edit that breaks the good
    // message's wire form the same way (the encoder no longer makes such a frame, so it is packed by hand).
    type Wire = Record<string, any>;
    const cases: { rule: string; field: string; good: any; bad: any; edit: (w: Wire) => void }[] = [
      {
        rule: 'state',
        field: 'state.locksRoot',
        good: { t: 'close', id: 1, state, sig },
        bad: { t: 'close', id: 1, state: { ...state, locksRoot: plain.locksRoot } },
        edit: (w) => (w['state'][5] = new Uint8Array(32)), // the zero root, with 3 locked
      },
      {
        rule: 'state',
        field: 'state.locksRoot',
        good: { t: 'close', id: 1, state, sig },
        bad: { t: 'close', id: 1, state: { ...state, lockedByDevice: 0n } },
        edit: (w) => (w['state'][6] = new Uint8Array(0)), // a root, with nothing locked
      },
      {
        rule: 'route',
        field: 'route.stream.total',
        good: { t: 'update', id: 2, state: plain, sig, route: { ...route, stream: tick } },
        bad: { t: 'update', id: 2, state: plain, sig, route: { ...route, stream: { ...tick, total: 4n } } },
        edit: (w) => (w['route'][4][2] = new Uint8Array([4])), // a stream total of 4 under an amount of 5
      },
    ];
    expect(new Set(cases.map((c) => c.rule))).toEqual(new Set(Object.keys(TUPLE_RULES)));
    for (const { field, good, bad, edit } of cases) {
      bad.sig = sig;
      expect(decodeFrame(encodeFrame(good))).toEqual(good);
      const wire = raw.unpack(encodeFrame(good)) as Wire;
      edit(wire);
      expectRefused(() => decodeFrame(raw.pack(wire)), 'MALFORMED', field);
      expectRefused(() => encodeFrame(bad), 'INVALID_ARGUMENT', field);
    }
  });
  it('uintToBytes is minimal', () => {
    expect(uintToBytes(0n).length).toBe(0);
    expect(toHex(uintToBytes(256n))).toBe('0x0100');
  });
});

describe('an error code this version does not know (one a newer peer added)', () => {
  const error = (code: unknown) => raw.pack({ t: 'error', id: 9, code, message: 'no' });
  const reject = (code: unknown) => {
    const v = vectors.find((x) => x.message.t === 'reject')!;
    return raw.pack({ ...(raw.unpack(fromHex(v.frame)) as object), id: 11, code });
  };

  it('decodes, with its request id, as UNKNOWN_CODE and the code as sent', () => {
    expect(decodeFrame(error('QUOTA_EXHAUSTED'))).toEqual({
      t: 'error',
      id: 9,
      code: 'UNKNOWN_CODE',
      wireCode: 'QUOTA_EXHAUSTED',
      message: 'no',
    });
    expect(decodeFrame(reject('Z'))).toMatchObject({ t: 'reject', id: 11, code: 'UNKNOWN_CODE', wireCode: 'Z' });
    const longest = `A${'_9'.repeat(15)}B`; // 32 characters
    expect(decodeFrame(error(longest))).toMatchObject({ code: 'UNKNOWN_CODE', wireCode: longest });
  });

  it('a known code decodes as before, with no wireCode', () => {
    const m = decodeFrame(error('NO_ROUTE'));
    expect(m).toEqual({ t: 'error', id: 9, code: 'NO_ROUTE', message: 'no' });
    expect('wireCode' in m).toBe(false);
    expect(decodeFrame(reject('STALE_VERSION'))).not.toHaveProperty('wireCode');
  });

  it('anything that is not a well-formed code is still MALFORMED', () => {
    for (const bad of [
      '',
      'quota',
      'Quota_Exhausted',
      '_QUOTA',
      '9QUOTA',
      'QUOTA-EXHAUSTED',
      'QUOTA EXHAUSTED',
      'ÉCHEC',
      `A${'B'.repeat(32)}`,
      'NO_ROUTE\u0000',
      '__proto__',
      'constructor',
    ]) {
      expectCode(() => decodeFrame(error(bad)), 'MALFORMED');
      expectCode(() => decodeFrame(reject(bad)), 'MALFORMED');
    }
    for (const bad of [7, null, new Uint8Array(3), ['NO_ROUTE']])
      expectCode(() => decodeFrame(error(bad)), 'MALFORMED');
    // The rest of the frame stays strict: an unknown code does not let an unknown field or a missing one through.
    expectCode(() => decodeFrame(raw.pack({ t: 'error', id: 9, code: 'QUOTA', message: 'no', extra: 1 })), 'MALFORMED');
    expectCode(() => decodeFrame(raw.pack({ t: 'error', id: 9, code: 'QUOTA' })), 'MALFORMED');
    // Nor is a decoded-only field taken from the wire.
    expectCode(
      () => decodeFrame(raw.pack({ t: 'error', id: 9, code: 'QUOTA', message: 'no', wireCode: 'X' })),
      'MALFORMED',
    );
  });

  it('the encoder writes the code it is given (a peer relays none it decoded as UNKNOWN_CODE: wireCode is not sent)', () => {
    const m = decodeFrame(error('QUOTA_EXHAUSTED'));
    expect(decodeFrame(encodeFrame(m))).toEqual({ t: 'error', id: 9, code: 'UNKNOWN_CODE', message: 'no' });
  });
});

describe('fuzz: decode never throws anything but a TrickleError', () => {
  const check = (bytes: Uint8Array) => {
    try {
      decodeFrame(bytes);
    } catch (e) {
      if (!isTrickleError(e) || !['MALFORMED', 'FRAME_TOO_LARGE'].includes(e.code)) throw e;
    }
  };
  it('random byte strings', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (b) => check(b)),
      { numRuns: 20_000 },
    );
  });
  it('mutations of every vector frame', () => {
    const frames = vectors.map((v) => fromHex(v.frame));
    fc.assert(
      fc.property(
        fc.constantFrom(...frames),
        fc.array(fc.tuple(fc.nat(), fc.nat(255)), { minLength: 1, maxLength: 4 }),
        fc.nat(),
        (frame, edits, cut) => {
          const b = new Uint8Array(frame);
          for (const [i, v] of edits) b[i % b.length] = v;
          check(b);
          check(b.subarray(0, cut % (b.length + 1)));
        },
      ),
      { numRuns: 30_000 },
    );
  });
  it('random msgpack values shaped like messages', () => {
    fc.assert(
      fc.property(
        fc.dictionary(
          fc.constantFrom('t', 'id', 'state', 'sig', 'latest', 'params', 'route', 'x'),
          fc.anything({ withTypedArray: true, maxDepth: 3 }) as fc.Arbitrary<unknown>,
        ),
        (o) => {
          let bytes: Uint8Array;
          try {
            bytes = raw.pack(o);
          } catch {
            return;
          }
          check(bytes);
        },
      ),
      { numRuns: 5_000 },
    );
  });
});
