import { Packr } from 'msgpackr';
import { MalformedError, TrickleError, ERROR_CODES, type ErrorCode } from './errors.js';
import { toAddress } from './hex.js';
import { ZERO_ROOT } from './types.js';
import type { Address, Bytes32, ChannelId, ChannelParams, SignatureHex, SignedState, State } from './types.js';

/**
 * The wire codec. Every frame is one MessagePack map `{ t: <type>, id: <request id>, ...fields }` with the fields
 * of its type and no others (protocol-spec/README.md lists them). Unsigned integers that can exceed 2^53 travel
 * as big-endian binary with no leading zero byte (0 is the empty binary), so any MessagePack library can read
 * them; 20-, 32- and 65-byte values travel as binary. `decodeFrame` checks every field's type, length and range
 * and throws nothing but `TrickleError` with code `MALFORMED` or `FRAME_TOO_LARGE`.
 */

/** Default hard limit on one frame's size, in bytes. */
export const DEFAULT_MAX_FRAME_BYTES = 64 * 1024;

/** A payment the hub forwards to another device (carried on the payer's update). */
export interface RouteInstruction {
  /** The device to be paid. */
  readonly to: Address;
  readonly amount: bigint;
  /** Payer-chosen id; the payee sees it, and the hub refuses to route one id twice. */
  readonly paymentId: Bytes32;
}

/** A market order as sent on the wire (the hub assigns the arrival sequence). */
export interface WireOrder {
  readonly id: Bytes32;
  readonly market: string;
  readonly side: 'bid' | 'ask';
  readonly quantity: bigint;
  readonly price: bigint;
  readonly round: bigint;
}

/** Every message of the protocol. `id` pairs a reply with its request (0 for unsolicited pushes). */
export type Message =
  | { readonly t: 'challenge'; readonly id: number; readonly nonce: Bytes32; readonly hub: Address; readonly chainId: bigint; readonly adjudicator: Address }
  | { readonly t: 'auth'; readonly id: number; readonly device: Address; readonly nonce: Bytes32; readonly sig: Uint8Array }
  | { readonly t: 'ok'; readonly id: number }
  | { readonly t: 'open'; readonly id: number; readonly params: ChannelParams }
  | { readonly t: 'sync'; readonly id: number; readonly channelId: ChannelId; readonly latest: SignedState | null }
  | { readonly t: 'update'; readonly id: number; readonly state: State; readonly sig: Uint8Array; readonly route?: RouteInstruction | undefined; readonly paymentId?: Bytes32 | undefined }
  | { readonly t: 'ack'; readonly id: number; readonly channelId: ChannelId; readonly version: bigint; readonly sig: Uint8Array }
  | { readonly t: 'reject'; readonly id: number; readonly channelId: ChannelId; readonly code: ErrorCode; readonly message: string; readonly latest: SignedState | null }
  | { readonly t: 'close'; readonly id: number; readonly state: State; readonly sig: Uint8Array }
  | { readonly t: 'order'; readonly id: number; readonly order: WireOrder; readonly sig: Uint8Array }
  | { readonly t: 'accepted'; readonly id: number; readonly arrival: bigint }
  | { readonly t: 'clearing'; readonly id: number; readonly round: bigint; readonly record: Uint8Array; readonly sig: Uint8Array }
  | { readonly t: 'receipt'; readonly id: number; readonly paymentId: Bytes32; readonly delivered: boolean }
  | { readonly t: 'round'; readonly id: number; readonly round: bigint; readonly feeBps: bigint }
  | { readonly t: 'error'; readonly id: number; readonly code: ErrorCode; readonly message: string };

/** The message type names. */
export type MessageType = Message['t'];

/** A message of one type. */
export type MessageOf<T extends MessageType> = Extract<Message, { t: T }>;

type Kind =
  | 'u32'
  | 'u64'
  | 'u256'
  | 'address'
  | 'bytes32'
  | 'sig'
  | 'bool'
  | 'code'
  | 'text'
  | 'market'
  | 'side'
  | 'state'
  | 'signedStateOrNull'
  | 'params'
  | 'route'
  | 'order'
  | 'blob';

interface FieldSpec {
  readonly kind: Kind;
  readonly optional?: boolean;
}

const f = (kind: Kind, optional = false): FieldSpec => ({ kind, optional });

