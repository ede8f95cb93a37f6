/**
 * Test fixture (not built): a device engine and a hub engine joined through the wire codec, every frame through
 * `encodeFrame` / `decodeFrame` as the shells send it, with what each side's steps asked for (effects), the frames on
 * their way to each side (inboxes) and one clock for both.
 *
 * The engine tests here run it on these sources; the adjudicator tests (contracts/test) run it on the built
 * `@trickle/protocol`, as users do, by passing that build's functions as `kit` (contracts/test/engine-pair.ts). The
 * pair is typed by its kit: the branded types of a build are not those of the sources.
 */
import { channelContext, zeroState } from './channel.js';
import { decodeFrame, encodeFrame, type Message } from './codec.js';
import { stateDigest } from './eip712.js';
import { createEngineChannel, step, type EngineChannel, type EngineEvent, type EngineRestore } from './engine.js';
import { deviceRules } from './engine-device.js';
import { hubRules } from './engine-hub.js';
import { decodeLocks } from './locks.js';
import { nobleVerifier } from './signer.js';
import type { Role } from './types.js';
import { deviceKey, hubKey, params } from './engine.fixture.js';

/** The protocol functions the pair runs on, from these sources. */
const sourceKit = {
  channelContext,
  zeroState,
  decodeFrame,
  encodeFrame,
  stateDigest,
  createEngineChannel,
  step,
  deviceRules,
  hubRules,
  decodeLocks,
  nobleVerifier,
};
type SourceKit = typeof sourceKit;
/** The same functions from any build of the protocol (its own branded types). */
export type EngineKit = {
  readonly [N in keyof SourceKit]: SourceKit[N] extends (...args: any[]) => unknown ? (...args: any[]) => any : unknown;
};

type Channel<K extends EngineKit> = ReturnType<K['createEngineChannel']>;
type Restore<K extends EngineKit> = Parameters<K['createEngineChannel']>[0];
type Event<K extends EngineKit> = Parameters<K['step']>[1];
type Effect<K extends EngineKit> = ReturnType<K['step']>['effects'][number];
type Crypto<K extends EngineKit> = Parameters<K['step']>[2]['crypto'];
type Frame<K extends EngineKit> = ReturnType<K['decodeFrame']>;
type Context<K extends EngineKit> = ReturnType<K['channelContext']>;

export interface EnginePairOptions<K extends EngineKit> {
  /** The protocol's functions (default: these sources). */
  readonly kit?: K;
  /** The channel (default: engine.fixture.ts's `params`). */
  readonly params?: Parameters<K['channelContext']>[0];
  /** Its deposits (default: 1,000,000 each). */
  readonly funding?: Parameters<K['channelContext']>[1];
  /** Each side's key (default: engine.fixture.ts's `deviceKey`, `hubKey`). */
  readonly keys?: Readonly<Record<Role, { signDigest(digest: Uint8Array): Uint8Array }>>;
  /** The clock, in seconds (default 0); `nowSec` may be moved later. */
  readonly nowSec?: bigint;
  /** What both new channels are created with beyond a zero state (e.g. `config`). */
  readonly restore?: Partial<Restore<K>>;
  /** How many frames `flush` delivers before it gives up (default 200). */
  readonly maxSteps?: number;
}

/**
 * The engine event a decoded frame is for its receiver, or undefined for a frame the engine is not handed.
 * @param kit - whose `decodeLocks` reads a sync frame's lock list (default: these sources)
 */
export function toEvent(m: Message, kit: Pick<SourceKit, 'decodeLocks'> = sourceKit): EngineEvent | undefined {
  switch (m.t) {
    case 'update':
      return {
        type: 'peer-updates',
        updates: [{ id: m.id, state: m.state, sig: m.sig, route: m.route, lock: m.lock, unlock: m.unlock }],
      };
    case 'ack':
      return { type: 'peer-ack', id: m.id, version: m.version, sig: m.sig };
    case 'reject':
      return { type: 'peer-reject', id: m.id, code: m.code, message: m.message };
    case 'claim':
      return { type: 'peer-claim', id: m.id, hash: m.unlock.hash, preimage: m.unlock.preimage };
    case 'sync':
      return { type: 'peer-sync', id: m.id, latest: m.latest, locks: m.locks ? kit.decodeLocks(m.locks) : undefined };
    default:
      return undefined;
  }
}

/** Device and hub engines joined through the wire codec (both connected once built). */
export class EnginePair<K extends EngineKit = SourceKit> {
  readonly ctx: Context<K>;
  /** The channel's EIP-712 domain separator. */
  readonly sep: Uint8Array;
  readonly crypto: Record<Role, Crypto<K>>;
  ch!: Record<Role, Channel<K>>;
  /** The channel of each side's last step that asked for a persist: what its shell wrote. */
  written!: Record<Role, Channel<K>>;
  effects: Record<Role, Effect<K>[]> = { device: [], hub: [] };
  /** Frames on their way to each side. */
  inbox: Record<Role, Frame<K>[]> = { device: [], hub: [] };
  nowSec: bigint;
  readonly #kit: SourceKit;
  readonly #restore: Partial<EngineRestore>;
  readonly #maxSteps: number;

