import { TrickleError } from '@trickle/protocol/errors';
import {
  ZERO_ROOT,
  type Address,
  type Bytes32,
  type ChannelId,
  type ChannelParams,
  type SignatureHex,
  type State,
} from '@trickle/protocol/types';
import type { ChannelRecord, ChannelStatus } from './store/types.js';

// An idle channel (no work queued or in flight, its device offline) is kept by the channel table as one short binary
// string instead of a channel engine value, its record and the objects, strings and bigints they hold: ~250 bytes
// instead of ~1,600 on the heap. Only plain records (no locks, no outgoing proposal, lowercase hex) are packed, and a
// packed record unpacks to an equal record, field for field; anything else stays unpacked. This is memory only: the
// store's record format is unchanged.
//
// Layout (each character of the string is one byte, so V8 keeps it as a one-byte string):
//   flags (status in bits 0-1, isFinal, deviceSig present, hubSig present, hubSignedVersion = version)
//   u16 index of the (chainId, adjudicator, hub, token, challengeDuration) shared by many channels
//   device (20 bytes) and the case of its 40 hex digits (5 bytes, one bit each), salt (32 bytes)
//   funding.device, funding.hub, version, paidByDevice, paidByHub, round, [hubSignedVersion]: a length byte, then
//   the value big-endian in that many bytes
//   [deviceSig (65 bytes)] [hubSig (65 bytes)]

const STATUSES: readonly ChannelStatus[] = ['open', 'closing', 'closed'];
const FINAL = 4;
const DEVICE_SIG = 8;
const HUB_SIG = 16;
const SIGNED_AT_LATEST = 32;
const MAX_TEMPLATES = 0xffff;
const MAX_UINT256 = (1n << 256n) - 1n;
const HEX_SIG = /^0x[0-9a-f]{130}$/;
const HEX_32 = /^0x[0-9a-f]{64}$/;
const ADDRESS = /^0x[0-9a-fA-F]{40}$/;
const RECORD_KEYS = new Set(['params', 'channelId', 'funding', 'status', 'latest', 'hubSignedVersion']);
const LATEST_KEYS = new Set(['state', 'deviceSig', 'hubSig']);
const STATE_KEYS = new Set([
  'channelId',
  'version',
  'paidByDevice',
  'paidByHub',
  'round',
  'locksRoot',
  'lockedByDevice',
  'lockedByHub',
  'isFinal',
]);
const FUNDING_KEYS = new Set(['device', 'hub']);
const PARAM_KEYS = new Set(['chainId', 'adjudicator', 'device', 'hub', 'token', 'challengeDuration', 'salt']);

/** The channel parameters most channels of a hub share. */
interface Template {
  readonly chainId: bigint;
  readonly adjudicator: Address;
  readonly hub: Address;
  readonly token: Address;
  readonly challengeDuration: bigint;
}

/** Scratch space for one unpacked hex string (0x and up to 130 digits), written two digits at a time. */
const scratch = new ArrayBuffer(2 + 2 * 65);
const scratchBytes = Buffer.from(scratch);
const scratchPairs = new Uint16Array(scratch);
scratchBytes[0] = 48; // 0
scratchBytes[1] = 120; // x
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
/** For each byte value, its two hex digits as one 16-bit word: PAIRS[case][v], case bit 0 (1) uppercases the high
 * (low) digit. */
const PAIRS = [0, 1, 2, 3].map((upper) => {
  const digit = (d: number, up: boolean) => (up ? '0123456789ABCDEF' : '0123456789abcdef').charCodeAt(d);
  return Uint16Array.from({ length: 256 }, (_, v) => {
    const hi = digit(v >> 4, (upper & 1) !== 0);
    const lo = digit(v & 15, (upper & 2) !== 0);
    return LITTLE_ENDIAN ? hi | (lo << 8) : (hi << 8) | lo;
  });
}) as [Uint16Array, Uint16Array, Uint16Array, Uint16Array];

/**
 * `0x` and the hex digits of the bytes `packed[start, start + length)`, uppercase where bit i of the bytes from
 * `caseBits` on (an offset into `packed`, 0 for none) is set for digit i; made in one piece: built by concatenation,
 * V8 would keep it as a chain of string pieces, many times its size.
 */