/** Field layout of each message type, in the order they are written. */
export const MESSAGE_FIELDS: { readonly [T in MessageType]: Readonly<Record<string, FieldSpec>> } = {
  challenge: { id: f('u32'), nonce: f('bytes32'), hub: f('address'), chainId: f('u256'), adjudicator: f('address') },
  auth: { id: f('u32'), device: f('address'), nonce: f('bytes32'), sig: f('sig') },
  ok: { id: f('u32') },
  open: { id: f('u32'), params: f('params') },
  sync: { id: f('u32'), channelId: f('bytes32'), latest: f('signedStateOrNull') },
  update: { id: f('u32'), state: f('state'), sig: f('sig'), route: f('route', true), paymentId: f('bytes32', true) },
  ack: { id: f('u32'), channelId: f('bytes32'), version: f('u64'), sig: f('sig') },
  reject: { id: f('u32'), channelId: f('bytes32'), code: f('code'), message: f('text'), latest: f('signedStateOrNull') },
  close: { id: f('u32'), state: f('state'), sig: f('sig') },
  order: { id: f('u32'), order: f('order'), sig: f('sig') },
  accepted: { id: f('u32'), arrival: f('u64') },
  clearing: { id: f('u32'), round: f('u64'), record: f('blob'), sig: f('sig') },
  receipt: { id: f('u32'), paymentId: f('bytes32'), delivered: f('bool') },
  round: { id: f('u32'), round: f('u64'), feeBps: f('u64') },
  error: { id: f('u32'), code: f('code'), message: f('text') },
};

const MAX_TEXT = 512;
const MAX_BLOB = 60 * 1024;
const packr = new Packr({ useRecords: false, mapsAsObjects: true, moreTypes: false, bundleStrings: false, variableMapSize: true });

// ---------- encoding ----------

/** Minimal big-endian bytes of an unsigned integer (0 → empty). */
export function uintToBytes(value: bigint): Uint8Array {
  if (value < 0n) throw new TrickleError('INVALID_ARGUMENT', 'negative integer');
  if (value === 0n) return new Uint8Array(0);
  let hex = value.toString(16);
  if (hex.length & 1) hex = `0${hex}`;
  return Buffer.from(hex, 'hex');
}

const bin = (hex: string): Uint8Array => Buffer.from(hex.slice(2), 'hex');

function encState(s: State): unknown[] {
  return [
    bin(s.channelId),
    uintToBytes(s.version),
    uintToBytes(s.paidByDevice),
    uintToBytes(s.paidByHub),
    uintToBytes(s.round),
    bin(s.locksRoot),
    uintToBytes(s.lockedByDevice),
    uintToBytes(s.lockedByHub),
    s.isFinal,
  ];
}

function encValue(kind: Kind, v: any): unknown {
  switch (kind) {
    case 'u32':
    case 'bool':
    case 'code':
    case 'text':
    case 'market':
    case 'blob':
      return v;
    case 'u64':
    case 'u256':
      return uintToBytes(v);
    case 'address':
    case 'bytes32':
      return bin(v);
    case 'sig':
      return v;
    case 'side':
      return v === 'bid' ? 0 : 1;
    case 'state':
      return encState(v);
    case 'signedStateOrNull':
      return v === null ? null : [encState(v.state), v.deviceSig ? bin(v.deviceSig) : null, v.hubSig ? bin(v.hubSig) : null];
    case 'params':
      return [uintToBytes(v.chainId), bin(v.adjudicator), bin(v.device), bin(v.hub), bin(v.token), uintToBytes(v.challengeDuration), bin(v.salt)];
    case 'route':
      return [bin(v.to), uintToBytes(v.amount), bin(v.paymentId)];
    case 'order':
      return [bin(v.id), v.market, v.side === 'bid' ? 0 : 1, uintToBytes(v.quantity), uintToBytes(v.price), uintToBytes(v.round)];
  }
}

/**
 * Encode a message into one frame.
 * @param msg - the message
 * @returns MessagePack bytes
 * @example
 * ```ts
 * ws.send(encodeFrame({ t: 'ack', id: 7, channelId, version: 12n, sig }));
 * ```
 */
export function encodeFrame(msg: Message): Uint8Array {
  const spec = MESSAGE_FIELDS[msg.t];
  const out: Record<string, unknown> = { t: msg.t };
  for (const name in spec) {
    const v = (msg as unknown as Record<string, unknown>)[name];
    if (v === undefined) {
      if (spec[name]!.optional) continue;
      throw new TrickleError('INVALID_ARGUMENT', `missing field ${name} in ${msg.t}`);
    }
    out[name] = encValue(spec[name]!.kind, v);
  }
  return packr.pack(out);
}

