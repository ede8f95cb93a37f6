// A hand-driven device for hostile-input tests: speaks the wire protocol frame by frame.
import { WebSocket } from 'ws';
import { decodeFrame, encodeFrame, type Message } from '@trickle/protocol/codec';
import { authDigest, domainSeparator, stateDigest, trickleDomain } from '@trickle/protocol/eip712';
import { nobleSigner, type Signer } from '@trickle/protocol/signer';
import type { ChannelId } from '@trickle/protocol/types';
import type { ClientOptions } from '@trickle/client/client';
import type { World } from './harness.js';
import { WaitTimeout } from './wait.js';

/** What {@link RawDevice.next} throws when the hub closed the socket before a matching frame came. */
export class SocketClosed extends Error {
  override readonly name = 'SocketClosed';
  constructor(readonly code: number) {
    super(`closed with ${code}`);
  }
}

export class RawDevice {
  readonly inbox: Message[] = [];
  closeCode: number | undefined;
  /** The hub's `challenge` frame (the first on every connection). */
  challenge!: Extract<Message, { t: 'challenge' }>;
  #waiters: (() => void)[] = [];
  #signer: Signer | undefined;
  private constructor(readonly ws: WebSocket) {
    ws.on('message', (data: Buffer) => {
      try {
        this.inbox.push(decodeFrame(data));
      } catch {
        /* ignore */
      }
      for (const w of this.#waiters.splice(0)) w();
    });
    ws.on('close', (code) => {
      this.closeCode = code;
      for (const w of this.#waiters.splice(0)) w();
    });
  }

  /**
   * @param protocols - the wire versions offered (`Sec-WebSocket-Protocol`); none by default, which a hub takes as
   *   `trickle.v1` (a firmware client written from the spec's first version)
   */
  static async connect(url: string, signer?: Signer, protocols: readonly string[] = []): Promise<RawDevice> {
    const ws = new WebSocket(url, [...protocols], { perMessageDeflate: false });
    const d = new RawDevice(ws);
    await new Promise((r, j) => {
      ws.once('open', r);
      ws.once('error', j);
    });
    const challenge = (await d.next((m) => m.t === 'challenge')) as Extract<Message, { t: 'challenge' }>;
    d.challenge = challenge;
    d.#signer = signer;
    if (signer) {
      d.sendAuth(signer);
      await d.next((m) => m.t === 'ok');
    }
    return d;
  }

  /** Answer the hub's challenge: an `auth` frame signed by `signer` (request id 1). */
  sendAuth(signer: Signer): void {
    const c = this.challenge;
    const sep = domainSeparator(trickleDomain(c.chainId, c.adjudicator));
    this.send({
      t: 'auth',
      id: 1,
      device: signer.address,
      nonce: c.nonce,
      sig: signer.signDigest(authDigest(sep, signer.address, c.hub, c.nonce)),
    });
  }

  send(msg: Message): void {
    this.ws.send(encodeFrame(msg));
  }

  sendRaw(bytes: Uint8Array | string): void {
    this.ws.send(bytes);
  }

  /** Wait for (and remove) the first message matching `pred`. @throws SocketClosed, WaitTimeout */
  async next(pred: (m: Message) => boolean, timeoutMs = 5000): Promise<Message> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      const i = this.inbox.findIndex(pred);
      if (i >= 0) return this.inbox.splice(i, 1)[0]!;
      if (this.closeCode !== undefined) throw new SocketClosed(this.closeCode);
      if (Date.now() > until) throw new WaitTimeout('timed out waiting for a message');
      await new Promise<void>((r) => {
        this.#waiters.push(r);
        setTimeout(r, 50);
      });
    }
  }

  /**
   * Refuse every update the hub proposes on `channelId` (a payee that will not be paid this way: `reject`
   * INVALID_ARGUMENT), telling `seen` of each first, until none comes for `idleMs` or the socket closes.
   */
  async refuseUpdates(
    channelId: ChannelId,
    seen: (u: Extract<Message, { t: 'update' }>) => void = () => {},
    idleMs = 30_000,
  ): Promise<void> {
    for (;;) {
      let m: Message;
      try {
        m = await this.next((x) => x.t === 'update', idleMs);
      } catch (e) {
        if (e instanceof WaitTimeout || e instanceof SocketClosed) return; // the two ends this loop waits for
        throw e;
      }
      if (m.t !== 'update') return;
      seen(m);
      this.send({ t: 'reject', id: m.id, channelId, code: 'INVALID_ARGUMENT', message: 'no', latest: null });
    }
  }

  /**
   * Refuse the hub's next update (a credit or a lock), keeping it (`seen`), then countersign the one after it: the
   * hub's state of the latest counters one version up, with which the refused one is void (see the hub's unsettled
   * states). @returns the refused update
   */
  async refuseThenCountersign(channelId: ChannelId, timeoutMs = 10_000): Promise<Extract<Message, { t: 'update' }>> {
    const refused = (await this.next((x) => x.t === 'update', timeoutMs)) as Extract<Message, { t: 'update' }>;
    this.send({ t: 'reject', id: refused.id, channelId, code: 'INVALID_ARGUMENT', message: 'no', latest: null });
    const bump = (await this.next((x) => x.t === 'update', timeoutMs)) as Extract<Message, { t: 'update' }>;
    const sep = domainSeparator(trickleDomain(this.challenge.chainId, this.challenge.adjudicator));
    const sig = this.#signer!.signDigest(stateDigest(sep, bump.state));
    this.send({ t: 'ack', id: bump.id, channelId, version: bump.state.version, sig });
    return refused;
  }

  async closed(timeoutMs = 5000): Promise<number> {
    const until = Date.now() + timeoutMs;
    while (this.closeCode === undefined) {
      if (Date.now() > until) throw new Error('not closed');
      await new Promise((r) => setTimeout(r, 20));
    }
    return this.closeCode;
  }

  close(): void {
    this.ws.close();
  }
}

/**
 * A payer (account `a`) and a payee (account `b`) with channels, the hub's money in the payee's, and the payee's
 * client replaced by a raw device on its key, synced: what the payee answers to the hub's credits is the test's.
 * @param payerOptions - the payer's client options
 */
export async function payeeAsRawDevice(w: World, a: number, b: number, payerOptions?: Partial<ClientOptions>) {
  const payer = await w.client(a, payerOptions);
  const ach = await payer.openChannel({ token: w.token, deposit: 100_000n });
  const payee = await w.client(b);
  const bch = await payee.openChannel({ token: w.token, deposit: 1_000n, challengeDuration: 60n });
  await w.hubDeposit(bch.channelId, 50_000n);
  await payee.disconnect();
  const raw = await RawDevice.connect(w.hub!.url, nobleSigner(w.chain.accounts[b]!));
  raw.send({ t: 'sync', id: 2, channelId: bch.channelId, latest: null });
  await raw.next((m) => m.t === 'sync' && m.id === 2);
  return { payer, ach, payee, bch, raw };
}
