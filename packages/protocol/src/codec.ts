import { MalformedError, TrickleError, ERROR_CODES } from './errors.js';
import { utf8, bytesHex, toAddress } from './hex.js';
import { Reader, Writer, malformed } from './msgpack.js';
import { ZERO_ROOT, type Address } from './types.js';
import {
  MESSAGE_SCHEMA,
  TUPLE_KINDS,
  WIRE_LIMITS,
  type FieldSpec,
  type Kind,
  type Message,
  type MessageSpec,
  type MessageType,
  type RouteInstruction,
  type TupleElement,
  type TupleKind,
} from './wire-schema.js';

export type {
  Message,
  MessageOf,
  MessageType,
  RouteInstruction,
  StreamTick,
  WireLock,
  WireOrder,
  WireUnlock,
} from './wire-schema.js';

/**
 * The wire codec. Every frame is one MessagePack map `{ t: <type>, id: <request id>, ...fields }` with the fields
 * of its type and no others, as `MESSAGE_SCHEMA` (./wire-schema.ts) describes them and protocol-spec/README.md
 * lists them. Unsigned integers that can exceed 2^53 travel as big-endian binary with no leading zero byte (0 is
 * the empty binary), so any MessagePack library can read them; 20-, 32- and 65-byte values travel as binary.
 * `decodeFrame` reads the bytes itself, guided by the schema, and accepts only the subset of MessagePack the spec
 * allows: no extension types, no floats, each map key once, strings valid UTF-8, arrays nested no deeper than the
 * schema's, no trailing bytes. It throws nothing but `TrickleError` with code `MALFORMED` or `FRAME_TOO_LARGE`.
 */

/** Default hard limit on one frame's size, in bytes. */
export const DEFAULT_MAX_FRAME_BYTES = 64 * 1024;

/**
 * The wire protocol versions this code speaks, as WebSocket subprotocol names, newest first. A client offers them
 * in `Sec-WebSocket-Protocol`; the hub answers with the newest it speaks too (see {@link selectWireProtocol}).
 * Version 2 is version 1 with the `ping`/`pong` liveness probe: a device sends `ping` only on a connection the hub
 * answered with `trickle.v2` or later, as a version 1 hub refuses it as `MALFORMED` (and closes after a few).
 * Version 3 is version 2 with the `outcome` query (sent only on a `trickle.v3` connection, for the same reason) and
 * the market clearing signed over its refunds too (`Clearing(uint64 round,bytes32 record,bytes32 refunds)`; on a
 * version 1 or 2 connection the hub signs `Clearing(uint64 round,bytes32 record)`, as hubs of those versions did).
 */
export const WIRE_PROTOCOLS: readonly string[] = ['trickle.v3', 'trickle.v2', 'trickle.v1'];

/**
 * The wire version a connection speaks, from the subprotocol the hub answered its upgrade with: `trickle.vN` is N;
 * none (`''` or `undefined`) is version 1.
 * @example
 * ```ts
 * wireVersion('trickle.v3') // 3
 * wireVersion('') // 1
 * ```
 */
export function wireVersion(protocol: string | undefined): number {
  const v = /^trickle\.v([1-9]\d{0,3})$/.exec(protocol ?? '');
  return v === null ? 1 : Number(v[1]);
}

/** The response header in which a hub that refuses a connection's versions (HTTP 426) lists its own. */
export const WIRE_PROTOCOLS_HEADER = 'trickle-protocols';

/**
 * The hub's choice among the versions a client offered (the `Sec-WebSocket-Protocol` request header, comma
 * separated, or the values already split). A client that offers none speaks version 1 (a firmware client written
 * from the spec may send no subprotocol).
 * @returns the subprotocol to answer with (the first of `supported` the client offered); `undefined` for a client
 *   that offered none (version 1, answered without a subprotocol); `null` when it offered only versions not in
 *   `supported` (refuse the upgrade with HTTP 426)
 */
