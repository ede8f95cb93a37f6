import { Agent, request, type IncomingHttpHeaders } from 'node:http';
import { connect } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openLmdbStore } from '@trickle/hub/store/lmdb';
import { DEFAULT_HUB_LIMITS } from '@trickle/hub/options';
import type { ClientChannel } from '@trickle/client/channel';
import { createWorld, type World } from './helpers/harness.js';
import { flakyHubStore } from './helpers/flaky-store.js';
import { waitFor } from './helpers/wait.js';

interface Answer {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly body: string;
}

/** One GET over real HTTP, from `localAddress` (Linux routes all of 127/8 on lo), through `agent` when given. */
function get(port: number, path: string, o: { localAddress?: string; agent?: Agent } = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, ...o }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () =>
        resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }),
      );
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

/**
 * The hub's plain HTTP surface under a client that scrapes as fast as it can over keep-alive connections: past its
 * address's request budget (httpRequestsPerSecond / httpRequestBurst, at their defaults) it is answered 429 with
 * Retry-After and Connection: close, counted in trickle_http_rate_limited_total, while a device behind the same address
 * keeps paying over its WebSocket (frames are not charged) and another address's /health is answered 200.
 */
describe('plain HTTP request budget per address', () => {
  let w: World;
  let ch: ClientChannel;
  beforeAll(async () => {
    w = await createWorld({ accounts: 3 });
    await w.startHub();
    const c = await w.client(2);
    ch = await c.openChannel({ token: w.token, deposit: 1_000_000n });
  });
  afterAll(async () => w?.close());

  it('one client hammering /metrics over keep-alive gets 429s; a device on the same address keeps being acked; /health from another address is 200', async () => {
    const port = w.hub!.port;
    const agent = new Agent({ keepAlive: true, maxSockets: 4 });
    const statuses = new Map<number, number>();
    let limited: Answer | undefined;
    let hammering = true;
    const hammer = async () => {
      while (hammering) {
        const a = await get(port, '/metrics', { agent });
        statuses.set(a.status, (statuses.get(a.status) ?? 0) + 1);
        if (a.status === 429) limited ??= a;
      }
    };
    const hammers = Array.from({ length: 4 }, hammer);
    let acked = 0;
    try {
      // The hammer is past its burst before long; the device pays on meanwhile, and so does /health from elsewhere.
      await waitFor(() => (statuses.get(429) ?? 0) >= 100, 20_000);
      for (let k = 0; k < 100; k++) {
        await ch.pay(1n);
        acked++;
      }
      const other = await get(port, '/health', { localAddress: '127.0.0.2' });
      expect(other.status).toBe(200);
      expect(JSON.parse(other.body)).toMatchObject({ status: 'ok' });
      // still limited after all that
      expect((await get(port, '/health', { agent })).status).toBe(429);
    } finally {
      hammering = false;
      await Promise.allSettled(hammers);
      agent.destroy();
    }
    expect(acked).toBe(100);
    expect(ch.latest.state.paidByDevice).toBe(100n);
    // Its first requests, up to the burst, were served.
    expect(statuses.get(200)).toBeGreaterThanOrEqual(DEFAULT_HUB_LIMITS.httpRequestBurst);
    expect(limited!.headers['connection']).toBe('close');
    expect(Number(limited!.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    expect(JSON.parse(limited!.body)).toMatchObject({ error: 'RATE_LIMITED' });
    // /metrics renders at most once per metricsCacheMs: the next rendering counts every 429 answered
    await new Promise((r) => setTimeout(r, DEFAULT_HUB_LIMITS.metricsCacheMs + 100));
    const scrape = await get(port, '/metrics', { localAddress: '127.0.0.3' });
    expect(scrape.status).toBe(200);
    const counted = Number(/^trickle_http_rate_limited_total (\d+)$/m.exec(scrape.body)?.[1]);
    expect(counted).toBe(statuses.get(429)! + 1);
  });
});

/**
 * `/health`'s status code, which load balancers and readiness probes read alone: 503 (same JSON body) while the
 * process cannot take payments — its store fails every commit, or it is draining — and 200 again once the store takes
 * writes. Before, it was 200 throughout.
 */
describe('/health is 503 while the hub cannot take payments', () => {
  let w: World;
  const failing = { on: false };
  let ch: ClientChannel;
  beforeAll(async () => {
    w = await createWorld({ accounts: 3 });
    await w.startHub({
      more: { store: flakyHubStore(openLmdbStore({ path: join(w.dir, 'flaky-hub') }), () => failing.on) },
    });
    const c = await w.client(2);
    ch = await c.openChannel({ token: w.token, deposit: 1_000_000n });
  });
  afterAll(async () => w?.close());

  it('a store failing every commit (a full disk) is 503 with store: failing; 200 again once it takes writes', async () => {
    const health = () => get(w.hub!.port, '/health');
    await ch.pay(5n);
    const before = await health();
    expect(before.status).toBe(200);
    expect(JSON.parse(before.body)).toMatchObject({ status: 'ok', store: 'ok' });

    failing.on = true;
    await expect(ch.pay(7n)).rejects.toMatchObject({ code: 'STORE_FAILURE' });
    const during = await health();
    expect(during.status).toBe(503);
    expect(JSON.parse(during.body)).toMatchObject({ status: 'degraded', store: 'failing', hub: w.hub!.address });

    failing.on = false; // room on the disk again: the frozen channel's probe write lands
    await waitFor(() => !w.hub!.channels.isFrozen(ch.channelId), 10_000);
    const after = await health();
    expect(after.status).toBe(200);
    expect(JSON.parse(after.body)).toMatchObject({ status: 'ok', store: 'ok' });
    await ch.pay(11n);
    expect(ch.latest.state.paidByDevice).toBe(16n);
  });

  it('a draining hub answers /health 503 with draining: true to a request it is reading', async () => {
    // The hub stops listening (and closes idle keep-alive sockets) as it starts draining; a request whose headers are
    // on their way is still read and answered.
    const socket = connect({ host: '127.0.0.1', port: w.hub!.port });
    let reply = '';
    socket.setEncoding('latin1').on('data', (d: string) => (reply += d));
    socket.on('error', () => {});
    await new Promise((r) => socket.once('connect', r));
    socket.write('GET /health HTTP/1.1\r\nHost: hub\r\n');
    await new Promise((r) => setTimeout(r, 50));
    const closing = w.hub!.close();
    socket.write('\r\n');
    await waitFor(() => reply.includes('}'), 5_000);
    socket.destroy();
    await closing;
    expect(reply).toMatch(/^HTTP\/1\.1 503 /);
    // (the body comes chunked: its fields are read as text)
    expect(reply).toContain('"status":"degraded"');
    expect(reply).toContain('"draining":true');
  });
});