  constructor(options: EnginePairOptions<K> = {}) {
    const kit = (options.kit ?? sourceKit) as unknown as SourceKit;
    this.#kit = kit;
    this.#restore = (options.restore ?? {}) as Partial<EngineRestore>;
    this.#maxSteps = options.maxSteps ?? 200;
    this.nowSec = options.nowSec ?? 0n;
    const ctx = kit.channelContext(
      (options.params as typeof params | undefined) ?? params,
      options.funding ?? { device: 1_000_000n, hub: 1_000_000n },
    );
    this.ctx = ctx as Context<K>;
    this.sep = ctx.separator;
    const keys = options.keys ?? { device: deviceKey, hub: hubKey };
    const crypto = (role: Role) => ({
      digest: (s: EngineChannel['latest']['state']) => kit.stateDigest(ctx.separator, s),
      sign: (d: Uint8Array) => keys[role].signDigest(d),
      recover: (d: Uint8Array, sig: Uint8Array) => kit.nobleVerifier.recoverAddress(d, sig),
    });
    this.crypto = { device: crypto('device'), hub: crypto('hub') } as Record<Role, Crypto<K>>;
    const self = this.#self;
    self.ch = { device: this.#create('device'), hub: this.#create('hub') };
    self.written = { ...self.ch };
    this.apply('device', { type: 'connected' } as Event<K>);
    this.apply('hub', { type: 'connected' } as Event<K>);
  }

  /** This pair as its source types (the kit's are the same shapes under other brands). */
  get #self(): EnginePair<SourceKit> {
    return this as unknown as EnginePair<SourceKit>;
  }

  /** What a fresh `role` channel is created from (a zero state, the options' `restore`), then `restore`. */
  #restoreOf(role: Role, restore?: Partial<EngineRestore>): EngineRestore {
    const ctx = this.#self.ctx;
    return {
      role,
      ctx,
      latest: { state: this.#kit.zeroState(ctx.channelId) },
      signedVersion: 0n,
      needsSync: false,
      ...this.#restore,
      ...restore,
    };
  }

  #create(role: Role, restore?: Partial<EngineRestore>): EngineChannel {
    return this.#kit.createEngineChannel(
      this.#restoreOf(role, restore),
      role === 'device' ? this.#kit.deviceRules : this.#kit.hubRules,
    );
  }

  /** One step of `role`'s engine: its sends go, through the codec, to the other side's inbox. */
  apply(role: Role, ev: Event<K>): Channel<K> {
    const self = this.#self;
    const r = this.#kit.step(self.ch[role], ev as EngineEvent, {
      crypto: self.crypto[role],
      now: Number(this.nowSec) * 1000,
    });
    self.ch[role] = r.channel;
    if (r.effects.some((e) => e.type === 'persist')) self.written[role] = r.channel;
    for (const e of r.effects) {
      self.effects[role].push(e);
      if (e.type === 'send')
        self.inbox[role === 'device' ? 'hub' : 'device'].push(this.#kit.decodeFrame(this.#kit.encodeFrame(e.msg)));
    }
    return r.channel as Channel<K>;
  }

  /** Deliver frames both ways until quiet; `hubTakes` sees each frame for the hub first and may keep it. */
  flush(hubTakes?: (m: Frame<K>) => boolean): void {
    const self = this.#self;
    for (let i = 0; i < this.#maxSteps; i++) {
      const role: Role | undefined =
        self.inbox.hub.length > 0 ? 'hub' : self.inbox.device.length > 0 ? 'device' : undefined;
      if (!role) return;
      const m = self.inbox[role].shift()!;
      if (role === 'hub' && hubTakes?.(m as Frame<K>)) continue;
      const ev = toEvent(m, this.#kit);
      if (ev) self.apply(role, ev);
    }
    throw new Error('no quiescence');
  }

  /**
   * `role`'s process dies (what was in flight, both ways, is lost) and starts again from `restore` (over a fresh
   * channel's fields); the other side sees it disconnect and connect again.
   */
  restart(role: Role, restore: Partial<Restore<K>>): void {
    const self = this.#self;
    self.ch[role] = this.#create(role, restore as Partial<EngineRestore>);
    const other: Role = role === 'device' ? 'hub' : 'device';
    self.inbox = { device: [], hub: [] };
    self.apply(other, { type: 'disconnected' });
    self.apply(other, { type: 'connected' });
    self.apply(role, { type: 'connected' });
  }

  /** The codes this side refused or answered a caller with, in order. */
  codes(role: Role): string[] {
    return this.#self.effects[role].flatMap((e) => (e.type === 'refused' || e.type === 'reject' ? [e.error.code] : []));
  }

  /** The codes this side refused or answered a caller with (each once). */
  distinctCodes(role: Role): string[] {
    return [...new Set(this.codes(role))];
  }
}
