import { connect, type Socket } from 'node:net';
import { request } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import type { ClientChannel } from '@trickle/client/channel';
import { createWorld, type World } from './helpers/harness.js';
import { waitFor } from './helpers/wait.js';
import { RawDevice } from './helpers/raw-device.js';
import { nobleSigner } from '@trickle/protocol/signer';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { getBytes, hashMessage, SigningKey, Wallet } from 'ethers';
import { authDigest, domainSeparator, trickleDomain } from '@trickle/protocol/eip712';
import { decodeFrame, encodeFrame, WIRE_PROTOCOLS, type Message } from '@trickle/protocol/codec';
import type { Signer } from '@trickle/protocol/signer';
import type { Bytes32, ChannelId } from '@trickle/protocol/types';
import { specClaimRejectCodes } from './helpers/spec-claim.js';

const TOKEN = 'operator-token-for-the-edge-test';
/** The hub's MAX_REFUSING_PER_ADDRESS (packages/hub/src/transport.ts; not exported by the package). */
const MAX_REFUSING_PER_ADDRESS = 16;

/**
 * One raw HTTP/1.1 exchange on a fresh socket: what came back until a reply's head did or the hub closed the socket.
 * @throws WaitTimeout when neither happened within `ms`
 */
async function rawHttp(port: number, text: string, ms = 3000): Promise<{ reply: string; closed: boolean }> {
  const socket: Socket = connect(port, '127.0.0.1');
  let reply = '';
  let closed = false;
  socket.on('data', (b) => (reply += b.toString('latin1')));
  socket.on('close', () => (closed = true));
  socket.on('error', () => {}); // a reset by the hub ends the exchange as its close does (`closed`)
  socket.write(text);
  try {
    await waitFor(() => closed || /\r\n\r\n/.test(reply), ms);
  } finally {
    socket.destroy();
  }
  return { reply, closed };
}

/** Connect from `localAddress` (any of 127/8 is loopback) and authenticate as `signer`; rejects with the close code. */
async function authFrom(localAddress: string, signer: Signer, url = hubUrl): Promise<WebSocket> {
  const ws = new WebSocket(url, { localAddress, perMessageDeflate: false });
  ws.binaryType = 'nodebuffer';
  return new Promise((resolve, reject) => {
    ws.on('error', () => {});
    ws.on('close', (code) => reject(new Error(`closed with ${code}`)));
    ws.on('message', (data: Buffer) => {
      const m = decodeFrame(data);
      if (m.t === 'ok') resolve(ws);
      if (m.t !== 'challenge') return;
      const sep = domainSeparator(trickleDomain(m.chainId, m.adjudicator));
      const sig = signer.signDigest(authDigest(sep, signer.address, m.hub, m.nonce));
      ws.send(encodeFrame({ t: 'auth', id: 1, device: signer.address, nonce: m.nonce, sig }));
    });
  });
}
let hubUrl = '';

