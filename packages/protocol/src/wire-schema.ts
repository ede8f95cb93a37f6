/**
 * The one description of the wire: every message type, its fields, their kinds and limits. The codec's encoder and
 * strict decoder walk this table, the TypeScript {@link Message} union is derived from it, and the tables of
 * `protocol-spec/README.md` §3–§4 are generated from it by {@link wireSpecMarkdown} (a test keeps them equal).
 * To add a field, add it here (and to the domain type it decodes to, when it is part of a tuple): nothing else; a
 * new message type also gets its meaning in {@link MESSAGE_MEANINGS} (the compiler asks for it). The spec's prose
 * (`MESSAGE_MEANINGS`, `SCALAR_KINDS`) is kept out of the tables the codec reads, so a bundle of the codec leaves it out.
 */
import type { ErrorCode } from './errors.js';
import type { ReceiptRequest } from './receipt.js';
import type { Address, Bytes32, ChannelId, ChannelParams, SignatureHex, SignedState, State } from './types.js';

// Plain constants, so that SCALAR_KINDS' text (read only for the spec) interpolates no property read and a bundle
// that does not use it leaves it out.
const MAX_TEXT_CHARS = 512;
const MAX_BLOB_BYTES = 60 * 1024;

/** Limits every decoder applies, whatever the message. */
export const WIRE_LIMITS = {
  /** Longest `text` field, in UTF-16 code units (as JavaScript counts a string's length). */
  maxTextChars: MAX_TEXT_CHARS,
  /** Longest `blob` field, in bytes. */
  maxBlobBytes: MAX_BLOB_BYTES,
  /** Deepest nesting of arrays inside the frame's map (a signed state's state is at depth 2). */
  maxDepth: 2,
  /** Market names. */
  marketPattern: /^[a-z0-9._-]{1,64}$/,
} as const;

/** How each scalar kind travels, and what the decoder accepts (the §3 table). */
export const SCALAR_KINDS = {
  u32: 'positive integer ≤ 2³²−1 (any MessagePack integer width)',
  u64: 'binary: big-endian unsigned, no leading zero byte, 0 = empty binary; at most 8 bytes',
  u256: 'binary: big-endian unsigned, no leading zero byte, 0 = empty binary; at most 32 bytes',
  address: 'binary of exactly 20 bytes',
  bytes32: 'binary of exactly 32 bytes',
  channelId: 'binary of exactly 32 bytes',
  sig: 'binary of exactly 65 bytes (r ‖ s ‖ v)',
  sigHex: 'binary of exactly 65 bytes (r ‖ s ‖ v), as hex in the decoded object',
  bool: 'boolean',
  code: 'string matching `[A-Z][A-Z0-9_]{0,31}`: an error code of §6, or one a newer peer added (decoded as `UNKNOWN_CODE`, see §6)',
  text: `string (valid UTF-8) of at most ${MAX_TEXT_CHARS} characters, counted as UTF-16 code units (one outside the BMP counts 2); an encoder cuts a longer one`,
  market: 'string matching `[a-z0-9._-]{1,64}`',
  side: 'integer 0 (bid) or 1 (ask)',
  blob: `binary of at most ${MAX_BLOB_BYTES} bytes`,
} as const;

/** A scalar kind. */
export type ScalarKind = keyof typeof SCALAR_KINDS;

/** One element of a tuple kind: its name in the decoded object and its kind. */
export interface TupleElement {
  readonly name: string;
  readonly kind: ScalarKind | TupleKind;
  /** nil on the wire, `undefined` in the decoded object. */
  readonly nilable?: boolean;
  /** Zero is refused. */
  readonly positive?: boolean;
  /**
   * One of the optional trailing elements: the array has either none of them or all of them (then nil for the
   * absent ones, and not all nil).
   */
  readonly trailing?: boolean;
}

/** Rules across a tuple's elements, which the decoder checks after the elements themselves (see the codec). */
export const TUPLE_RULES = {
  state: 'locksRoot is zero exactly when lockedByDevice and lockedByHub are both zero',
  route: 'stream.total ≥ amount',
} as const satisfies Partial<Record<TupleKind, string>>;

/**
 * Composite kinds: a MessagePack array of exactly these elements, in this order. Each mirrors a domain type
 * (`State`, `SignedState`, `ChannelParams`, …) field for field; a compile-time check below keeps them equal.
 */
