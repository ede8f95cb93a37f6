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

const TOKEN = 'operator-token-for-the-edge-test';

/** One raw HTTP/1.1 exchange on a fresh socket: what came back before the hub closed it (or `ms` passed). */
async function rawHttp(port: number, text: string, ms = 3000): Promise<{ reply: string; closed: boolean }> {
  const socket: Socket = connect(port, '127.0.0.1');
  let reply = '';
  let closed = false;
  socket.on('data', (b) => (reply += b.toString('latin1')));
  socket.on('close', () => (closed = true));
  socket.on('error', () => {});
  socket.write(text);
  await waitFor(() => closed || /\r\n\r\n/.test(reply), ms).catch(() => {});
  socket.destroy();
  return { reply, closed };
}

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
 * The hub's network edge as someone on the internet meets it: hostile HTTP requests to the dashboard and the
 * WebSocket endpoint, over real sockets on loopback. Every refusal leaves the hub serving a paying device.
 */
describe('network edge red team', () => {
  let w: World;
  let honest: ClientChannel;

  beforeAll(async () => {
    w = await createWorld({ accounts: 4 });
    await w.startHub({
      limits: { maxConnections: 100, maxHandshakesPerAddress: 64 },
      more: { dashboard: { token: TOKEN } },
    });
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
      expect(sockets.filter((s) => s.code === 1013).length).toBe(56);
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

  it('a connection that authenticated no longer counts toward its address’s handshakes: 80 devices from one address', async () => {
    const devices: RawDevice[] = [];
    try {
      for (let i = 0; i < 80; i++)
        devices.push(await RawDevice.connect(w.hub!.url, nobleSigner(`0x${randomBytes(32).toString('hex')}`)));
      expect(devices.every((d) => d.closeCode === undefined)).toBe(true);
    } finally {
      for (const d of devices) d.close();
    }
  });
});
