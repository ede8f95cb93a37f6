import { once } from 'node:events';
import { createServer, connect, type AddressInfo, type Server, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import type { ClientChannel } from '@trickle/client/channel';
import type { TrickleClient } from '@trickle/client/client';
import {
  clearingDigestV2,
  hashClearing,
  joinClearing,
  publishedClearingDigest,
  type PublishedClearing,
} from '@trickle/market';
import { decodeFrame, encodeFrame, type Message } from '@trickle/protocol/codec';
import { authDigest, domainSeparator, trickleDomain } from '@trickle/protocol/eip712';
import { parseJson } from '@trickle/protocol/json';
import { nobleSigner, nobleVerifier } from '@trickle/protocol/signer';
import type { Bytes32 } from '@trickle/protocol/types';
import { createWorld, type World } from './helpers/harness.js';
import { waitFor } from './helpers/wait.js';

/**
 * Wire version 3 beside devices of version 2 (firmware is updated slowly): a new hub signs a v2 device's clearings the
 * old way (`Clearing(uint64 round,bytes32 record)`) and refuses its `outcome` as a v2 hub does.
 */

/**
 * A TCP relay to the hub that rewrites the upgrade request's offered wire versions to `offer`: the client behind it is
 * seen by the hub as a device that offers only those (the first chunk holds the request's headers).
 */
async function downgradeProxy(target: string, offer: string): Promise<{ url: string; close(): Promise<void> }> {
  const { hostname, port } = new URL(target);
  const sockets = new Set<Socket>();
  const server: Server = createServer((down) => {
    const up = connect(Number(port), hostname);
    sockets.add(down).add(up);
    let head = Buffer.alloc(0);
    const onHead = (chunk: Buffer) => {
      head = Buffer.concat([head, chunk]);
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) return;
      down.off('data', onHead);
      const text = head.subarray(0, end).toString('latin1');
      const rewritten = text.replace(/^sec-websocket-protocol:.*$/im, `Sec-WebSocket-Protocol: ${offer}`);
      up.write(Buffer.concat([Buffer.from(rewritten, 'latin1'), head.subarray(end)]));
      down.pipe(up);
    };
    down.on('data', onHead);
    up.pipe(down);
    for (const s of [down, up]) {
      s.on('error', () => (s === down ? up : down).destroy());
      s.on('close', () => {
        sockets.delete(s);
        (s === down ? up : down).destroy();
      });
    }
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    url: `ws://127.0.0.1:${(server.address() as AddressInfo).port}/`,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(r));
    },
  };
}

/** The clearing frames a client receives, joined, with the hub's signature. */
function clearings(c: TrickleClient): Map<bigint, { published: PublishedClearing; sig: Uint8Array }> {
  const seen = new Map<bigint, { published: PublishedClearing; sig: Uint8Array }>();
  let held: Parameters<typeof joinClearing>[0];
  c.onMessage((m) => {
    if (m.t !== 'clearing') return;
    const joined = joinClearing(held, m);
    held = joined.held;
    if (joined.record) seen.set(m.round, { published: parseJson(new TextDecoder().decode(joined.record)), sig: m.sig });
  });
  return seen;
}