export const TUPLE_KINDS = {
  state: [
    { name: 'channelId', kind: 'channelId' },
    { name: 'version', kind: 'u64' },
    { name: 'paidByDevice', kind: 'u256' },
    { name: 'paidByHub', kind: 'u256' },
    { name: 'round', kind: 'u64' },
    { name: 'locksRoot', kind: 'bytes32' },
    { name: 'lockedByDevice', kind: 'u256' },
    { name: 'lockedByHub', kind: 'u256' },
    { name: 'isFinal', kind: 'bool' },
  ],
  signedState: [
    { name: 'state', kind: 'state' },
    { name: 'deviceSig', kind: 'sigHex', nilable: true },
    { name: 'hubSig', kind: 'sigHex', nilable: true },
  ],
  params: [
    { name: 'chainId', kind: 'u256' },
    { name: 'adjudicator', kind: 'address' },
    { name: 'device', kind: 'address' },
    { name: 'hub', kind: 'address' },
    { name: 'token', kind: 'address' },
    { name: 'challengeDuration', kind: 'u64' },
    { name: 'salt', kind: 'bytes32' },
  ],
  route: [
    { name: 'to', kind: 'address' },
    { name: 'amount', kind: 'u256', positive: true },
    { name: 'paymentId', kind: 'bytes32' },
    { name: 'receipt', kind: 'receiptRequest', nilable: true, trailing: true },
    { name: 'stream', kind: 'streamTick', nilable: true, trailing: true },
  ],
  receiptRequest: [
    { name: 'resource', kind: 'bytes32' },
    { name: 'nonce', kind: 'bytes32' },
    { name: 'expiry', kind: 'u64' },
  ],
  streamTick: [
    { name: 'streamId', kind: 'bytes32' },
    { name: 'ratePerSecond', kind: 'u256', positive: true },
    { name: 'total', kind: 'u256' },
    { name: 'final', kind: 'bool' },
  ],
  lock: [
    { name: 'amount', kind: 'u256', positive: true },
    { name: 'hash', kind: 'bytes32' },
    { name: 'expiry', kind: 'u64' },
  ],
  unlock: [
    { name: 'hash', kind: 'bytes32' },
    { name: 'preimage', kind: 'bytes32', nilable: true },
  ],
  reveal: [
    { name: 'hash', kind: 'bytes32' },
    { name: 'preimage', kind: 'bytes32' },
  ],
  order: [
    { name: 'id', kind: 'bytes32' },
    { name: 'market', kind: 'market' },
    { name: 'side', kind: 'side' },
    { name: 'quantity', kind: 'u256', positive: true },
    { name: 'price', kind: 'u256', positive: true },
    { name: 'round', kind: 'u64' },
  ],
} as const satisfies Record<string, readonly (Omit<TupleElement, 'kind'> & { readonly kind: string })[]>;

/** A composite kind. */
export type TupleKind = keyof typeof TUPLE_KINDS;

/** Every field kind. */
export type Kind = ScalarKind | TupleKind;

/** One field of a message. */
export interface FieldSpec {
  readonly kind: Kind;
  /** The key may be absent. */
  readonly optional?: boolean;
  /** The value may be nil (decoded as `null`). */
  readonly nullable?: boolean;
}

/** One message type: who sends it and its fields after `t`, in the order written (its meaning: `MESSAGE_MEANINGS`). */
export interface MessageSpec {
  readonly sender: 'hub' | 'device' | 'either';
  readonly fields: Readonly<Record<string, FieldSpec>>;
}

const id = { kind: 'u32' } as const;

