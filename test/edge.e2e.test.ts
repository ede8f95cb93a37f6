import { connect, type Socket } from 'node:net';
import { request } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import type { ClientChannel } from '@trickle/client/channel';
import { createWorld, type World } from './helpers/harness.js';
import { waitFor } from './helpers/wait.js';

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
    await w.startHub({ limits: { handshakeTimeoutMs: 2_000 }, more: { dashboard: { token: TOKEN } } });
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
});