describe('wire version 3 beside version 2 devices', () => {
  let w: World;
  let proxy: Awaited<ReturnType<typeof downgradeProxy>>;
  beforeAll(async () => {
    w = await createWorld();
    await w.startHub({ market: { roundMs: 60_000, feeBps: 0n } });
    proxy = await downgradeProxy(w.hub!.url, 'trickle.v2, trickle.v1');
  });
  afterAll(async () => {
    await proxy?.close();
    await w?.close();
  });

  it('a trickle.v2 device takes part in a round and gets its credit, signed the old way; a v3 device the new way', async () => {
    const old = await w.client(2, { url: proxy.url });
    const now = await w.client(3);
    expect(old.wireVersion).toBe(2);
    expect(now.wireVersion).toBe(3);
    const oldSeen = clearings(old);
    const nowSeen = clearings(now);
    const reported: unknown[] = [];
    old.market.onError((e) => reported.push(e));
    const chOld: ClientChannel = await old.openChannel({ token: w.token, deposit: 50_000_000n });
    const chNow: ClientChannel = await now.openChannel({ token: w.token, deposit: 50_000_000n });
    await w.hubDeposit(chOld.channelId, 20_000_000n);
    await w.hubDeposit(chNow.channelId, 20_000_000n);
    await old.market.ready();
    const r = old.market.round;
    await old.market.submitOrder(chOld, { market: 'kwh', side: 'bid', quantity: 4n, price: 130_000n, round: r });
    await now.market.submitOrder(chNow, { market: 'kwh', side: 'ask', quantity: 4n, price: 110_000n, round: r });
    // An escrow without an order: refunded by the round, in the old device's credit (its refunds unsigned to it).
    const orphan = `0x${'0b'.repeat(32)}` as Bytes32;
    await chOld.pay(4_321n, { escrowFor: orphan });
    const before = chOld.latest.state;
    await w.hub!.market!.closeRound();
    // Without the old signature the v2 device ignores the clearing and refuses the credit: its channel stays behind.
    await waitFor(() => chOld.latest.state.round >= r && chNow.latest.state.round >= r, 10_000);
    expect(old.market.pending()).toEqual([]);
    expect(reported).toEqual([]);

    const domain = trickleDomain(w.chain.chainId, w.adjudicator);
    const hub = w.hub!.address;
    const o = oldSeen.get(r)!;
    expect(o.published.refunds.map((x) => x.orderId)).toContain(orphan);
    // Its credit: what its bid's escrow paid above the fill (4 at the cleared price, 120,000) and the refund.
    expect(o.published.record.markets.find((m) => m.market === 'kwh')?.price).toBe(120_000n);
    expect(chOld.latest.state.paidByHub - before.paidByHub).toBe(4n * (130_000n - 120_000n) + 4_321n);
    // What the previous client verified: the record only.
    expect(nobleVerifier.recoverAddress(clearingDigestV2(domain, r, hashClearing(o.published.record)), o.sig)).toBe(
      hub,
    );
    expect(nobleVerifier.recoverAddress(publishedClearingDigest(domain, r, o.published), o.sig)).not.toBe(hub);
    const n = nowSeen.get(r)!;
    expect(nobleVerifier.recoverAddress(publishedClearingDigest(domain, r, n.published), n.sig)).toBe(hub);
    expect(nobleVerifier.recoverAddress(clearingDigestV2(domain, r, hashClearing(n.published.record)), n.sig)).not.toBe(
      hub,
    );
  });

  /** A raw device offering `protocols` (none: version 1): authenticated, it asks for an unknown payment's outcome. */
  async function askOutcome(protocols: string[]): Promise<{ protocol: string; answer: Message }> {
    const ws = new WebSocket(w.hub!.url, protocols, { perMessageDeflate: false });
    const frames: Message[] = [];
    const waiters: (() => void)[] = [];
    ws.on('message', (data: Buffer) => {
      frames.push(decodeFrame(data));
      for (const f of waiters.splice(0)) f();
    });
    const next = async (pred: (m: Message) => boolean): Promise<Message> => {
      for (;;) {
        const i = frames.findIndex(pred);
        if (i >= 0) return frames.splice(i, 1)[0]!;
        await new Promise<void>((r) => waiters.push(r));
      }
    };
    try {
      const challenge = (await next((m) => m.t === 'challenge')) as Extract<Message, { t: 'challenge' }>;
      const device = nobleSigner(`0x${'7c'.repeat(32)}`);
      const sep = domainSeparator(trickleDomain(challenge.chainId, challenge.adjudicator));
      ws.send(
        encodeFrame({
          t: 'auth',
          id: 1,
          device: device.address,
          nonce: challenge.nonce,
          sig: device.signDigest(authDigest(sep, device.address, challenge.hub, challenge.nonce)),
        }),
      );
      await next((m) => m.t === 'ok');
      ws.send(encodeFrame({ t: 'outcome', id: 9, paymentId: `0x${'ab'.repeat(32)}` as Bytes32 }));
      return { protocol: ws.protocol, answer: await next((m) => m.id === 9) };
    } finally {
      ws.close();
    }
  }

  it("refuses a v1/v2 session's outcome query as MALFORMED, as an older hub does; answers a v3 session's", async () => {
    const v2 = await askOutcome(['trickle.v2']);
    expect(v2.protocol).toBe('trickle.v2');
    expect(v2.answer).toMatchObject({ t: 'error', code: 'MALFORMED' });
    const v1 = await askOutcome([]);
    expect(v1.protocol).toBe('');
    expect(v1.answer).toMatchObject({ t: 'error', code: 'MALFORMED' });
    const v3 = await askOutcome(['trickle.v3', 'trickle.v2']);
    expect(v3.protocol).toBe('trickle.v3');
    expect(v3.answer).toMatchObject({ t: 'error', code: 'UNKNOWN_PAYMENT' }); // the query's answer for an unknown id
  });
});