function hexString(packed: string, start: number, length: number, caseBits = 0): string {
  for (let i = 0; i < length; i++) {
    const upper = caseBits === 0 ? 0 : (packed.charCodeAt(caseBits + (i >> 2)) >> ((2 * i) & 7)) & 3;
    scratchPairs[1 + i] = PAIRS[upper as 0 | 1 | 2 | 3][packed.charCodeAt(start + i)]!;
  }
  return scratchBytes.toString('latin1', 0, 2 + 2 * length);
}

/** Where {@link IdleRecords.pack} writes (the longest packed record is 3 + 25 + 32 + 7 × 33 + 130 bytes). */
const packScratch = Buffer.alloc(512);

const hasOnly = (o: object, keys: ReadonlySet<string>, all: boolean): boolean => {
  const own = Object.keys(o);
  return (!all || own.length === keys.size) && own.every((k) => keys.has(k));
};
const isUint = (v: unknown): v is bigint => typeof v === 'bigint' && v >= 0n && v <= MAX_UINT256;

/**
 * Packs idle channel records into short strings and back. One per channel table: it keeps the table of shared
 * parameter tuples (bounded at 65,535; a record with a tuple beyond that is simply not packed).
 */
export class IdleRecords {
  readonly #templates: Template[] = [];
  readonly #templateIndex = new Map<string, number>();
  /** The tuple found last. */
  #last = 0;

  /** The packed form of `record`, or undefined when it is not a plain record (it then stays as it is). */
  pack(record: ChannelRecord): string | undefined {
    const p = record.params;
    const l = record.latest;
    const s = l.state;
    const f = record.funding;
    if (
      !hasOnly(record, RECORD_KEYS, true) ||
      !hasOnly(l, LATEST_KEYS, false) ||
      !hasOnly(s, STATE_KEYS, true) ||
      !hasOnly(p, PARAM_KEYS, true) ||
      !hasOnly(f, FUNDING_KEYS, true)
    )
      return undefined;
    const status = STATUSES.indexOf(record.status);
    if (status < 0 || typeof s.isFinal !== 'boolean') return undefined;
    if (
      s.channelId !== record.channelId ||
      s.locksRoot !== ZERO_ROOT ||
      s.lockedByDevice !== 0n ||
      s.lockedByHub !== 0n
    )
      return undefined;
    if (!HEX_32.test(record.channelId) || !HEX_32.test(p.salt) || !ADDRESS.test(p.device)) return undefined;
    if ('deviceSig' in l && !(typeof l.deviceSig === 'string' && HEX_SIG.test(l.deviceSig))) return undefined;
    if ('hubSig' in l && !(typeof l.hubSig === 'string' && HEX_SIG.test(l.hubSig))) return undefined;
    const values = [f.device, f.hub, s.version, s.paidByDevice, s.paidByHub, s.round];
    const signedAtLatest = record.hubSignedVersion === s.version;
    if (!signedAtLatest) values.push(record.hubSignedVersion);
    if (!values.every(isUint)) return undefined;
    const template = this.#template(p);
    if (template === undefined) return undefined;

    const out = packScratch;
    let at = 0;
    out[at++] =
      status |
      (s.isFinal ? FINAL : 0) |
      (l.deviceSig !== undefined ? DEVICE_SIG : 0) |
      (l.hubSig !== undefined ? HUB_SIG : 0) |
      (signedAtLatest ? SIGNED_AT_LATEST : 0);
    at = out.writeUInt16BE(template, at);
    at += out.write(p.device.slice(2).toLowerCase(), at, 'hex');
    for (let i = 0; i < 5; i++) {
      let bits = 0;
      for (let j = 0; j < 8; j++) {
        const c = p.device.charCodeAt(2 + i * 8 + j);
        if (c >= 65 && c <= 70) bits |= 1 << j; // A-F
      }
      out[at++] = bits;
    }
    at += out.write(p.salt.slice(2), at, 'hex');
    for (const v of values) {
      if (v < 1n << 48n) {
        // Most counters: the bytes of a number, without making a hex string.
        let n = Number(v);
        let k = 0;
        for (let m = n; m > 0; m = Math.floor(m / 256)) k++;
        out[at++] = k;
        for (let j = k - 1; j >= 0; j--, n = Math.floor(n / 256)) out[at + j] = n % 256;
        at += k;
      } else {
        const hex = v.toString(16);
        const even = hex.length % 2 === 1 ? `0${hex}` : hex;
        out[at++] = even.length / 2;
        at += out.write(even, at, 'hex');
      }
    }
    if (l.deviceSig !== undefined) at += out.write(l.deviceSig.slice(2), at, 'hex');
    if (l.hubSig !== undefined) at += out.write(l.hubSig.slice(2), at, 'hex');
    return out.toString('latin1', 0, at);
  }