export function selectWireProtocol(
  offered: string | Iterable<string> | undefined,
  supported: readonly string[] = WIRE_PROTOCOLS,
): string | null | undefined {
  const names = new Set<string>();
  for (const v of typeof offered === 'string' ? offered.split(',') : (offered ?? [])) {
    const name = v.trim();
    if (name !== '') names.add(name);
  }
  if (names.size === 0) return undefined;
  return supported.find((p) => names.has(p)) ?? null;
}

const SCHEMA: Readonly<Record<string, MessageSpec>> = MESSAGE_SCHEMA;
const TUPLES: Readonly<Record<string, readonly TupleElement[]>> = TUPLE_KINDS;
/** Every field name of any message: a key outside this set is refused before its value is read. */
const FIELD_NAMES = new Set(Object.values(SCHEMA).flatMap((m) => Object.keys(m.fields)));
const MAX_FIELDS = Math.max(...Object.values(SCHEMA).map((m) => Object.keys(m.fields).length)) + 1;
const MAX_TYPE_CHARS = Math.max(...Object.keys(SCHEMA).map((t) => t.length));
/**
 * An error code as the wire carries it: one of §6, or one a newer peer added, which decodes to `UNKNOWN_CODE` with the
 * code as sent in `wireCode` (the spec's §6, "Codes a decoder does not know"). Anything else is `MALFORMED`.
 */
const WIRE_CODE = /^[A-Z][A-Z0-9_]{0,31}$/;

// ---------- encoding ----------

