// A TCP load balancer in front of a hub cluster, as an operator would run one: each new connection goes to the
// next backend in turn that accepts it (a dead one is skipped). Bytes are piped untouched (WebSocket included).
import { connect, createServer, type Socket } from 'node:net';

export interface Balancer {
  /** ws://127.0.0.1:port/ */
  readonly url: string;
  /** How many connections each backend port took, in order. */
  readonly placed: number[];
  /**
   * Take a backend out (as a health check that failed would): its open connections are cut, new ones go elsewhere.
   */
  drop(port: number): void;
  /** Put a dropped backend back in rotation. */
  restore(port: number): void;
  close(): Promise<void>;
}

/** Start a balancer over `ports` (loopback). */
export async function startBalancer(ports: readonly number[]): Promise<Balancer> {
  let next = 0;
  const placed: number[] = [];
  const sockets = new Set<Socket>();
  const byBackend = new Map<number, Set<Socket>>();
  const dropped = new Set<number>();
  const tryBackend = (attempt: number): Promise<Socket> =>
    new Promise((resolve, reject) => {
      const port = ports[next++ % ports.length]!;
      if (dropped.has(port)) {
        if (attempt + 1 < ports.length) tryBackend(attempt + 1).then(resolve, reject);
        else reject(new Error('no backend in rotation'));
        return;
      }
      const up = connect(port, '127.0.0.1');
      up.once('connect', () => {
        placed.push(port);
        let set = byBackend.get(port);
        if (!set) byBackend.set(port, (set = new Set()));
        set.add(up);
        up.once('close', () => set.delete(up));
        resolve(up);
      });
      up.once('error', (e) => (attempt + 1 < ports.length ? tryBackend(attempt + 1).then(resolve, reject) : reject(e)));
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
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  return {
    url: `ws://127.0.0.1:${port}/`,
    placed,
    drop(port) {
      dropped.add(port);
      for (const s of byBackend.get(port) ?? []) s.destroy();
    },
    restore(port) {
      dropped.delete(port);
    },
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(r));
    },
  };
}