  /**
   * The record `packed` holds (equal to the one packed, in new objects).
   * @throws TrickleError INTERNAL when `packed` was not made by this instance's {@link IdleRecords.pack}
   */
  unpack(channelId: ChannelId, packed: string): ChannelRecord {
    let at = 0;
    const flags = packed.charCodeAt(at++);
    const t = this.#templates[(packed.charCodeAt(at++) << 8) | packed.charCodeAt(at++)];
    const status = STATUSES[flags & 3];
    if (!t || !status) throw new TrickleError('INTERNAL', 'not a packed channel record');
    const device = hexString(packed, at, 20, at + 20) as Address;
    at += 25;
    const salt = hexString(packed, at, 32) as Bytes32;
    at += 32;
    const uint = (): bigint => {
      const n = packed.charCodeAt(at++);
      // 48 bits at a time in a number, then into the bigint.
      let v = 0n;
      for (let left = n; left > 0;) {
        const k = left % 6 || 6;
        let chunk = 0;
        for (let j = 0; j < k; j++) chunk = chunk * 256 + packed.charCodeAt(at++);
        v = n <= 6 ? BigInt(chunk) : (v << BigInt(8 * k)) | BigInt(chunk);
        left -= k;
      }
      return v;
    };
    const funding = { device: uint(), hub: uint() };
    const version = uint();
    const state: State = {
      channelId,
      version,
      paidByDevice: uint(),
      paidByHub: uint(),
      round: uint(),
      locksRoot: ZERO_ROOT,
      lockedByDevice: 0n,
      lockedByHub: 0n,
      isFinal: (flags & FINAL) !== 0,
    };
    const hubSignedVersion = flags & SIGNED_AT_LATEST ? version : uint();
    const sig = () => hexString(packed, (at += 65) - 65, 65) as SignatureHex;
    const deviceSig = flags & DEVICE_SIG ? sig() : undefined;
    const hubSig = flags & HUB_SIG ? sig() : undefined;
    if (at !== packed.length) throw new TrickleError('INTERNAL', 'not a packed channel record');
    const params: ChannelParams = {
      chainId: t.chainId,
      adjudicator: t.adjudicator,
      device,
      hub: t.hub,
      token: t.token,
      challengeDuration: t.challengeDuration,
      salt,
    };
    return {
      params,
      channelId,
      funding,
      status,
      latest: {
        state,
        ...(deviceSig !== undefined ? { deviceSig } : {}),
        ...(hubSig !== undefined ? { hubSig } : {}),
      },
      hubSignedVersion,
    };
  }

  /** The index of the record's shared parameters (added when new), or undefined when the table is full. */
  #template(p: ChannelParams): number | undefined {
    if (
      typeof p.chainId !== 'bigint' ||
      typeof p.challengeDuration !== 'bigint' ||
      typeof p.adjudicator !== 'string' ||
      typeof p.hub !== 'string' ||
      typeof p.token !== 'string'
    )
      return undefined;
    const last = this.#templates[this.#last];
    if (
      last !== undefined &&
      last.chainId === p.chainId &&
      last.adjudicator === p.adjudicator &&
      last.hub === p.hub &&
      last.token === p.token &&
      last.challengeDuration === p.challengeDuration
    )
      return this.#last; // the usual case: most channels of a hub share one tuple
    const key = `${p.chainId}|${p.adjudicator}|${p.hub}|${p.token}|${p.challengeDuration}`;
    let i = this.#templateIndex.get(key);
    if (i === undefined) {
      if (this.#templates.length >= MAX_TEMPLATES) return undefined;
      i = this.#templates.length;
      this.#templates.push({
        chainId: p.chainId,
        adjudicator: p.adjudicator,
        hub: p.hub,
        token: p.token,
        challengeDuration: p.challengeDuration,
      });
      this.#templateIndex.set(key, i);
    }
    this.#last = i;
    return i;
  }
}