/** Minimal big-endian bytes of an unsigned integer (0 → empty). */
export function uintToBytes(value: bigint): Uint8Array {
  if (typeof value !== 'bigint' || value < 0n) throw new TrickleError('INVALID_ARGUMENT', 'negative integer');
  if (value === 0n) return new Uint8Array(0);
  let hex = value.toString(16);
  if (hex.length & 1) hex = `0${hex}`;
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/**
 * Rules across a tuple's elements (`TUPLE_RULES` in the schema states them for the spec), checked once the elements
 * themselves are: each returns the element that breaks its rule and why, or nothing. One table for both directions:
 * the decoder refuses such a tuple as `MALFORMED`, the encoder as `INVALID_ARGUMENT`, both naming the same element
 * (`details.field`), so what a peer would refuse is never sent.
 */
const TUPLE_CHECKS: Partial<Record<TupleKind, (v: any) => readonly [element: string, why: string] | undefined>> = {
  state(s) {
    // No locks is the zero root with zero totals; a lock is at least 1 unit, so a non-zero root has a non-zero total.
    return (s.locksRoot === ZERO_ROOT) !== (s.lockedByDevice === 0n && s.lockedByHub === 0n)
      ? ['locksRoot', 'the zero root goes with zero locked totals, and only with them']
      : undefined;
  },
  route(v: RouteInstruction) {
    return v.stream && v.stream.total < v.amount ? ['stream.total', 'below the amount of this payment'] : undefined;
  },
};

const scratch = new Writer(512);

const badValue = (path: string, what: string): never => {
  throw new TrickleError('INVALID_ARGUMENT', `cannot encode ${path}: ${what}`, { details: { field: path } });
};

function writeUint(w: Writer, v: bigint, maxBytes: number, path: string): void {
  if (typeof v !== 'bigint' || v < 0n) return badValue(path, 'expected a non-negative bigint');
  if (v <= 0xffffffffffffn) {
    let n = Number(v);
    let len = 0;
    for (let x = n; x > 0; x = Math.floor(x / 256)) len++;
    w.binHeader(len);
    for (let i = len - 1; i >= 0; i--) {
      w.b[w.p + i] = n & 0xff;
      n = Math.floor(n / 256);
    }
    w.p += len;
    return;
  }
  let hex = v.toString(16);
  if (hex.length > maxBytes * 2) return badValue(path, `more than ${maxBytes} bytes`);
  if (hex.length & 1) hex = `0${hex}`;
  w.binHex(`0x${hex}`);
}

function writeHex(w: Writer, v: unknown, len: number, path: string): void {
  if (typeof v !== 'string' || v.length !== 2 + 2 * len || !v.startsWith('0x'))
    return badValue(path, `expected ${len} bytes of 0x hex`);
  try {
    w.binHex(v);
  } catch {
    badValue(path, 'not hex');
  }
}

/**
 * A `text` value cut to what every decoder takes (`WIRE_LIMITS.maxTextChars`), never inside a surrogate pair. Texts
 * are human-readable (a refusal's message, often an error's from a caller's guard): a long one is shortened, so the
 * frame that carries its code still arrives rather than being refused whole as `MALFORMED` by the peer.
 */
function clipText(v: string): string {
  const max = WIRE_LIMITS.maxTextChars;
  if (v.length <= max) return v;
  const last = v.charCodeAt(max - 1);
  return v.slice(0, last >= 0xd800 && last <= 0xdbff ? max - 1 : max);
}

function writeValue(w: Writer, kind: Kind, v: any, path: string): void {
  switch (kind) {
    case 'u32':
      if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) return badValue(path, 'expected a uint32');
      return w.uint(v);
    case 'u64':
      return writeUint(w, v, 8, path);
    case 'u256':
      return writeUint(w, v, 32, path);
    case 'address':
      return writeHex(w, v, 20, path);
    case 'bytes32':
    case 'channelId':
      return writeHex(w, v, 32, path);
    case 'sigHex':
      return writeHex(w, v, 65, path);
    case 'sig':
      if (!(v instanceof Uint8Array) || v.length !== 65) return badValue(path, 'expected 65 bytes');
      return w.bin(v);
    case 'blob':
      if (!(v instanceof Uint8Array) || v.length > WIRE_LIMITS.maxBlobBytes)
        return badValue(path, `expected at most ${WIRE_LIMITS.maxBlobBytes} bytes`);
      return w.bin(v);
    case 'bool':
      if (typeof v !== 'boolean') return badValue(path, 'expected a boolean');
      return w.bool(v);
    case 'text':
      if (typeof v !== 'string') return badValue(path, 'expected a string');
      return w.str(clipText(v));
    case 'code':
    case 'market':
      if (typeof v !== 'string') return badValue(path, 'expected a string');
      return w.str(v);
    case 'side':
      if (v !== 'bid' && v !== 'ask') return badValue(path, "expected 'bid' or 'ask'");
      return w.uint(v === 'bid' ? 0 : 1);
    default: {
      const elements = TUPLES[kind]!;
      if (v === null || typeof v !== 'object') return badValue(path, `expected ${kind}`);
      let n = elements.length;
      // Optional trailing elements are written only when one of them is present.
      while (n > 0 && elements[n - 1]!.trailing) n--;
      for (let i = n; i < elements.length; i++) if (v[elements[i]!.name] !== undefined) n = elements.length;
      w.array(n);
      for (let i = 0; i < n; i++) {
        const e = elements[i]!;
        const x = v[e.name];
        if (x === undefined && e.nilable) w.nil();
        // What every decoder refuses (a zero amount, rate, quantity or price) is not sent: the sender hears why now.
        else if (e.positive && x === 0n) badValue(`${path}.${e.name}`, 'must be positive');
        else writeValue(w, e.kind, x, `${path}.${e.name}`);
      }
      const broken = TUPLE_CHECKS[kind as TupleKind]?.(v);
      if (broken) badValue(`${path}.${broken[0]}`, broken[1]);
    }
  }
}

/**
 * Encode a message into one frame: its fields in the schema's order, each in its shortest MessagePack form. A `text`
 * (a refusal's message) longer than the 512 characters a decoder takes is cut to them.
 * @param msg - the message
 * @returns MessagePack bytes (a fresh array)
 * @throws TrickleError `INVALID_ARGUMENT` when a field is missing or out of its kind's range, or a tuple breaks a
 *   rule across its elements (`TUPLE_RULES`: what a decoder would refuse as `MALFORMED` is not encoded)
 * @example
 * ```ts
 * ws.send(encodeFrame({ t: 'ack', id: 7, channelId, version: 12n, sig }));
 * ```
 */