/** Every message of the protocol (§4). `id` pairs a reply with its request (0 for unsolicited pushes). */
export const MESSAGE_SCHEMA = {
  challenge: {
    sender: 'hub',
    fields: {
      id,
      nonce: { kind: 'bytes32' },
      hub: { kind: 'address' },
      chainId: { kind: 'u256' },
      adjudicator: { kind: 'address' },
      /** The shortest challenge period (seconds) of a channel this hub takes on; a device checks it before depositing. */
      minChallengeSeconds: { kind: 'u64', optional: true },
    },
  },
  auth: {
    sender: 'device',
    fields: { id, device: { kind: 'address' }, nonce: { kind: 'bytes32' }, sig: { kind: 'sig' } },
  },
  ok: { sender: 'hub', fields: { id } },
  open: {
    sender: 'device',
    fields: { id, params: { kind: 'params' } },
  },
  sync: {
    sender: 'either',
    fields: {
      id,
      channelId: { kind: 'channelId' },
      latest: { kind: 'signedState', nullable: true },
      locks: { kind: 'blob', optional: true },
    },
  },
  update: {
    sender: 'either',
    fields: {
      id,
      state: { kind: 'state' },
      sig: { kind: 'sig' },
      route: { kind: 'route', optional: true },
      paymentId: { kind: 'bytes32', optional: true },
      lock: { kind: 'lock', optional: true },
      unlock: { kind: 'unlock', optional: true },
    },
  },
  ack: {
    sender: 'either',
    fields: { id, channelId: { kind: 'channelId' }, version: { kind: 'u64' }, sig: { kind: 'sig' } },
  },
  reject: {
    sender: 'either',
    fields: {
      id,
      channelId: { kind: 'channelId' },
      code: { kind: 'code' },
      message: { kind: 'text' },
      latest: { kind: 'signedState', nullable: true },
    },
  },
  close: {
    sender: 'device',
    fields: { id, state: { kind: 'state' }, sig: { kind: 'sig', optional: true } },
  },
  order: {
    sender: 'device',
    fields: { id, order: { kind: 'order' }, sig: { kind: 'sig' } },
  },
  accepted: {
    sender: 'hub',
    fields: { id, arrival: { kind: 'u64' } },
  },
  clearing: {
    sender: 'hub',
    fields: {
      id,
      round: { kind: 'u64' },
      record: { kind: 'blob' },
      sig: { kind: 'sig' },
      /** A record longer than one blob travels in `parts` frames; this one carries part `part` (0 … parts − 1). */
      part: { kind: 'u32', optional: true },
      parts: { kind: 'u32', optional: true },
    },
  },
  receipt: {
    sender: 'hub',
    fields: {
      id,
      paymentId: { kind: 'bytes32' },
      delivered: { kind: 'bool' },
      hubSig: { kind: 'sig', optional: true },
      /** Only in the answer to an `outcome` query: the route is not finished yet (`delivered` is false then). */
      pending: { kind: 'bool', optional: true },
    },
  },
  outcome: {
    sender: 'device',
    fields: { id, paymentId: { kind: 'bytes32' } },
  },
  stream: {
    sender: 'hub',
    fields: {
      id,
      from: { kind: 'address' },
      paymentId: { kind: 'bytes32' },
      amount: { kind: 'u256' },
      stream: { kind: 'streamTick' },
    },
  },
  round: {
    sender: 'hub',
    fields: { id, round: { kind: 'u64' }, feeBps: { kind: 'u64' } },
  },
  claim: {
    sender: 'either',
    fields: { id, channelId: { kind: 'channelId' }, unlock: { kind: 'reveal' } },
  },
  error: {
    sender: 'either',
    fields: { id, code: { kind: 'code' }, message: { kind: 'text' } },
  },
  /** Wire version 2 (`trickle.v2`): a liveness probe for a device whose socket cannot send WebSocket pings. */
  ping: { sender: 'device', fields: { id } },
  pong: { sender: 'hub', fields: { id } },
} as const satisfies Record<string, MessageSpec>;

// ---------- TypeScript types derived from the schema ----------

/** The TypeScript type each scalar kind decodes to. */
interface ScalarTypes {
  u32: number;
  u64: bigint;
  u256: bigint;
  address: Address;
  bytes32: Bytes32;
  channelId: ChannelId;
  sig: Uint8Array;
  sigHex: SignatureHex;
  bool: boolean;
  code: ErrorCode;
  text: string;
  market: string;
  side: 'bid' | 'ask';
  blob: Uint8Array;
}

/** A payment the hub forwards to another device (carried on the payer's update). */
export interface RouteInstruction {
  /** The device to be paid. */
  readonly to: Address;
  readonly amount: bigint;
  /** Payer-chosen id; the payee sees it, and the hub refuses to route one id twice. */
  readonly paymentId: Bytes32;
  /** Ask the hub for a signed payment receipt (x402 `trickle-channel`), sent with the delivered `receipt` frame. */
  readonly receipt?: ReceiptRequest | undefined;
  /** This payment is a tick of a payment stream: the hub tells the payee with a `stream` frame once delivered. */
  readonly stream?: StreamTick | undefined;
}

