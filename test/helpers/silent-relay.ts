// A TCP relay on loopback in front of a hub, to make the hub go silent after the handshake without closing anything.
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';

export interface SilentRelay {
  /** `ws://` URL of the relay. */
  readonly url: string;
  /** Connections accepted so far. */
  readonly accepted: number;
  /**
   * Stop passing the hub's bytes to the device on every connection held now (the device's still reach the hub), and
   * close none; later connections are relayed both ways.
   */
  silenceHub(): void;
  close(): Promise<void>;
}

/** Start a relay to the hub at `target` (a `ws://` URL on loopback). */
export async function startSilentRelay(target: string): Promise<SilentRelay> {
  const hubPort = Number(new URL(target).port);
  const pairs = new Set<{ down: Socket; up: Socket }>();
  const sockets = new Set<Socket>();
  let accepted = 0;
  const server = createServer((down) => {
    accepted++;
    const up = connect(hubPort, '127.0.0.1');
    for (const s of [down, up]) {
      sockets.add(s);
      s.on('error', () => s.destroy());
    }
    const pair = { down, up };
    pairs.add(pair);
    down.pipe(up);
    up.pipe(down);
    const end = (): void => {
      pairs.delete(pair);
      down.destroy();
      up.destroy();
    };
    down.on('close', end);
    up.on('close', end);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `ws://127.0.0.1:${(server.address() as AddressInfo).port}/`,
    get accepted() {
      return accepted;
    },
    silenceHub(): void {
      for (const { down, up } of pairs) {
        up.unpipe(down);
        up.pause(); // the hub's frames wait unread: the device hears nothing
        down.removeAllListeners('close');
        up.removeAllListeners('close');
      }
      pairs.clear();
    },
    async close(): Promise<void> {
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(r));
    },
  };
}
