import { readFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createWorld, type World } from './helpers/harness.js';
import { holdEventLoop } from './helpers/wait.js';

/** The first port of the kernel's ephemeral range (Linux's default when it cannot be read). */
const firstEphemeral = (() => {
  try {
    return Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'latin1').trim().split(/\s+/)[0]);
  } catch {
    return 32_768;
  }
})();

/**
 * Red team of c6d5607: the hub finds a socket's count again from its request by remote address and port. A socket
 * closing while a new one from the same address and port is accepted (a NAT reusing a port after a reset) had the old
 * socket's close delete the new socket's entry: the new one was then refused (503 'server full') on a hub far from full.
 */
describe('red team stop 4: a socket from the address and port of one just reset is counted as its own', () => {
  let w: World;
  const open: Socket[] = [];
  beforeAll(async () => {
    w = await createWorld({ accounts: 3 });
    await w.startHub({ limits: { maxConnections: 100, maxHandshakesPerAddress: 64 } });
  });
  afterAll(async () => {
    for (const s of open) s.destroy();
    await w?.close();
  });

  const port = () => Number(new URL(w.hub!.url).port);
  const connected = (localPort?: number) =>
    new Promise<Socket>((resolve, reject) => {
      const s = connect({ port: port(), host: '127.0.0.1', ...(localPort === undefined ? {} : { localPort }) });
      open.push(s);
      s.once('connect', () => resolve(s));
      s.once('error', reject);
    });
  /**
   * A socket from a port below the ephemeral range (the kernel's, else Linux's default 32768–60999): no other socket
   * on the machine takes such a port by connect() between the reset and the new socket's bind — one did on a busy CI
   * machine (EADDRINUSE). A port some server holds is skipped.
   */
  const connectedBelowEphemeral = async (): Promise<Socket> => {
    const low = Math.max(1_024, firstEphemeral - 10_000);
    for (let attempt = 0; ; attempt++) {
      const localPort = low + Math.floor(Math.random() * (firstEphemeral - low));
      try {
        return await connected(localPort);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EADDRINUSE' || attempt === 20) throw e;
      }
    }
  };
  const health = (s: Socket) =>
    new Promise<string>((resolve) => {
      let reply = '';
      s.on('data', (b) => {
        reply += b.toString('latin1');
        if (reply.includes('\r\n\r\n')) resolve(reply.slice(0, 12));
      });
      s.on('close', () => resolve(reply.slice(0, 12) || 'closed'));
      s.write('GET /health HTTP/1.1\r\nHost: hub\r\n\r\n');
    });

  it('an old socket reset as a new one from its port is accepted: the new one is answered 200', async () => {
    const statuses: string[] = [];
    for (let i = 0; i < 20; i++) {
      const old = await connectedBelowEphemeral();
      const localPort = old.localPort!;
      await new Promise((r) => setTimeout(r, 20)); // the hub has taken it
      // The reset and the new connection reach the hub in one turn of its event loop.
      const next = await new Promise<Socket>((resolve, reject) => {
        old.resetAndDestroy();
        const s = connect({ port: port(), host: '127.0.0.1', localPort });
        open.push(s);
        s.once('error', reject);
        process.nextTick(
          () => process.nextTick(() => holdEventLoop(30)), // hold the loop while both arrive
        );
        s.once('connect', () => resolve(s));
      });
      statuses.push(await health(next));
      next.destroy();
    }
    expect(statuses).toEqual(Array(20).fill('HTTP/1.1 200'));
  });
});