/** Stream metadata on a routed payment (see `channel.stream()` in @trickle/client). */
export interface StreamTick {
  /** Payer-chosen stream id. */
  readonly streamId: Bytes32;
  /** The rate in force, in base units per second. */
  readonly ratePerSecond: bigint;
  /** Cumulative amount this stream has paid, including this payment. */
  readonly total: bigint;
  /** The last payment of the stream (stopped or depleted). */
  readonly final: boolean;
}

/** A lock as an `update` adds it: its payer is the update's mover. */
export interface WireLock {
  readonly amount: bigint;
  readonly hash: Bytes32;
  /** Chain timestamp, seconds. */
  readonly expiry: bigint;
}

/** The lock an `update` removes (claimed with `preimage`, or expired without), or a `claim` frame's preimage. */
export interface WireUnlock {
  readonly hash: Bytes32;
  readonly preimage?: Bytes32 | undefined;
}

/** A `claim` frame's hash and the preimage that claims it. */
export interface WireReveal {
  readonly hash: Bytes32;
  readonly preimage: Bytes32;
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

/** The domain type each tuple kind decodes to. */
interface TupleTypes {
  state: State;
  signedState: SignedState;
  params: ChannelParams;
  route: RouteInstruction;
  receiptRequest: ReceiptRequest;
  streamTick: StreamTick;
  lock: WireLock;
  unlock: WireUnlock;
  reveal: WireReveal;
  order: WireOrder;
}

/** The TypeScript type of a kind. */
export type KindType<K extends Kind> = K extends ScalarKind
  ? ScalarTypes[K]
  : K extends TupleKind
    ? TupleTypes[K]
    : never;

type Simplify<T> = { [K in keyof T]: T[K] } & {};
type Elements<K extends TupleKind> = (typeof TUPLE_KINDS)[K][number];
/** The object a tuple kind's elements describe; nilable elements are optional (`undefined` when nil). */
export type TupleShape<K extends TupleKind> = Simplify<
  { -readonly [E in Elements<K> as E extends { nilable: true } ? never : E['name']]: KindType<E['kind']> } & {
    -readonly [E in Elements<K> as E extends { nilable: true } ? E['name'] : never]?: KindType<E['kind']> | undefined;
  }
>;

type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
type Mutable<T> = { -readonly [K in keyof T]: T[K] };
/**
 * Compile-time proof that each tuple kind lists exactly the fields of its domain type, with the same types. If
 * this fails to compile, a domain type (e.g. `State`) and `TUPLE_KINDS` disagree: change both.
 */
export type TupleKindsMatchDomainTypes = { [K in TupleKind]: Equal<Mutable<TupleShape<K>>, Mutable<TupleTypes[K]>> };
const tupleKindsMatch: TupleKindsMatchDomainTypes = {
  state: true,
  signedState: true,
  params: true,
  route: true,
  receiptRequest: true,
  streamTick: true,
  lock: true,
  unlock: true,
  reveal: true,
  order: true,
};
void tupleKindsMatch;
const tupleElementKindsAreKinds: (typeof TUPLE_KINDS)[TupleKind][number]['kind'] extends Kind ? true : false = true;
void tupleElementKindsAreKinds;

type FieldType<F> = F extends { kind: infer K extends Kind }
  ? F extends { nullable: true }
    ? KindType<K> | null
    : KindType<K>
  : never;
type Fields<F> = { readonly [N in keyof F as F[N] extends { optional: true } ? never : N]: FieldType<F[N]> } & {
  readonly [N in keyof F as F[N] extends { optional: true } ? N : never]?: FieldType<F[N]> | undefined;
};

/** The message types' names. */
export type MessageType = keyof typeof MESSAGE_SCHEMA;

/**
 * What a decoded message with a `code` field carries besides its fields: the code as sent when it is not one of this
 * version's (`code` is then `UNKNOWN_CODE`; see the spec's §6). Never encoded.
 */
type DecodedExtras<F> = 'code' extends keyof F ? { readonly wireCode?: string | undefined } : unknown;

/** Every message of the protocol, derived from {@link MESSAGE_SCHEMA}. */
export type Message = {
  [T in MessageType]: Simplify<
    { readonly t: T } & Fields<(typeof MESSAGE_SCHEMA)[T]['fields']> &
      DecodedExtras<(typeof MESSAGE_SCHEMA)[T]['fields']>
  >;
}[MessageType];

/** A message of one type. */
export type MessageOf<T extends MessageType> = Extract<Message, { t: T }>;

/**
 * Every code of a `reject` answering a `claim` (spec §2, §4), with when the payer (the hub, or a device for its own
 * locks) sends it: its checks of the claim, refusals before it reads the channel, and its failures. The `claim` row of
 * the spec's message table lists them from here; tests check the codes the engine and the hub answer against that row.
 */
const CLAIM_REJECTS = {
  BAD_PREIMAGE: 'the preimage does not hash to `unlock.hash`',
  UNKNOWN_LOCK: 'no pending lock of the payer has that hash',
  LOCK_EXPIRED: 'past its expiry, and not revealed on-chain by then',
  CHANNEL_NOT_OPEN: 'the channel is closing or closed',
  WRONG_CHANNEL: 'a channel the hub does not hold for that device',
  RATE_LIMITED: "a claim past the expiry would read the preimage registry beyond the device's share of chain reads",
  STORE_FAILURE:
    "the payer's store failed, its channel frozen until it works again, or, in a cluster, the process the device is connected to could not take the channel's lease: another process holds it, or the database is down",
  DISCONNECTED: 'in a cluster: the device left the hub process while it was taking the channel',
  INTERNAL: 'any other failure of the payer',
} as const satisfies { readonly [C in ErrorCode]?: string };

/**
 * The claim row of the spec's table with its codes: a call marked pure (a `+` of its result would not be), so that
 * bundlers drop the whole table when nothing reads it (a device's browser bundle).
 */
function claimMeaning(): string {
  return (
    "a lock's payee shows the preimage of `unlock.hash`; the payer answers with an `update` that claims the lock, or a `reject` with this id and the claim's `channelId` (`latest` nil when refused before the channel is read; never an `error`, which names no claim): " +
    Object.entries(CLAIM_REJECTS)
      .map(([code, when]) => `\`${code}\` (${when})`)
      .join('; ')
  );
}

/** What each message means, for the spec's §4 table ({@link wireSpecMarkdown}); the codec does not need it. */
export const MESSAGE_MEANINGS: { readonly [T in MessageType]: string } = {
  challenge:
    'first frame on every connection; `minChallengeSeconds`: the hub refuses (`WRONG_CHANNEL`) to open channels with a shorter challenge period, so a device checks it before it deposits',
  auth: "proves the key: sig over EIP-712 `Auth(address device,address hub,bytes32 nonce)` in the hub's domain",
  ok: 'positive reply to `auth`',
  open: "announce a channel the device funded on-chain; reply: `sync` with the hub's latest, or `error`: `CHANNEL_NOT_OPEN` until the hub has seen the deposit (ask again), `WRONG_CHANNEL` for parameters naming another device, hub, chain or adjudicator, or a challenge period below `minChallengeSeconds`, `RATE_LIMITED` past the device's share of the hub's chain reads, or the share of all devices together",
  sync: '"my latest fully signed state is …"; the reply carries the other side\'s; both continue from the newer valid one; `locks`: that state\'s pending locks, the 128-byte committed encodings concatenated in list order (absent when none)',
  update:
    "a proposed state signed by its mover; `route` (device → hub only) asks the hub to forward `amount` to device `to`; `paymentId` from the hub names the routed payment it delivers or refunds; from a device it marks the update's payment as the escrow of the market order with that id (a plain payment: with `route`, `lock` or `unlock` it is `MALFORMED`); at most one of `lock` (the state adds this lock, paid by the mover; with `route`, the hub forwards it as a lock) and `unlock` (the state removes the lock with this hash: the mover's, claimed when `preimage` is set, taken back after its expiry when nil; or, nil `preimage`, the receiver's, given back by the mover, its payee — a cancel, §2)",
  ack: 'countersignature of the state at `version`; cumulative: it acknowledges every version ≤ it',
  reject:
    "the update (or `close`, or `claim`) with this id was refused; `latest` is the refuser's current fully signed state, nil when it refused before reading the channel (one it does not hold, too many updates in flight)",
  close:
    "cooperative close request (`state` final); reply `ack` with the hub's signature; the device then countersigns and submits it on-chain. Without `sig` (what the device client sends) the hub signs first and the device never hands out a final state it signed: a hub that refused it (e.g. `PENDING_CREDITS`) cannot close with it later, after it credited the device",
  order: 'a market order (see §7)',
  accepted: 'order accepted with its arrival sequence',
  clearing:
    "a round's clearing record (see §7); one longer than a blob comes in `parts` frames of the same `round` and `sig`, `part` 0 … `parts` − 1 each carrying the next slice of its bytes",
  receipt:
    "outcome of a routed payment, to its payer (refunded when not delivered); none for a conditional route (`lock`), whose payer learns its outcome from its own lock; `hubSig`: the hub's EIP-712 `Receipt` signature when the route asked for one and it was delivered; with a non-zero `id`, the answer to an `outcome` query, where `pending: true` says the route is not finished yet (its outcome then comes as usual, with `id` 0)",
  outcome:
    "(`trickle.v3`) a payer asks for the outcome of one of its routed payments (after a restart it has no other way to learn it): reply `receipt` with this id — delivered (with `hubSig` when the route carried a receipt request), refunded, or `pending` — or `error` `UNKNOWN_PAYMENT` when the hub holds no route of this id paid by this device (another device's payment gets the same answer as an unknown id, charged as a refused frame); on a `trickle.v1` or `trickle.v2` connection the hub refuses it as an unknown type (`error` `MALFORMED`)",
  stream: 'to a payee: a routed payment from device `from` that is a tick of a payment stream was delivered',
  round: 'the market round now open for orders, and the hub fee; sent after `ok` and after each clearing',
  claim: /* @__PURE__ */ claimMeaning(),
  error: 'a request failed, or the connection is about to close',
  ping: '(`trickle.v2`) liveness probe: a device that has heard nothing for a while and cannot send WebSocket pings (a browser) asks the hub for a sign of life; changes nothing; reply: `pong` with this id at once (see §3, Liveness); a `trickle.v1` hub does not know it',
  pong: '(`trickle.v2`) reply to `ping`',
};

// ---------- the spec's tables ----------

const kindRef = (k: Kind): string => k;

/**
 * The Markdown of `protocol-spec/README.md`'s field-kind table (§3) and message table (§4), from the schema.
 * @returns `{ kinds, messages }`, each a Markdown table ending in a newline
 */
export function wireSpecMarkdown(): { kinds: string; messages: string } {
  let kinds = '| kind | MessagePack |\n|---|---|\n';
  for (const [k, text] of Object.entries(SCALAR_KINDS)) kinds += `| ${k} | ${text} |\n`;
  for (const [k, elements] of Object.entries(TUPLE_KINDS) as [TupleKind, readonly TupleElement[]][]) {
    const items = elements.map(
      (e) => `${e.name}: ${kindRef(e.kind)}${e.nilable ? ' or nil' : ''}${e.positive ? ' (> 0)' : ''}`,
    );
    const trailing = elements.filter((e) => e.trailing).length;
    const note = trailing ? `; the last ${trailing} come all (not all nil) or none` : '';
    const rule = (TUPLE_RULES as Partial<Record<TupleKind, string>>)[k];
    kinds += `| ${k} | array \`[${items.join(', ')}]\`${note}${rule ? `; ${rule}` : ''} |\n`;
  }
  let messages = '| t | sender | fields (besides `id: u32`) | meaning |\n|---|---|---|---|\n';
  for (const [t, spec] of Object.entries(MESSAGE_SCHEMA) as [MessageType, MessageSpec][]) {
    const fields = Object.entries(spec.fields)
      .filter(([name]) => name !== 'id')
      .map(([name, f]) => `${name}${f.optional ? '?' : ''}: ${kindRef(f.kind)}${f.nullable ? ' or nil' : ''}`);
    messages += `| \`${t}\` | ${spec.sender} | ${fields.length ? fields.join(', ') : '—'} | ${MESSAGE_MEANINGS[t]} |\n`;
  }
  return { kinds, messages };
}