export function encodeFrame(msg: Message): Uint8Array {
  const spec = SCHEMA[msg.t];
  if (spec === undefined || !Object.hasOwn(SCHEMA, msg.t))
    return badValue('t', `unknown message type ${String(msg.t)}`);
  const m = msg as unknown as Record<string, unknown>;
  let n = 1;
  for (const name in spec.fields) {
    if (m[name] !== undefined) n++;
    else if (!spec.fields[name]!.optional) badValue(name, `missing in ${msg.t}`);
  }
  const w = scratch;
  w.p = 0;
  w.map(n);
  w.str('t');
  w.str(msg.t);
  for (const name in spec.fields) {
    const v = m[name];
    if (v === undefined) continue;
    w.str(name);
    const fs = spec.fields[name]!;
    if (v === null && fs.nullable) w.nil();
    else writeValue(w, fs.kind, v, name);
  }
  return w.b.slice(0, w.p);
}

// ---------- decoding ----------
// The schema is compiled once, at load, into one reader function per field of each message type, with every
// error path ("latest.state.version") built ahead: decoding allocates nothing but the values it returns.

type Read = (r: Reader) => unknown;

const ascii = (s: string): Uint8Array => utf8(s); // field and type names are ASCII

function readUint(r: Reader, maxBytes: number, path: string): bigint {
  r.bin(path, maxBytes);
  const n = r.len;
  if (n === 0) return 0n;
  const b = r.b;
  const s = r.start;
  if (b[s] === 0) return malformed(path, 'non-minimal integer (leading zero byte)');
  if (n <= 6) {
    let v = 0;
    for (let i = s; i < s + n; i++) v = v * 256 + b[i]!;
    return BigInt(v);
  }
  return BigInt(bytesHex(b, s, n));
}

/**
 * EIP-55 checksums of the addresses seen lately (a keccak each, in pure JS): a hub reads the same few payees and
 * devices again and again. Bounded; emptied when full. Same output as `toAddress`, only sooner.
 */
const checksums = new Map<string, Address>();

function checksummed(hex: string): Address {
  let a = checksums.get(hex);
  if (a === undefined) {
    if (checksums.size >= 4096) checksums.clear();
    checksums.set(hex, (a = toAddress(hex)));
  }
  return a;
}

function compileTuple(kind: TupleKind, path: string, depth: number): Read {
  // The nesting limit: the schema's tuples may nest at most `maxDepth` arrays deep, checked here, once, so the
  // compiled readers can never descend further whatever a frame holds.
  if (depth > WIRE_LIMITS.maxDepth)
    throw new TrickleError('INTERNAL', `wire schema: ${path} nests deeper than ${WIRE_LIMITS.maxDepth}`);
  const elements = TUPLES[kind]!.map((e) => ({
    ...e,
    path: `${path}.${e.name}`,
    read: compile(e.kind, `${path}.${e.name}`, depth + 1),
  }));
  const all = elements.length;
  let required = all;
  while (required > 0 && elements[required - 1]!.trailing) required--;
  const check = TUPLE_CHECKS[kind];
  const lengths = required === all ? `${all}` : `${required} or ${all}`;
  return (r) => {
    const n = r.arrayHeader(path);
    if (n !== all && n !== required) return malformed(path, `expected an array of ${lengths}`);
    const out: Record<string, unknown> = {};
    let trailingPresent = false;
    for (let i = 0; i < n; i++) {
      const e = elements[i]!;
      if (e.nilable && r.nil()) {
        if (!e.trailing) out[e.name] = undefined;
        continue;
      }
      if (e.trailing) trailingPresent = true;
      const v = e.read(r);
      if (e.positive && v === 0n) malformed(e.path, 'must be positive');
      out[e.name] = v;
    }
    if (n > required && !trailingPresent) malformed(path, `${n} elements carry at least one of the optional ones`);
    const broken = check?.(out);
    if (broken) malformed(`${path}.${broken[0]}`, broken[1]);
    return out;
  };
}

