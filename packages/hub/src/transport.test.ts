import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { createHubMetrics } from './metrics.js';
import { resolveHubLimits, type HubLimits } from './options.js';
import { MAX_REFUSING, addressKey, startTransport, type Transport } from './transport.js';

const UPGRADE =
  'GET / HTTP/1.1\r\nHost: hub\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
  'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n';

/** A raw TCP peer: what it has read, and whether the hub closed it. */
function peer(port: number, text: string) {
  const socket: Socket = connect(port, '127.0.0.1');
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

describe('transport edge', () => {
  let t: Transport | undefined;
  const peers: ReturnType<typeof peer>[] = [];
  afterEach(async () => {
    for (const p of peers.splice(0)) p.socket.destroy();
    await t?.close();
    t = undefined;
  });

  const start = async (limits: Partial<HubLimits>, onRequest?: () => boolean, tls?: { cert: string; key: string }) => {
    t = await startTransport({
      tls,
      port: 0,
      host: '127.0.0.1',
      limits: resolveHubLimits(limits),
      metrics: createHubMetrics({ defaultMetrics: false }),
      logger: pino({ level: 'silent' }),
      onConnection: () => {},
      health: () => ({ status: 'ok' }),
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
    const { port } = await start({ maxConnections: 1 });
    const held = peer(port, UPGRADE);
    peers.push(held);
    await until(() => held.reply.includes('\r\n\r\n'));
    const refused: ReturnType<typeof peer>[] = [];
    for (let i = 0; i < MAX_REFUSING + 40; i++) {
      refused.push(peer(port, UPGRADE));
      if (i % 100 === 99) await until(() => refused.every((p) => p.closed || p.reply.length > 4), 20_000);
    }
    peers.push(...refused);
    await until(() => refused.every((p) => p.closed || p.reply.length > 4), 20_000);
    const upgraded = refused.filter((p) => p.reply.toString('latin1').startsWith('HTTP/1.1 101'));
    // each upgraded one read the 1013 close and keeps its socket open (it never sends its own close frame)
    expect(upgraded.length).toBe(MAX_REFUSING);
    expect(refused.filter((p) => p.closed && p.reply.length === 0).length).toBe(40);
  }, 60_000);

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