// ---------- decoding ----------

const bad = (path: string, what: string): never => {
  throw new MalformedError(`${path}: ${what}`, { details: { field: path } });
};

function isBytes(v: unknown): v is Uint8Array {
  return v instanceof Uint8Array;
}

function decUint(v: unknown, maxBytes: number, path: string): bigint {
  if (!isBytes(v)) return bad(path, 'expected binary unsigned integer');
  if (v.length > maxBytes) return bad(path, `more than ${maxBytes} bytes`);
  if (v.length === 0) return 0n;
  if (v[0] === 0) return bad(path, 'non-minimal integer (leading zero byte)');
  return BigInt(`0x${Buffer.from(v.buffer, v.byteOffset, v.length).toString('hex')}`);
}

function decFixed(v: unknown, len: number, path: string): string {
  if (!isBytes(v) || v.length !== len) return bad(path, `expected ${len} bytes`);
  return `0x${Buffer.from(v.buffer, v.byteOffset, v.length).toString('hex')}`;
}

function decArray(v: unknown, len: number, path: string): unknown[] {
  if (!Array.isArray(v) || v.length !== len) return bad(path, `expected an array of ${len}`);
  return v;
}

function decState(v: unknown, path: string): State {
  const a = decArray(v, 9, path);
  if (typeof a[8] !== 'boolean') bad(`${path}.isFinal`, 'expected boolean');
  const locksRoot = decFixed(a[5], 32, `${path}.locksRoot`) as Bytes32;
  const lockedByDevice = decUint(a[6], 32, `${path}.lockedByDevice`);
  const lockedByHub = decUint(a[7], 32, `${path}.lockedByHub`);
  // No locks is the zero root with zero totals; a lock is at least 1 unit, so a non-zero root has a non-zero total.
  if ((locksRoot === ZERO_ROOT) !== (lockedByDevice === 0n && lockedByHub === 0n)) {
    bad(`${path}.locksRoot`, 'the zero root goes with zero locked totals, and only with them');
  }
  return {
    channelId: decFixed(a[0], 32, `${path}.channelId`) as ChannelId,
    version: decUint(a[1], 8, `${path}.version`),
    paidByDevice: decUint(a[2], 32, `${path}.paidByDevice`),
    paidByHub: decUint(a[3], 32, `${path}.paidByHub`),
    round: decUint(a[4], 8, `${path}.round`),
    locksRoot,
    lockedByDevice,
    lockedByHub,
    isFinal: a[8] as boolean,
  };
}

function decSigHex(v: unknown, path: string): SignatureHex | undefined {
  if (v === null) return undefined;
  return decFixed(v, 65, path) as SignatureHex;
}

function decAddress(v: unknown, path: string): Address {
  return toAddress(decFixed(v, 20, path));
}

function decText(v: unknown, max: number, path: string): string {
  if (typeof v !== 'string' || v.length > max) return bad(path, `expected a string of at most ${max} characters`);
  return v;
}

const MARKET_RE = /^[a-z0-9._-]{1,64}$/;

