import { connect, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { createWorld, type World } from './helpers/harness.js';

const upgrade = (path: string, protocol?: string) =>
  `GET ${path} HTTP/1.1\r\nHost: hub\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
  'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n' +
  (protocol === undefined ? '' : `Sec-WebSocket-Protocol: ${protocol}\r\n`) +
  '\r\n';

/**
 * Red team of c6d5607 (sockets count toward maxConnections from their TCP connection) on a real hub: an upgrade request
 * the hub answers without upgrading (404 for another path, 426 for wire versions it does not speak) was ended
 * (`socket.end`), not closed. Past the upgrade event Node's HTTP timeouts no longer watch a socket, so a peer that reads
 * the answer and never closes its side (half-open) held its socket — and, since c6d5607, its connection slot — for
 * ever. Peers from enough addresses kept a hub full (1013 to every device) with sockets that send nothing.
 */
describe('red team stop 4: an upgrade answered without upgrading gives its slot back', () => {
  let w: World;
  const held: Socket[] = [];

  beforeAll(async () => {
    w = await createWorld({ accounts: 3 });
    await w.startHub({ limits: { maxConnections: 4, maxHandshakesPerAddress: 64 } });
  });
  afterAll(async () => {
    for (const s of held) s.destroy();
    await w?.close();
  });

  /** A peer that sends `text`, reads the answer and never closes its side. */
  const halfOpen = (text: string, from: string) =>
    new Promise<string>((resolve, reject) => {
      const { port } = new URL(w.hub!.url);
      const s = connect({ port: Number(port), host: '127.0.0.1', localAddress: from, allowHalfOpen: true });
      held.push(s);
      let reply = '';
      s.on('data', (b) => {
        reply += b.toString('latin1');
        if (reply.includes('\r\n\r\n')) resolve(reply);
      });
      s.on('error', reject);
      s.write(text);
    });

  it('four half-open peers answered 404 / 426 do not fill a 4-connection hub: a device still upgrades', async () => {
    const answers = await Promise.all([
      halfOpen(upgrade('/x'), '127.0.3.1'),
      halfOpen(upgrade('/dashboard'), '127.0.3.2'),
      halfOpen(upgrade('/', 'trickle.v999'), '127.0.3.3'),
      halfOpen(upgrade('/', 'trickle.v998'), '127.0.3.4'),
    ]);
    expect(answers.map((a) => a.slice(0, 12))).toEqual([
      'HTTP/1.1 404',
      'HTTP/1.1 404',
      'HTTP/1.1 426',
      'HTTP/1.1 426',
    ]);
    // The answered sockets' slots come back once their answer is out: a device's upgrade is taken (without the fix
    // every attempt was refused — upgraded and closed 1013 — the four sockets held for ever). A refused upgrade gets
    // its close frame before any pong; a taken one answers the ping.
    let outcome: number | 'taken' = 1013;
    for (let attempt = 0; attempt < 50 && outcome !== 'taken'; attempt++) {
      const ws = new WebSocket(w.hub!.url, { perMessageDeflate: false });
      outcome = await new Promise<number | 'taken'>((r) => {
        ws.on('open', () => ws.ping());
        ws.on('pong', () => r('taken'));
        ws.on('close', (c) => r(c));
        ws.on('error', () => {});
      });
      ws.terminate();
      if (outcome !== 'taken') await new Promise((r) => setTimeout(r, 100));
    }
    expect(outcome).toBe('taken');
  });
});
