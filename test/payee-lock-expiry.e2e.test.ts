import { randomBytes } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { WebSocket } from 'ws';
import { decodeFrame, type Message } from '@trickle/protocol/codec';
import { hashPreimage } from '@trickle/protocol/locks';
import type { Bytes32 } from '@trickle/protocol/types';
import type { ConditionalPayment } from '@trickle/client/channel';
import { createWorld, type World } from './helpers/harness.js';
import { waitFor } from './helpers/wait.js';

/**
 * A payee's least time left on a lock toward it (`minLockSeconds`, default 30): a preimage shown off-chain is the
 * goods given away, so a device takes a hub's lock only with time left to reveal the preimage on-chain should the hub
 * not countersign its claim, and shows a preimage only then. A hub that adds a lock expiring in seconds (here a real
 * hub whose margin is 1 s, forwarding a payer's short lock) is refused `EXPIRY_TOO_SHORT` before the device holds it;
 * a claim made too late is refused with nothing stored or sent. Real hub, chain and clients on loopback.
 */
const CHALLENGE = 2n; // the hub locks toward the payee with expiry T − (2 + 1) s
const key = () => `0x${randomBytes(32).toString('hex')}` as Bytes32;

describe('a payee and a lock too short to claim safely', () => {
  let w: World;
  let frames: Message[] = [];
  beforeAll(async () => {
    w = await createWorld({ accounts: 6 });
    await w.startHub({ limits: { lockMarginSeconds: 1 } });
  }, 60_000);
  afterAll(async () => w?.close());
  afterEach(() => vi.restoreAllMocks());

  /** Every frame sent on a WebSocket in this process (devices and hub) from now on. */
  const watchFrames = () => {
    frames = [];
    const send = WebSocket.prototype.send;
    vi.spyOn(WebSocket.prototype, 'send').mockImplementation(function (this: WebSocket, data: unknown, ...rest) {
      try {
        frames.push(decodeFrame(data as Uint8Array));
      } catch {
        /* not a frame of ours */
      }
      return (send as (...a: unknown[]) => void).call(this, data, ...rest);
    });
  };

  async function route(a: number, b: number) {
    const payer = await w.client(a);
    const payee = await w.client(b);
    const ach = await payer.openChannel({ token: w.token, deposit: 1_000_000n, challengeDuration: CHALLENGE });
    const bch = await payee.openChannel({ token: w.token, deposit: 1_000_000n, challengeDuration: CHALLENGE });
    await w.hubDeposit(bch.channelId, 1_000_000n);
    const offers: ConditionalPayment[] = [];
    bch.onConditionalPayment((p) => offers.push(p));
    return { payee, ach, bch, offers };
  }

  it('a hub lock with 17 s left is refused EXPIRY_TOO_SHORT before the payee holds it, and the payer’s lock comes back at once; one with 57 s left is taken and claimed', async () => {
    const { payee, ach, bch, offers } = await route(2, 3);
    watchFrames();
    const short = key();
    const handle = ach.pay(700n, { to: payee.address, lock: { hash: hashPreimage(short), expiresIn: 20 } });
    await handle.locked;
    await expect(handle.result).resolves.toEqual({ status: 'refunded' }); // given back, not at its expiry
    expect(Number(handle.expiresAt) - Math.floor(Date.now() / 1000)).toBeGreaterThan(5);
    expect(frames).toContainEqual(expect.objectContaining({ t: 'reject', code: 'EXPIRY_TOO_SHORT' }));
    expect(offers).toEqual([]);
    expect(bch.locks).toEqual([]);
    expect(bch.latest.state.paidByHub).toBe(0n);

    const long = key();
    const paid = ach.pay(700n, { to: payee.address, lock: { hash: hashPreimage(long), expiresIn: 60 } });
    await paid.locked;
    await waitFor(() => offers.length === 1);
    await offers[0]!.claim(long);
    await expect(paid.result).resolves.toEqual({ status: 'claimed', preimage: long });
    await waitFor(() => bch.latest.state.paidByHub === 700n);
  });

  it('a claim with less than 30 s left shows nothing and stores nothing (EXPIRY_TOO_SHORT); in time it is claimed', async () => {
    const { payee, ach, bch, offers } = await route(4, 5);
    const k = key();
    const handle = ach.pay(500n, { to: payee.address, lock: { hash: hashPreimage(k), expiresIn: 60 } });
    await handle.locked;
    await waitFor(() => offers.length === 1);
    const left = Number(offers[0]!.expiresAt) - Math.floor(Date.now() / 1000);
    expect(left > 30 && left <= 60).toBe(true);
    const before = bch.record;

    watchFrames();
    const real = Date.now.bind(Date);
    const later = vi.spyOn(Date, 'now').mockImplementation(() => real() + (left - 10) * 1000); // 10 s left
    try {
      await expect(offers[0]!.claim(k)).rejects.toMatchObject({ code: 'EXPIRY_TOO_SHORT' });
    } finally {
      later.mockRestore();
    }
    expect(bch.record.preimages ?? []).toEqual(before.preimages ?? []);
    expect(frames.filter((f) => f.t === 'claim')).toEqual([]);
    expect(bch.latest).toEqual(before.latest);

    await offers[0]!.claim(k);
    await expect(handle.result).resolves.toEqual({ status: 'claimed', preimage: k });
    await waitFor(() => bch.latest.state.paidByHub === 500n);
  });
});