function decValue(kind: Kind, v: unknown, path: string): unknown {
  switch (kind) {
    case 'u32':
      if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 0xffffffff) return bad(path, 'expected uint32');
      return v;
    case 'u64':
      return decUint(v, 8, path);
    case 'u256':
      return decUint(v, 32, path);
    case 'address':
      return decAddress(v, path);
    case 'bytes32':
      return decFixed(v, 32, path);
    case 'sig':
      if (!isBytes(v) || v.length !== 65) return bad(path, 'expected 65 bytes');
      return new Uint8Array(v);
    case 'bool':
      if (typeof v !== 'boolean') return bad(path, 'expected boolean');
      return v;
    case 'code':
      if (typeof v !== 'string' || !Object.hasOwn(ERROR_CODES, v)) return bad(path, 'unknown error code');
      return v;
    case 'text':
      return decText(v, MAX_TEXT, path);
    case 'market':
      if (typeof v !== 'string' || !MARKET_RE.test(v)) return bad(path, 'expected a market name [a-z0-9._-]{1,64}');
      return v;
    case 'side':
      if (v !== 0 && v !== 1) return bad(path, 'expected side 0 (bid) or 1 (ask)');
      return v === 0 ? 'bid' : 'ask';
    case 'blob':
      if (!isBytes(v) || v.length > MAX_BLOB) return bad(path, `expected binary of at most ${MAX_BLOB} bytes`);
      return new Uint8Array(v);
    case 'state':
      return decState(v, path);
    case 'signedStateOrNull': {
      if (v === null) return null;
      const a = decArray(v, 3, path);
      const s: SignedState = { state: decState(a[0], `${path}.state`), deviceSig: decSigHex(a[1], `${path}.deviceSig`), hubSig: decSigHex(a[2], `${path}.hubSig`) };
      return s;
    }
    case 'params': {
      const a = decArray(v, 7, path);
      const p: ChannelParams = {
        chainId: decUint(a[0], 32, `${path}.chainId`),
        adjudicator: decAddress(a[1], `${path}.adjudicator`),
        device: decAddress(a[2], `${path}.device`),
        hub: decAddress(a[3], `${path}.hub`),
        token: decAddress(a[4], `${path}.token`),
        challengeDuration: decUint(a[5], 8, `${path}.challengeDuration`),
        salt: decFixed(a[6], 32, `${path}.salt`) as Bytes32,
      };
      return p;
    }
    case 'route': {
      const a = decArray(v, 3, path);
      const amount = decUint(a[1], 32, `${path}.amount`);
      if (amount === 0n) bad(`${path}.amount`, 'must be positive');
      return { to: decAddress(a[0], `${path}.to`), amount, paymentId: decFixed(a[2], 32, `${path}.paymentId`) as Bytes32 } satisfies RouteInstruction;
    }
    case 'order': {
      const a = decArray(v, 6, path);
      const o: WireOrder = {
        id: decFixed(a[0], 32, `${path}.id`) as Bytes32,
        market: decValue('market', a[1], `${path}.market`) as string,
        side: decValue('side', a[2], `${path}.side`) as 'bid' | 'ask',
        quantity: decUint(a[3], 32, `${path}.quantity`),
        price: decUint(a[4], 32, `${path}.price`),
        round: decUint(a[5], 8, `${path}.round`),
      };
      if (o.quantity === 0n || o.price === 0n) bad(path, 'quantity and price must be positive');
      return o;
    }
  }
}

/** Options for {@link decodeFrame}. */
export interface DecodeOptions {
  /** Hard limit on the frame's size in bytes. Default {@link DEFAULT_MAX_FRAME_BYTES}. */
  readonly maxFrameBytes?: number;
}

/**
 * Decode and validate one frame.
 * @param bytes - the frame as received
 * @returns the message, fully typed and range-checked
 * @throws TrickleError `FRAME_TOO_LARGE` over the limit, `MALFORMED` for anything else that is not a valid message
 */
export function decodeFrame(bytes: Uint8Array, options: DecodeOptions = {}): Message {
  const max = options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
  if (!(bytes instanceof Uint8Array)) throw new MalformedError('frame must be binary');
  if (bytes.length > max) {
    throw new TrickleError('FRAME_TOO_LARGE', `frame of ${bytes.length} bytes exceeds ${max}`, { closeStatus: 1009, details: { size: bytes.length, max } });
  }
  let raw: unknown;
  try {
    raw = packr.unpack(bytes);
  } catch (cause) {
    throw new MalformedError('not a single MessagePack value', { cause });
  }
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw) || Object.getPrototypeOf(raw) !== Object.prototype) {
    throw new MalformedError('frame must be a map');
  }
  const obj = raw as Record<string, unknown>;
  const t = obj['t'];
  if (typeof t !== 'string' || !Object.hasOwn(MESSAGE_FIELDS, t)) throw new MalformedError('unknown message type', { details: { field: 't' } });
  const spec = MESSAGE_FIELDS[t as MessageType];
  const out: Record<string, unknown> = { t };
  for (const key of Object.keys(obj)) {
    if (key !== 't' && !Object.hasOwn(spec, key)) throw new MalformedError(`unknown field ${key}`, { details: { field: key } });
  }
  for (const name in spec) {
    const fs = spec[name]!;
    if (!Object.hasOwn(obj, name)) {
      if (fs.optional) continue;
      throw new MalformedError(`missing field ${name}`, { details: { field: name } });
    }
    out[name] = decValue(fs.kind, obj[name], name);
  }
  return out as unknown as Message;
}

/** The request id of a frame, if it can be read at all, so an error reply can name it. */
export function peekRequestId(bytes: Uint8Array): number {
  try {
    const raw = packr.unpack(bytes) as { id?: unknown };
    return typeof raw?.id === 'number' && Number.isInteger(raw.id) && raw.id >= 0 && raw.id <= 0xffffffff ? raw.id : 0;
  } catch {
    return 0;
  }
}
