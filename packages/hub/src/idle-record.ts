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
const PARAM_KEYS = new Set(['chainId', 'adjudicator', 'device', 'hub', 'token', 'challengeDuration', 'salt']);

/** The channel parameters most channels of a hub share. */
interface Template {
  readonly chainId: bigint;
  readonly adjudicator: Address;
  readonly hub: Address;
  readonly token: Address;
  readonly challengeDuration: bigint;
}

const HEX_DIGITS = Buffer.from('0123456789abcdef0123456789ABCDEF', 'latin1');
/**
 * `0x` and the hex digits of `bytes[start, start + length)` (uppercase where `upper(i)` for digit i), made in one piece:
 * built by concatenation, V8 would keep it as a chain of string pieces, many times its size.
 */
function hexString(bytes: Buffer, start: number, length: number, upper?: (i: number) => boolean): string {
  const out = Buffer.allocUnsafe(2 + 2 * length);
  out[0] = 48; // 0
  out[1] = 120; // x
  for (let i = 0; i < length; i++) {
    const v = bytes[start + i]!;
    out[2 + 2 * i] = HEX_DIGITS[(v >> 4) + (upper?.(2 * i) ? 16 : 0)]!;
    out[3 + 2 * i] = HEX_DIGITS[(v & 15) + (upper?.(2 * i + 1) ? 16 : 0)]!;
  }
  return out.toString('latin1');
}

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
      !hasOnly(f, new Set(['device', 'hub']), true)
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

    const out = Buffer.allocUnsafe(3 + 25 + 32 + values.length * 33 + 130);
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
      const hex = v === 0n ? '' : v.toString(16);
      const even = hex.length % 2 === 1 ? `0${hex}` : hex;
      out[at++] = even.length / 2;
      at += out.write(even, at, 'hex');
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
    const b = Buffer.from(packed, 'latin1');
    let at = 0;
    const flags = b[at++]!;
    const t = this.#templates[b.readUInt16BE(at)];
    at += 2;
    const status = STATUSES[flags & 3];
    if (!t || !status) throw new TrickleError('INTERNAL', 'not a packed channel record');
    const caseAt = at + 20;
    const device = hexString(b, at, 20, (i) => ((b[caseAt + (i >> 3)]! >> (i & 7)) & 1) === 1) as Address;
    at += 25;
    const salt = hexString(b, at, 32) as Bytes32;
    at += 32;
    const uint = (): bigint => {
      const n = b[at++]!;
      return n === 0 ? 0n : BigInt(`0x${b.toString('hex', at, (at += n))}`);
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
    const sig = () => hexString(b, (at += 65) - 65, 65) as SignatureHex;
    const deviceSig = flags & DEVICE_SIG ? sig() : undefined;
    const hubSig = flags & HUB_SIG ? sig() : undefined;
    if (at !== b.length) throw new TrickleError('INTERNAL', 'not a packed channel record');
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
    return i;
  }
}
