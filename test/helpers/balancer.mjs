// A TCP load balancer in front of a hub cluster, as an operator would run one: each new connection goes to the
// next backend in turn that accepts it (a dead or dropped one is skipped). Bytes are piped untouched (WebSocket
// included). Used by test/cluster.e2e.test.ts and bench/cluster.mjs.
import { connect, createServer } from 'node:net';

/** Start a balancer over backend `ports` on loopback. */
export async function startBalancer(ports) {
  let next = 0;
  const placed = [];
  const sockets = new Set();
  const byBackend = new Map();
  const dropped = new Set();
  const tryBackend = (attempt) =>
    new Promise((resolve, reject) => {
      const port = ports[next++ % ports.length];
      const again = (e) => (attempt + 1 < ports.length ? tryBackend(attempt + 1).then(resolve, reject) : reject(e));
      if (dropped.has(port)) return again(new Error('no backend in rotation'));
      const up = connect(port, '127.0.0.1');
      up.once('connect', () => {
        placed.push(port);
        let set = byBackend.get(port);
        if (!set) byBackend.set(port, (set = new Set()));
        set.add(up);
        up.once('close', () => set.delete(up));
        resolve(up);
      });
      up.once('error', again);
    });
  const server = createServer((down) => {
    sockets.add(down);
    down.pause();
    down.on('error', () => down.destroy());
    down.on('close', () => sockets.delete(down));
    tryBackend(0).then(
      (up) => {
        sockets.add(up);
        up.on('close', () => sockets.delete(up));
        up.on('error', () => down.destroy());
        down.on('close', () => up.destroy());
        up.on('close', () => down.destroy());
        down.pipe(up);
        up.pipe(down);
        down.resume();
      },
      () => down.destroy(), // no backend alive: the device retries
    );
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const port = server.address().port;
  return {
    url: `ws://127.0.0.1:${port}/`,
    placed,
    drop(p) {
      dropped.add(p);
      for (const s of byBackend.get(p) ?? []) s.destroy();
    },
    restore(p) {
      dropped.delete(p);
    },
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(r));
    },
  };
}