function compile(kind: Kind, path: string, depth: number): Read {
  switch (kind) {
    case 'u32':
      return (r) => r.uint(path, 0xffffffff);
    case 'u64':
      return (r) => readUint(r, 8, path);
    case 'u256':
      return (r) => readUint(r, 32, path);
    case 'address':
      return (r) => checksummed(r.hex(path, 20));
    case 'bytes32':
    case 'channelId':
      return (r) => r.hex(path, 32);
    case 'sigHex':
      return (r) => r.hex(path, 65);
    case 'sig':
      return (r) => {
        const sig = r.bytes(path, 65);
        return sig.length === 65 ? sig : malformed(path, `expected 65 bytes, got ${sig.length}`);
      };
    case 'blob':
      return (r) => r.bytes(path, WIRE_LIMITS.maxBlobBytes);
    case 'bool':
      return (r) => r.bool(path);
    case 'code':
      return (r) => {
        const code = r.str(path, 32);
        return WIRE_CODE.test(code) ? code : malformed(path, 'not an error code: [A-Z][A-Z0-9_]{0,31}');
      };
    case 'text':
      return (r) => {
        // At most 3 UTF-8 bytes per UTF-16 code unit: longer byte strings are refused before they are decoded.
        const text = r.str(path, 3 * WIRE_LIMITS.maxTextChars);
        return text.length <= WIRE_LIMITS.maxTextChars
          ? text
          : malformed(path, `longer than ${WIRE_LIMITS.maxTextChars} characters`);
      };
    case 'market':
      return (r) => {
        const market = r.str(path, 64);
        return WIRE_LIMITS.marketPattern.test(market)
          ? market
          : malformed(path, 'expected a market name [a-z0-9._-]{1,64}');
      };
    case 'side':
      return (r) => (r.uint(path, 1) === 0 ? 'bid' : 'ask');
    default:
      return compileTuple(kind, path, depth);
  }
}

interface CompiledField {
  readonly name: string;
  readonly key: Uint8Array;
  readonly bit: number;
  readonly optional: boolean;
  readonly read: Read;
}

interface CompiledMessage {
  readonly t: string;
  readonly key: Uint8Array;
  readonly fields: readonly CompiledField[];
  /** Bits of the fields that must be present. */
  readonly required: number;
}

/** Every field name of any message (a key before `t` must be one of them). */
const NAMES = [...FIELD_NAMES];
const NAME_KEYS = NAMES.map(ascii);
const T_KEY = ascii('t');

const COMPILED: readonly CompiledMessage[] = Object.entries(SCHEMA).map(([t, spec]) => {
  // One bit per field of the message, for the duplicate and missing-field checks.
  if (Object.keys(spec.fields).length > 30)
    throw new TrickleError('INTERNAL', `wire schema: ${t} has more than 30 fields`);
  const fields = Object.entries(spec.fields).map(([name, fs], index): CompiledField => {
    const read = compile(fs.kind, name, 1);
    return {
      name,
      key: ascii(name),
      bit: 1 << index,
      optional: fs.optional === true,
      read: fs.nullable ? (r) => (r.nil() ? null : read(r)) : read,
    };
  });
  return { t, key: ascii(t), fields, required: fields.reduce((m, f) => (f.optional ? m : m | f.bit), 0) };
});

function fieldOf(m: CompiledMessage, r: Reader): CompiledField | undefined {
  for (const f of m.fields) if (r.is(f.key)) return f;
  return undefined;
}

/** Options for {@link decodeFrame}. */
export interface DecodeOptions {
  /** Hard limit on the frame's size in bytes. Default {@link DEFAULT_MAX_FRAME_BYTES}. */
  readonly maxFrameBytes?: number;
}

/**
 * Decode and validate one frame.
 * @param bytes - the frame as received
 * @param options - the frame size limit
 * @returns the message, fully typed and range-checked
 * @throws TrickleError `FRAME_TOO_LARGE` over the limit, `MALFORMED` for anything else that is not a valid message
 * @example
 * ```ts
 * const msg = decodeFrame(encodeFrame({ t: 'ok', id: 1 })); // { t: 'ok', id: 1 }
 * ```
 */