/** GET a path with headers; status and body. */
function get(port: number, path: string, headers: Record<string, string> = {}) {
  return new Promise<{ status: number; body: string }>((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, headers }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode!, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

/**
 * The hub's network edge as someone on the internet meets it, over real sockets on loopback: hostile HTTP requests to
 * the dashboard, connections that never authenticate, every frame type before authentication, signatures that are not
 * the typed Auth. Every refusal leaves the hub serving a paying device. (The transport's own cases — refused sockets,
 * TLS handshakes, a throwing handler — are in packages/hub/src/transport.test.ts.)
 */
describe('network edge red team', () => {
  let w: World;
  let honest: ClientChannel;

  beforeAll(async () => {
    w = await createWorld({ accounts: 5 });
    await w.startHub({
      limits: { maxConnections: 100, maxHandshakesPerAddress: 64 },
      more: { dashboard: { token: TOKEN } },
    });
    hubUrl = w.hub!.url;
    const c = await w.client(3);
    honest = await c.openChannel({ token: w.token, deposit: 1_000_000n });
  });
  afterAll(async () => w?.close());

  const stillServing = async () => {
    const before = honest.latest.state.paidByDevice;
    await honest.pay(1n);
    expect(honest.latest.state.paidByDevice).toBe(before + 1n);
    expect((await get(w.hub!.port, '/health')).status).toBe(200);
  };

  it('a request target the URL parser refuses (//, scheme-relative) is answered 4xx, and the hub keeps serving', async () => {
    for (const target of ['//', '//x/api/summary', '/\\\\'])
      for (const r of [await rawHttp(w.hub!.port, `GET ${target} HTTP/1.1\r\nHost: h\r\n\r\n`)])
        expect(r.reply).toMatch(/^HTTP\/1\.1 4\d\d/);
    await stillServing();
  });

  it('a malformed percent escape in the dashboard cookie is 401, and the hub keeps serving', async () => {
    const r = await get(w.hub!.port, '/api/summary', { cookie: 'trickle_dashboard=%E0%A4%A' });
    expect(r.status).toBe(401);
    expect(JSON.parse(r.body).error).toBe('UNAUTHORIZED');
    await stillServing();
  });

  it('a WebSocket upgrade on any path but / is 404 without upgrading; a device at / connects and pays', async () => {
    for (const path of ['/dashboard', '/api/events', '/metrics', '/trickle']) {
      const r = await rawHttp(
        w.hub!.port,
        `GET ${path} HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
          'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n',
      );
      // before: 101 and a challenge on every path
      expect(r.reply).toMatch(/^HTTP\/1\.1 404 /);
    }
    const err = await new Promise<Error>((resolve) => {
      const ws = new WebSocket(`${w.hub!.url}dashboard`, { perMessageDeflate: false });
      ws.on('error', resolve);
    });
    expect(err.message).toMatch(/Unexpected server response: 404/);
    await stillServing();
  });

  it('a token guesser is answered 429 RATE_LIMITED with Retry-After after 10 wrong tokens; the operator elsewhere and the devices are served', async () => {
    const from = (localAddress: string, token: string) =>
      new Promise<{ status: number; retryAfter: unknown; error: unknown }>((resolve, reject) => {
        const req = request(
          {
            host: '127.0.0.1',
            port: w.hub!.port,
            path: '/api/summary',
            localAddress,
            agent: false,
            headers: { authorization: `Bearer ${token}` },
          },
          (res) => {
            let body = '';
            res.setEncoding('utf8').on('data', (c: string) => (body += c));
            res.on('end', () =>
              resolve({
                status: res.statusCode!,
                retryAfter: res.headers['retry-after'],
                error: JSON.parse(body).error,
              }),
            );
          },
        );
        req.on('error', reject);
        req.end();
      });
    const guesses = [];
    for (let i = 0; i < 30; i++) guesses.push(await from('127.0.0.7', `guess-${i}-guess-guess-guess`));
    // before: 30 × 401, at whatever rate the guesser sent them
    expect(guesses.slice(0, 10).every((g) => g.status === 401 && g.error === 'UNAUTHORIZED')).toBe(true);
    expect(guesses.slice(10).every((g) => g.status === 429 && g.error === 'RATE_LIMITED')).toBe(true);
    expect(Number(guesses[29]!.retryAfter)).toBeGreaterThan(0);
    expect((await from('127.0.0.7', TOKEN)).status).toBe(429);
    expect((await from('127.0.0.8', TOKEN)).status).toBe(200);
    await stillServing();
  });

  it('one address holding connections that never authenticate gets 64 of them; a device from another still connects and pays', async () => {
    // 127.0.0.2 is loopback too (127/8): a second source address on this machine
    const sockets = Array.from({ length: 120 }, () => {
      const ws = new WebSocket(w.hub!.url, { localAddress: '127.0.0.2', perMessageDeflate: false });
      const s = { ws, challenged: false, code: undefined as number | undefined };
      ws.on('message', () => (s.challenged = true));
      ws.on('close', (code) => (s.code = code));
      ws.on('error', () => {});
      return s;
    });
    try {
      await waitFor(() => sockets.every((s) => s.challenged || s.code !== undefined), 20_000);
      expect(sockets.filter((s) => s.challenged && s.code === undefined).length).toBe(64);
      // the rest refused: told 1013 while the address has fewer than MAX_REFUSING_PER_ADDRESS refusals pending, else
      // dropped at their TCP connection (1006)
      expect(sockets.filter((s) => s.code === 1013 || s.code === 1006).length).toBe(56);
      expect(sockets.filter((s) => s.code === 1013).length).toBeGreaterThan(0);
      // before: the 99 left of maxConnections were all held, and this device was refused 1013 until they timed out
      const c = await w.client(2, { connectTimeoutMs: 5_000 });
      const ch = await c.openChannel({ token: w.token, deposit: 1_000n });
      await ch.pay(7n);
      expect(w.hub!.channels.get(ch.channelId)!.latest.state.paidByDevice).toBe(7n);
    } finally {
      for (const s of sockets) s.ws.terminate();
    }
    await stillServing();
  }, 60_000);

  it('upgrade requests that never finish count from their TCP connection: one address holds 64 and 16 refusals, the rest are dropped at once; a device from another connects and pays, /metrics answers', async () => {
    const half = 'GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n'; // and never the rest (a slowloris)
    const dribblers = Array.from({ length: 200 }, () => {
      const socket = connect({ port: w.hub!.port, host: '127.0.0.1', localAddress: '127.0.0.9' });
      const d = { socket, read: 0, closed: false };
      socket.on('data', (b) => (d.read += b.length));
      socket.on('close', () => (d.closed = true));
      socket.on('error', () => {});
      socket.write(half);
      return d;
    });
    try {
      await waitFor(() => dribblers.filter((d) => d.closed).length >= 200 - 64 - MAX_REFUSING_PER_ADDRESS, 30_000);
      // before: none dropped until handshakeTimeoutMs, then all 200 (each held a descriptor until then)
      expect(dribblers.filter((d) => d.closed && d.read === 0).length).toBe(200 - 64 - MAX_REFUSING_PER_ADDRESS);
      const c = await w.client(4, { connectTimeoutMs: 5_000 });
      const ch = await c.openChannel({ token: w.token, deposit: 1_000n });
      await ch.pay(5n);
      expect(w.hub!.channels.get(ch.channelId)!.latest.state.paidByDevice).toBe(5n);
      await c.disconnect();
      const metrics = await get(w.hub!.port, '/metrics');
      expect(metrics.status).toBe(200);
      expect(metrics.body).toMatch(/trickle_disconnects_total\{reason="server-full"\}/);
    } finally {
      for (const d of dribblers) d.socket.destroy();
    }
    await stillServing();
  }, 60_000);

  it('throwaway keys count like connections that never authenticate, until their device holds a channel here', async () => {
    const fresh = () => nobleSigner(`0x${randomBytes(32).toString('hex')}`);
    const held: WebSocket[] = [];
    try {
      // 127.0.0.1: 63 authenticated throwaway keys; then a new device (the 64th) opens its channel and stops counting
      for (let i = 0; i < 63; i++) held.push(await authFrom('127.0.0.1', fresh()));
      const c = await w.client(4, { connectTimeoutMs: 5_000 });
      await c.openChannel({ token: w.token, deposit: 1_000n });
      held.push(await authFrom('127.0.0.1', fresh())); // the 64th again
      // before: authenticated connections never counted, so one address held every slot with fresh keys
      await expect(authFrom('127.0.0.1', fresh())).rejects.toThrow('1013');
      // 127.0.0.6: 63 throwaway keys; a device with a channel here stops counting at authentication
      await c.disconnect();
      for (const ws of held.splice(0)) ws.terminate(); // room under maxConnections (100)
      await waitFor(() => w.hub!.connectedDevices().length <= 3);
      for (let i = 0; i < 63; i++) held.push(await authFrom('127.0.0.6', fresh()));
      held.push(await authFrom('127.0.0.6', nobleSigner(w.chain.accounts[4]!)));
      held.push(await authFrom('127.0.0.6', fresh())); // the 64th
      await expect(authFrom('127.0.0.6', fresh())).rejects.toThrow('1013');
    } finally {
      for (const ws of held) ws.terminate();
    }
    await stillServing();
  }, 60_000);

  it('frames ws refuses on an authenticated connection — compressed (RSV1), a bad close code, a reserved opcode, unmasked — close it with 1002, and the hub serves on', async () => {
    const before = honest.latest;
    const frames = [
      Buffer.from([0xc2, 0x80, 0, 0, 0, 0]), // binary with RSV1 (permessage-deflate was never negotiated)
      Buffer.from([0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe7]), // close with code 999
      Buffer.from([0x83, 0x80, 0, 0, 0, 0]), // reserved opcode 3
      Buffer.from([0x82, 0x01, 0x00]), // unmasked binary frame from a client
    ];
    for (const frame of frames) {
      const d = await RawDevice.connect(w.hub!.url, nobleSigner(`0x${randomBytes(32).toString('hex')}`));
      (d.ws as unknown as { _socket: import('node:net').Socket })._socket.write(frame);
      expect(await d.closed()).toBe(1002);
    }
    expect(w.hub!.channels.get(honest.channelId)!.latest).toEqual(before);
    await stillServing();
  });

  it('a claim on a channel the hub does not hold for the device is answered with a reject (WRONG_CHANNEL) that names the claim and the channel, as spec §4 says, not an error frame', async () => {
    const d = await RawDevice.connect(w.hub!.url, nobleSigner(`0x${randomBytes(32).toString('hex')}`));
    try {
      const unlock = { hash: `0x${'11'.repeat(32)}` as Bytes32, preimage: `0x${'22'.repeat(32)}` as Bytes32 };
      // another device's channel, then one that does not exist
      for (const channelId of [honest.channelId, `0x${'33'.repeat(32)}` as ChannelId]) {
        d.send({ t: 'claim', id: 77, channelId, unlock });
        // before: { t: 'error', id: 77, code: 'WRONG_CHANNEL' }, which names no channel: a device's client dropped it
        // and its claim() waited (for ever while the refusal stood: it shows a claim again only at a reconnect)
        const answer = await d.next((m) => m.id === 77);
        expect(answer).toMatchObject({ t: 'reject', id: 77, channelId, code: 'WRONG_CHANNEL', latest: null });
      }
      expect(specClaimRejectCodes(), "the claim row of the spec's message table").toContain('WRONG_CHANNEL');
      expect(d.inbox.filter((m) => m.t === 'error')).toEqual([]);
    } finally {
      d.close();
    }
    await stillServing();
  });

  describe('before authentication', () => {
    const vectors = (
      JSON.parse(readFileSync(new URL('../protocol-spec/vectors/frames.json', import.meta.url), 'utf8')) as {
        vectors: { message: { t: string }; frame: string }[];
      }
    ).vectors;
    const key = () => nobleSigner(`0x${randomBytes(32).toString('hex')}`);
    const refused = async (d: RawDevice) => {
      expect(((await d.next((m) => m.t === 'error')) as { code: string }).code).toBe('UNAUTHORIZED');
      expect(await d.closed()).toBe(1008);
    };
    const auth = (d: RawDevice, by: Signer, digest: Uint8Array): Message => ({
      t: 'auth',
      id: 1,
      device: by.address,
      nonce: d.challenge.nonce,
      sig: by.signDigest(digest),
    });
    const sep = () => domainSeparator(trickleDomain(w.chain.chainId, w.adjudicator));

    it('every message type of the spec vectors, sent first, is refused UNAUTHORIZED with 1008', async () => {
      const before = honest.latest;
      for (const v of vectors) {
        // at the newest wire version, which the vectors are of (on a trickle.v1 connection `outcome` is an unknown
        // type: MALFORMED, as a hub of that version answers)
        const d = await RawDevice.connect(w.hub!.url, undefined, WIRE_PROTOCOLS);
        d.sendRaw(getBytes(v.frame));
        await refused(d);
      }
      expect(w.hub!.channels.get(honest.channelId)!.latest).toEqual(before);
      await stillServing();
    });

    it('an auth signed for another hub’s address, or a signature over anything but the typed Auth, is refused', async () => {
      const hex = `0x${randomBytes(32).toString('hex')}` as const;
      const k = nobleSigner(hex);
      // A Trickle signer refuses to sign anything but Trickle's typed messages: the raw key signs the others here.
      const rawSign = (digest: Uint8Array) => getBytes(new SigningKey(hex).sign(digest).serialized);
      const other = Wallet.createRandom().address as typeof k.address;
      const sigs = [
        (d: RawDevice) => k.signDigest(authDigest(sep(), k.address, other, d.challenge.nonce)), // another hub
        (d: RawDevice) => rawSign(getBytes(hashMessage(getBytes(d.challenge.nonce)))), // personal_sign of the nonce
        (d: RawDevice) => rawSign(getBytes(d.challenge.nonce)), // the nonce itself as a digest
      ];
      for (const sig of sigs) {
        const d = await RawDevice.connect(w.hub!.url);
        d.send({ t: 'auth', id: 1, device: k.address, nonce: d.challenge.nonce, sig: sig(d) });
        await refused(d);
      }
      // the same key's signature over the typed Auth is taken
      const d = await RawDevice.connect(w.hub!.url);
      d.send(auth(d, k, authDigest(sep(), k.address, w.hub!.address, d.challenge.nonce)));
      await d.next((m) => m.t === 'ok');
      d.close();
    });

    it('after a failed auth nothing more is read: a valid auth right behind it does not authenticate', async () => {
      const k = key();
      const d = await RawDevice.connect(w.hub!.url);
      d.send(auth(d, k, authDigest(sep(), k.address, w.hub!.address, `0x${'00'.repeat(32)}` as Bytes32)));
      d.send(auth(d, k, authDigest(sep(), k.address, w.hub!.address, d.challenge.nonce)));
      await refused(d);
      expect(d.inbox.some((m) => m.t === 'ok')).toBe(false);
      expect(w.hub!.connectedDevices()).not.toContain(k.address);
    });
  });
});
