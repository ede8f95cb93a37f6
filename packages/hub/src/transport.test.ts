import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { pino, type Logger } from 'pino';
import { WebSocket } from 'ws';
import { FD_HEADROOM, connectionsOverFdLimit, parseOpenFilesLimit } from './fd-limit.js';
import { createHubMetrics, type HubMetrics } from './metrics.js';
import { resolveHubLimits, type HubLimits } from './options.js';
import {
  MAX_REFUSING,
  MAX_REFUSING_PER_ADDRESS,
  RequestBudget,
  addressKey,
  startTransport,
  type Transport,
} from './transport.js';

const UPGRADE =
  'GET / HTTP/1.1\r\nHost: hub\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
  'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n';

/** A raw TCP peer: what it has read, and whether the hub closed it. */
function peer(port: number, text: string, localAddress?: string) {
  const socket: Socket = connect({ port, host: '127.0.0.1', ...(localAddress === undefined ? {} : { localAddress }) });
  const p = { socket, reply: Buffer.alloc(0), closed: false };
  socket.on('data', (b) => (p.reply = Buffer.concat([p.reply, b])));
  socket.on('close', () => (p.closed = true));
  socket.on('error', () => {});
  socket.write(text);
  return p;
}

async function until(check: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** A request from `from`, sent again while the hub drops it with nothing read (a slot it frees may not be free yet). */
async function answered(port: number, text: string, from: string, peers: ReturnType<typeof peer>[]) {
  for (;;) {
    const p = peer(port, text, from);
    peers.push(p);
    await until(() => p.closed || p.reply.includes('\r\n\r\n'));
    if (p.reply.length > 0) return p.reply.toString('latin1');
  }
}

describe('transport edge', () => {
  let t: Transport | undefined;
  const peers: ReturnType<typeof peer>[] = [];
  afterEach(async () => {
    for (const p of peers.splice(0)) p.socket.destroy();
    await t?.close();
    t = undefined;
  });

  const start = async (
    limits: Partial<HubLimits>,
    onRequest?: () => boolean,
    tls?: { cert: string; key: string },
    more: { metrics?: HubMetrics; logger?: Logger; onConnection?: (ws: WebSocket) => void } = {},
  ) => {
    t = await startTransport({
      tls,
      port: 0,
      host: '127.0.0.1',
      limits: resolveHubLimits(limits),
      metrics: more.metrics ?? createHubMetrics({ defaultMetrics: false }),
      logger: more.logger ?? pino({ level: 'silent' }),
      onConnection: more.onConnection ?? (() => {}),
      health: () => ({ serving: true, body: { status: 'ok' } }),
      onRequest,
    });
    return t;
  };

  it('a throwing request handler is answered 500 and the server keeps serving', async () => {
    const { port } = await start({}, () => {
      throw new Error('boom');
    });
    const p = peer(port, 'GET /x HTTP/1.1\r\nHost: hub\r\n\r\n');
    peers.push(p);
    await until(() => p.reply.includes('\r\n\r\n'));
    expect(p.reply.toString('latin1')).toMatch(/^HTTP\/1\.1 500/);
  });

  it('a message held open with tiny fragments, or a frame read a byte at a time, is closed 1008 near what a message of maxFrameBytes needs; such a message in 4 KiB fragments is taken', async () => {
    const messages: Buffer[] = [];
    const { port } = await start({ maxFrameBytes: 64 * 1024 }, undefined, undefined, {
      onConnection: (ws) => ws.on('message', (data: Buffer) => messages.push(data)),
    });
    const url = `ws://127.0.0.1:${port}/`;
    const open = async () => {
      const ws = new WebSocket(url, { perMessageDeflate: false });
      ws.on('error', () => {});
      await new Promise((r) => ws.once('open', r));
      return ws;
    };
    // a message of maxFrameBytes sent 4 KiB at a time, as a library writing through a small buffer does
    const honest = await open();
    for (let i = 0; i < 16; i++) honest.send(Buffer.alloc(4096, i), { binary: true, fin: i === 15 });
    await until(() => messages.length === 1);
    expect(messages[0]!.length).toBe(64 * 1024);
    honest.close();

    // 16,000 one-byte fragments and no end (112 KB sent; before: held, some 1.7 MB of heap, for as long as it idled)
    const hoarder = await open();
    const closed = new Promise<number>((r) => hoarder.once('close', (c) => r(c)));
    for (let i = 0; i < 16_000; i++) hoarder.send(Buffer.of(1), { binary: true, fin: false });
    expect(await closed).toBe(1008);

    // a frame of 60 KiB announced, its bytes sent one per socket read (before: each read held, up to 262,144)
    const dribbler = peer(port, UPGRADE);
    peers.push(dribbler);
    dribbler.socket.setNoDelay(true);
    await until(() => dribbler.reply.includes('\r\n\r\n'));
    dribbler.socket.write(Buffer.from([0x82, 0x80 | 126, 0xf0, 0x00, 0, 0, 0, 0]));
    for (let i = 0; i < 600 && !dribbler.closed; i++) {
      dribbler.socket.write(Buffer.of(1));
      await new Promise((r) => setTimeout(r, 1));
    }
    await until(() => dribbler.closed);
    const frame = dribbler.reply.subarray(dribbler.reply.indexOf('\r\n\r\n') + 4);
    expect(frame[0]).toBe(0x88);
    expect(frame.readUInt16BE(2)).toBe(1008);
    expect(messages.length).toBe(1);
  });

  it('a refused connection that sends a bad frame instead of closing does not end the process', async () => {
    const { port } = await start({ maxConnections: 1 });
    const held = peer(port, UPGRADE);
    peers.push(held);
    await until(() => held.reply.includes('\r\n\r\n'));
    const refused = peer(port, UPGRADE);
    peers.push(refused);
    await until(() => refused.reply.length > 0);
    expect(refused.reply.toString('latin1')).toMatch(/^HTTP\/1\.1 101/);
    let uncaught: unknown;
    const listener = (e: unknown) => (uncaught = e);
    const before = process.listeners('uncaughtException');
    process.removeAllListeners('uncaughtException');
    process.on('uncaughtException', listener);
    try {
      refused.socket.write(Buffer.from([0x83, 0x80, 0, 0, 0, 0])); // reserved opcode 3, masked, empty
      await until(() => refused.closed);
      await new Promise((r) => setTimeout(r, 50));
    } finally {
      process.removeListener('uncaughtException', listener);
      for (const l of before) process.on('uncaughtException', l);
    }
    expect(uncaught).toBeUndefined();
  });

  it('refused connections that never answer the close are at most MAX_REFUSING; past that they are dropped', async () => {
    const { port } = await start({ maxConnections: 1, closeGraceMs: 600_000 });
    const held = peer(port, UPGRADE);
    peers.push(held);
    await until(() => held.reply.includes('\r\n\r\n'));
    const refused: ReturnType<typeof peer>[] = [];
    for (let i = 0; i < MAX_REFUSING + 40; i++) {
      // from many addresses of 127/8 (loopback): each holds at most MAX_REFUSING_PER_ADDRESS refusals
      const from = Math.floor(i / MAX_REFUSING_PER_ADDRESS);
      refused.push(peer(port, UPGRADE, `127.0.${10 + (from >> 8)}.${from & 255}`));
      if (i % 100 === 99) await until(() => refused.every((p) => p.closed || p.reply.length > 4), 20_000);
    }
    peers.push(...refused);
    await until(() => refused.every((p) => p.closed || p.reply.length > 4), 20_000);
    const upgraded = refused.filter((p) => p.reply.toString('latin1').startsWith('HTTP/1.1 101'));
    // each upgraded one read the 1013 close and keeps its socket open (it never sends its own close frame)
    expect(upgraded.length).toBe(MAX_REFUSING);
    expect(refused.filter((p) => p.closed && p.reply.length === 0).length).toBe(40);
  }, 60_000);

  it('sockets still sending their upgrade request count toward maxHandshakesPerAddress from their TCP connection: past the limit (and a few refusals) an address is dropped at once, another connects', async () => {
    const { port } = await start({ maxHandshakesPerAddress: 8, handshakeTimeoutMs: 600_000 });
    // 40 upgrades from one address, each stopped before the end of its headers (a slowloris)
    const half = UPGRADE.slice(0, 40);
    const dribblers = Array.from({ length: 40 }, () => peer(port, half, '127.0.0.3'));
    peers.push(...dribblers);
    // before: all 40 held (each until handshakeTimeoutMs), and this never came
    await until(() => dribblers.filter((p) => p.closed).length === 40 - 8 - MAX_REFUSING_PER_ADDRESS);
    // the 8 counted and the refusals waiting to be told why; the rest dropped with nothing read
    expect(dribblers.filter((p) => p.closed && p.reply.length === 0).length).toBe(40 - 8 - MAX_REFUSING_PER_ADDRESS);
    // those finishing their request: the 8 are taken (101), the refusals told 1013 (the WebSocket close)
    const open = dribblers.filter((p) => !p.closed);
    for (const p of open) p.socket.write(UPGRADE.slice(40));
    const end = (p: (typeof open)[number]) => p.reply.indexOf('\r\n\r\n');
    await until(() => open.every((p) => end(p) > 0));
    expect(open.every((p) => /^HTTP\/1\.1 101/.test(p.reply.toString('latin1')))).toBe(true);
    const closeFrame = (p: (typeof open)[number]) => p.reply.subarray(end(p) + 4);
    await until(() => open.filter((p) => closeFrame(p).length >= 4).length === MAX_REFUSING_PER_ADDRESS);
    for (const p of open.filter((p) => closeFrame(p).length >= 4)) {
      expect(closeFrame(p)[0]).toBe(0x88);
      expect(closeFrame(p).readUInt16BE(2)).toBe(1013);
      expect(closeFrame(p).subarray(4).toString('utf8')).toMatch(/too many new connections from your address/);
    }
    // another address upgrades, and /health answers
    const other = peer(port, UPGRADE, '127.0.0.4');
    const health = peer(port, 'GET /health HTTP/1.1\r\nHost: hub\r\n\r\n', '127.0.0.4');
    peers.push(other, health);
    await until(() => other.reply.includes('\r\n\r\n') && health.reply.includes('\r\n\r\n'));
    expect(other.reply.toString('latin1')).toMatch(/^HTTP\/1\.1 101/);
    expect(health.reply.toString('latin1')).toMatch(/^HTTP\/1\.1 200/);
    // the refused ones gone (their slots freed), a plain HTTP request from the full address is 503, not served
    const refused = open.filter((p) => closeFrame(p).length >= 4);
    for (const p of refused) p.socket.destroy();
    await until(() => refused.every((p) => p.closed));
    const over = await answered(port, 'GET /health HTTP/1.1\r\nHost: hub\r\n\r\n', '127.0.0.3', peers);
    expect(over).toMatch(/^HTTP\/1\.1 503/);
    expect(over).toMatch(/LIMIT_EXCEEDED/);
    // the dribblers gone, the address is served again
    for (const p of dribblers) p.socket.destroy();
    await until(() => dribblers.every((p) => p.closed));
    // (the next answer: a 503 while the hub has not yet seen them close)
    let again = '';
    do again = await answered(port, 'GET /health HTTP/1.1\r\nHost: hub\r\n\r\n', '127.0.0.3', peers);
    while (/^HTTP\/1\.1 503/.test(again));
    expect(again).toMatch(/^HTTP\/1\.1 200/);
  });

  it('sockets still sending their upgrade request count toward maxConnections: a full server refuses the next upgrade with 1013', async () => {
    const { port } = await start({ maxConnections: 5, handshakeTimeoutMs: 600_000 });
    const half = UPGRADE.slice(0, 40);
    const dribblers = Array.from({ length: 5 }, (_, i) => peer(port, half, `127.0.1.${i + 1}`));
    peers.push(...dribblers);
    const ws = new WebSocket(`ws://127.0.0.1:${port}/`, { perMessageDeflate: false });
    // before: upgraded and taken (the dribblers counted for nothing)
    const code = await new Promise<number>((r) => ws.on('close', (c) => r(c)));
    expect(code).toBe(1013);
    expect(dribblers.some((p) => p.closed)).toBe(false);
  });

  it('an HTTP socket kept alive idle between requests is closed to make room for a connection its address (or a full hub) would refuse; one mid-request is not', async () => {
    const metrics = createHubMetrics({ defaultMetrics: false });
    const { port } = await start(
      { maxHandshakesPerAddress: 3, maxConnections: 3, handshakeTimeoutMs: 600_000 },
      undefined,
      undefined,
      {
        metrics,
      },
    );
    const health = 'GET /health HTTP/1.1\r\nHost: hub\r\n\r\n';
    // 127.0.0.5: two scrapers kept alive after their answer, one request still being sent
    const kept = [peer(port, health, '127.0.0.5'), peer(port, health, '127.0.0.5')];
    const sending = peer(port, health.slice(0, 10), '127.0.0.5');
    peers.push(...kept, sending);
    await until(() => kept.every((p) => p.reply.includes('\r\n\r\n')));
    expect(kept.some((p) => p.closed)).toBe(false);
    // a device from the same address: before, refused 1013 until a scraper's keep-alive ended
    const device = peer(port, UPGRADE, '127.0.0.5');
    peers.push(device);
    await until(() => device.reply.includes('\r\n\r\n'));
    expect(device.reply.toString('latin1')).toMatch(/^HTTP\/1\.1 101/);
    await until(() => kept.filter((p) => p.closed).length === 1);
    expect(sending.closed).toBe(false);
    // the hub full (3 open), a connection from elsewhere takes the other idle one's slot
    const elsewhere = peer(port, UPGRADE, '127.0.0.6');
    peers.push(elsewhere);
    await until(() => elsewhere.reply.includes('\r\n\r\n'));
    expect(elsewhere.reply.toString('latin1')).toMatch(/^HTTP\/1\.1 101/);
    await until(() => kept.every((p) => p.closed));
    // nothing idle left: the next one is refused, the request being sent is still served
    const refused = new WebSocket(`ws://127.0.0.1:${port}/`, { perMessageDeflate: false });
    expect(await new Promise<number>((r) => refused.on('close', (c) => r(c)))).toBe(1013);
    sending.socket.write(health.slice(10));
    await until(() => sending.reply.includes('\r\n\r\n'));
    expect(sending.reply.toString('latin1')).toMatch(/^HTTP\/1\.1 200/);
    expect(await metrics.registry.metrics()).toMatch(/^trickle_disconnects_total\{reason="idle-reclaimed"\} 2$/m);
  });

  it('a keep-alive socket upgraded after HTTP requests (a reverse proxy reusing a pooled socket) is a connection, never reclaimed as idle', async () => {
    const metrics = createHubMetrics({ defaultMetrics: false });
    const { port } = await start({ maxHandshakesPerAddress: 1, maxConnections: 1 }, undefined, undefined, { metrics });
    // the proxy's pooled socket: a health check answered, then a device's upgrade on the same socket
    const proxy = peer(port, 'GET /health HTTP/1.1\r\nHost: hub\r\n\r\n', '127.0.0.7');
    peers.push(proxy);
    await until(() => proxy.reply.includes('\r\n\r\n'));
    expect(proxy.reply.toString('latin1')).toMatch(/^HTTP\/1\.1 200/);
    proxy.reply = Buffer.alloc(0);
    proxy.socket.write(UPGRADE);
    await until(() => proxy.reply.includes('\r\n\r\n'));
    expect(proxy.reply.toString('latin1')).toMatch(/^HTTP\/1\.1 101/);
    // the hub full: the next connection is refused 1013, the device's stays (before: the device's was closed for it)
    const fate = (ws: WebSocket) =>
      new Promise<number | 'reclaimed'>((r) => {
        proxy.socket.once('close', () => r('reclaimed'));
        ws.on('close', (c) => r(c));
      });
    expect(await fate(new WebSocket(`ws://127.0.0.1:${port}/`, { perMessageDeflate: false }))).toBe(1013);
    // and from the proxy's address too
    expect(
      await fate(new WebSocket(`ws://127.0.0.1:${port}/`, { perMessageDeflate: false, localAddress: '127.0.0.7' })),
    ).toBe(1013);
    expect(proxy.closed).toBe(false);
    expect(await metrics.registry.metrics()).not.toMatch(/reason="idle-reclaimed"/);
  });

  it('over TLS, a socket that never finishes the TLS handshake is dropped at handshakeTimeoutMs', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'trickle-transport-'));
    try {
      // prettier-ignore
      execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
        '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem'), '-days', '1', '-subj', '/CN=127.0.0.1'], { stdio: 'ignore' });
      const cert = readFileSync(join(dir, 'cert.pem'), 'utf8');
      const key = readFileSync(join(dir, 'key.pem'), 'utf8');
      const { port } = await start({ handshakeTimeoutMs: 500 }, undefined, { cert, key });
      const started = Date.now();
      const silent = peer(port, '');
      const hello = peer(port, '\x16\x03\x01\x02\x00'); // the start of a ClientHello, never finished
      peers.push(silent, hello);
      // Node's own TLS handshake timeout is 120 s
      await until(() => silent.closed && hello.closed, 5000);
      expect(Date.now() - started).toBeLessThan(5000);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('takes the WebSocket upgrade only at /: any other path is 404 without upgrading, and takes no connection slot', async () => {
    const metrics = createHubMetrics({ defaultMetrics: false });
    const { port } = await start({ maxConnections: 1 }, undefined, undefined, { metrics });
    for (const path of ['/dashboard', '/metrics', '/api/events', '/x/', '//', '/%2F', '*']) {
      const p = peer(port, UPGRADE.replace('GET / ', `GET ${path} `));
      peers.push(p);
      await until(() => p.closed);
      // before: every path was upgraded (101) and the connection took the one slot
      expect(p.reply.toString('latin1')).toMatch(/^HTTP\/1\.1 404 Not Found\r\n/);
      expect(p.reply.toString('latin1')).not.toMatch(/sec-websocket-accept/i);
    }
    expect(await metrics.registry.getSingleMetricAsString('trickle_disconnects_total')).toMatch(
      /^trickle_disconnects_total\{reason="wrong-path"\} 7$/m,
    );
    // the documented endpoint, with or without a query string, still upgrades (and the slot was free for it)
    const ws = new WebSocket(`ws://127.0.0.1:${port}/?device=1`, { perMessageDeflate: false });
    const opened = await new Promise<boolean>((r) => {
      ws.on('open', () => r(true));
      ws.on('error', () => r(false));
    });
    ws.terminate();
    expect(opened).toBe(true);
    const plain = peer(port, UPGRADE);
    peers.push(plain);
    await until(() => plain.reply.includes('\r\n\r\n'));
    expect(plain.reply.toString('latin1')).toMatch(/^HTTP\/1\.1 101/);
  });

  it('/metrics renders once per metricsCacheMs: scrapes in between, concurrent ones too, get that text', async () => {
    const metrics = createHubMetrics(); // with the process metrics, as a hub has them
    let renders = 0;
    const render = metrics.registry.metrics.bind(metrics.registry);
    metrics.registry.metrics = () => {
      renders++;
      return render();
    };
    const { port } = await start({ metricsCacheMs: 60_000 }, undefined, undefined, { metrics });
    const scrape = async () => {
      const res = await fetch(`http://127.0.0.1:${port}/metrics`);
      expect(res.headers.get('content-type')).toBe(metrics.registry.contentType);
      return res.text();
    };
    const first = await scrape();
    expect(first).toMatch(/^trickle_channels 0$/m);
    expect(first).toMatch(/^# TYPE trickle_hub_process_cpu_seconds_total counter$/m);
    metrics.channels.set(5);
    const texts = await Promise.all(Array.from({ length: 50 }, scrape));
    // before: 51 renderings, the later ones with trickle_channels 5
    expect(renders).toBe(1);
    for (const text of texts) expect(text).toBe(first);
  });

  it('/metrics renders anew once metricsCacheMs has passed', async () => {
    const metrics = createHubMetrics({ defaultMetrics: false });
    const { port } = await start({ metricsCacheMs: 1 }, undefined, undefined, { metrics });
    const scrape = async () => (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    expect(await scrape()).toMatch(/^trickle_channels 0$/m);
    metrics.channels.set(5);
    await new Promise((r) => setTimeout(r, 5));
    expect(await scrape()).toMatch(/^trickle_channels 5$/m);
  });

  it('a request whose headers exceed what Node reads gets 431 with a typed body, and the server keeps serving', async () => {
    const { port } = await start({});
    const huge = peer(
      port,
      `GET /api/summary HTTP/1.1\r\nHost: hub\r\nAuthorization: Bearer ${'x'.repeat(20_000)}\r\n\r\n`,
    );
    const bad = peer(port, 'NOT HTTP AT ALL\r\n\r\n');
    peers.push(huge, bad);
    await until(() => huge.closed && bad.closed);
    const [head, body] = huge.reply.toString('latin1').split('\r\n\r\n');
    expect(head).toMatch(/^HTTP\/1\.1 431 /);
    // before: Node's bare 431 with no body
    expect(JSON.parse(body!)).toEqual({ error: 'LIMIT_EXCEEDED', message: 'request headers too large' });
    expect(bad.reply.toString('latin1')).toMatch(/^HTTP\/1\.1 400 Bad Request\r\n[^]*"error":"MALFORMED"/);
    expect((await fetch(`http://127.0.0.1:${port}/health`)).status).toBe(200);
  });

  it('warns at start when maxConnections is more than the open-files limit leaves, and only then', async () => {
    const limit = parseOpenFilesLimit(readFileSync('/proc/self/limits', 'latin1'));
    if (limit === undefined) return; // unlimited here: nothing to compare with
    const warnings: { msg: string; maxConnections?: number; openFilesLimit?: number }[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        for (const l of chunk.toString('utf8').split('\n')) if (l) warnings.push(JSON.parse(l) as { msg: string });
        done();
      },
    });
    const logger = pino({ level: 'warn' }, sink);
    await start({ maxConnections: limit }, undefined, undefined, { logger });
    await t!.close();
    t = undefined;
    // before: silent, and devices past the limit met EMFILE at accept
    expect(warnings).toHaveLength(1);
    expect(warnings[0]!.msg).toMatch(/maxConnections \(\d+\) is more than the open-files limit \(\d+\)/);
    expect(warnings[0]).toMatchObject({ maxConnections: limit, openFilesLimit: limit });
    await start({ maxConnections: Math.max(1, limit - 4 * FD_HEADROOM - 1000) }, undefined, undefined, { logger });
    expect(warnings).toHaveLength(1);
  });

  it('reads the soft open-files limit from a proc directory, and is quiet without one or when unlimited', () => {
    const limits = (soft: string) =>
      'Limit                     Soft Limit           Hard Limit           Units     \n' +
      'Max processes             63487                63487                processes \n' +
      `Max open files            ${soft.padEnd(20)} 1048576              files     \n`;
    expect(parseOpenFilesLimit(limits('1024'))).toBe(1024);
    expect(parseOpenFilesLimit(limits('unlimited'))).toBeUndefined();
    expect(parseOpenFilesLimit('')).toBeUndefined();
    const dir = mkdtempSync(join(tmpdir(), 'trickle-proc-'));
    try {
      expect(connectionsOverFdLimit(20_000, dir)).toBeUndefined(); // no limits file: not Linux
      mkdirSync(join(dir, 'fd'));
      for (const fd of ['0', '1', '2']) writeFileSync(join(dir, 'fd', fd), '');
      writeFileSync(join(dir, 'limits'), limits('1024'));
      expect(connectionsOverFdLimit(20_000, dir)).toEqual({
        maxConnections: 20_000,
        openFilesLimit: 1024,
        openNow: 3,
        fit: 1024 - 3 - FD_HEADROOM,
      });
      expect(connectionsOverFdLimit(1024 - 3 - FD_HEADROOM, dir)).toBeUndefined();
      writeFileSync(join(dir, 'limits'), limits('unlimited'));
      expect(connectionsOverFdLimit(20_000, dir)).toBeUndefined();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('counts handshakes per IPv4 address and per IPv6 /64', () => {
    expect(addressKey('127.0.0.1')).toBe('127.0.0.1');
    expect(addressKey('::ffff:10.0.0.1')).toBe('10.0.0.1');
    expect(addressKey('2001:db8::1')).toBe('2001:db8:0:0::/64');
    expect(addressKey('2001:db8:0:0:ffff::2')).toBe('2001:db8:0:0::/64');
    expect(addressKey('2001:0db8:0000:0001::')).toBe('2001:db8:0:1::/64');
    expect(addressKey('2001:db8:a:b:c:d:e:f')).toBe('2001:db8:a:b::/64');
    expect(addressKey('::1')).toBe('0:0:0:0::/64');
    expect(addressKey(undefined)).toBe('');
  });
});

describe('RequestBudget', () => {
  it('gives each address its burst, then one request per 1/rate s, and says how long to wait', () => {
    const b = new RequestBudget(2, 3);
    for (let i = 0; i < 3; i++) expect(b.take('a', 0)).toBe(0);
    expect(b.take('a', 0)).toBe(1); // empty: one token comes back in 0.5 s, said as 1 s
    expect(b.take('b', 0)).toBe(0); // another address has its own bucket
    expect(b.take('a', 499)).toBe(1);
    expect(b.take('a', 500)).toBe(0);
    expect(b.take('a', 500)).toBe(1);
    const slow = new RequestBudget(0.1, 1);
    slow.take('c', 0);
    expect(slow.take('c', 0)).toBe(10);
  });

  it('forgets addresses whose buckets are full again, so the map stays near the addresses of the last burst / rate s', () => {
    const b = new RequestBudget(1000, 1); // full again 1 ms after a request
    for (let i = 0; i < 100_000; i++) b.take(`10.0.${i >> 8}.${i & 255}`, i);
    expect(b.size).toBeLessThanOrEqual(2048);
  });
});