export function decodeFrame(bytes: Uint8Array, options?: DecodeOptions): Message {
  const max = options?.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
  if (!(bytes instanceof Uint8Array)) throw new MalformedError('frame must be binary');
  if (bytes.length > max) {
    throw new TrickleError('FRAME_TOO_LARGE', `frame of ${bytes.length} bytes exceeds ${max}`, {
      closeStatus: 1009,
      details: { size: bytes.length, max },
    });
  }
  const r = new Reader(bytes);
  const n = r.mapHeader('frame');
  if (n > MAX_FIELDS) malformed('frame', `more than ${MAX_FIELDS} fields`);
  const out: Record<string, unknown> = {};
  let seen = 0;
  let m: CompiledMessage | undefined;
  // Fields that come before `t` (their names' indices, and where their keys start): their values are checked for
  // shape and depth, and read once `t` is known.
  let early: number[] | undefined;
  let earlyNames: number[] | undefined;
  for (let i = 0; i < n; i++) {
    const keyAt = r.p;
    r.strRange('frame', 32);
    if (m !== undefined) {
      const f = fieldOf(m, r);
      if (f === undefined)
        return r.is(T_KEY) ? malformed('t', 'duplicate key') : malformed('frame', `unknown field in ${m.t}`);
      if (seen & f.bit) return malformed(f.name, 'duplicate key');
      seen |= f.bit;
      out[f.name] = f.read(r);
    } else if (r.is(T_KEY)) {
      r.strRange('t', MAX_TYPE_CHARS);
      for (const c of COMPILED) if (r.is(c.key)) m = c;
      if (m === undefined) return malformed('t', 'unknown message type');
      out['t'] = m.t;
      if (early) {
        const resume = r.p;
        for (const at of early) {
          r.p = at;
          r.strRange('frame', 32);
          const f = fieldOf(m, r);
          if (f === undefined)
            return malformed(NAMES.find((_, k) => r.is(NAME_KEYS[k]!)) ?? 'frame', `unknown field in ${m.t}`);
          seen |= f.bit;
          out[f.name] = f.read(r);
        }
        r.p = resume;
      }
    } else {
      const k = NAME_KEYS.findIndex((key) => r.is(key));
      if (k < 0) return malformed('frame', 'unknown field');
      if (earlyNames?.includes(k)) return malformed(NAMES[k]!, 'duplicate key');
      (earlyNames ??= []).push(k);
      (early ??= []).push(keyAt);
      r.skip(NAMES[k]!, WIRE_LIMITS.maxDepth);
    }
  }
  if (r.left !== 0) return malformed('frame', 'trailing bytes after the map');
  if (m === undefined) return malformed('t', 'missing message type');
  if ((seen & m.required) !== m.required) {
    return malformed(m.fields.find((f) => !f.optional && !(seen & f.bit))!.name, 'missing field');
  }
  const code = out['code'];
  if (typeof code === 'string' && !Object.hasOwn(ERROR_CODES, code)) {
    // A code a newer peer added: the frame still answers its request, with a code this version can name.
    out['code'] = 'UNKNOWN_CODE';
    out['wireCode'] = code;
  }
  return out as unknown as Message;
}

/**
 * The request id of a frame, if it can be read at all, so an error reply can name it.
 * @param bytes - a frame, valid or not
 * @returns the `id` field of a map frame, or 0 when there is none or the frame is unreadable
 */
export function peekRequestId(bytes: Uint8Array): number {
  try {
    const r = new Reader(bytes);
    const n = r.mapHeader('frame');
    const ID = NAME_KEYS[NAMES.indexOf('id')]!;
    for (let i = 0; i < n; i++) {
      r.strRange('frame', 32);
      if (r.is(ID)) return r.uint('id', 0xffffffff);
      r.skip('frame', WIRE_LIMITS.maxDepth);
    }
  } catch {
    // unreadable: answer with id 0
  }
  return 0;
}
