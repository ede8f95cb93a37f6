// A TCP relay on loopback in front of a hub, to make the hub's end of a link go silent without closing anything (a
// NAT that dropped its mapping, a proxy that black-holes packets, a hub stuck before its upgrade answer).
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import { expect } from 'vitest';
import type { World } from './harness.js';

export interface SilentRelay {
  /** `ws://` URL of the relay. */
  readonly url: string;
  /** Connections accepted so far. */
  readonly accepted: number;
  /** While set, new connections are accepted and then hear nothing (never relayed; bytes pile up unread). */
  mute: boolean;
  /** While set, new connections are closed at once (the hub's address answers, nothing behind it). */
  refuse: boolean;
  /**
   * Stop passing the hub's bytes to the device on every connection held now (the device's still reach the hub), and
   * close none; later connections are relayed both ways.
   */
  silenceHub(): void;
  /** Every connection held now goes silent both ways (the peers see silence, not a FIN or RST); none is closed. */
  blackHole(): void;
  close(): Promise<void>;
}

/** Start a relay to the hub at `target` (a `ws://` URL on loopback). */
export async function startSilentRelay(target: string): Promise<SilentRelay> {
  const hubPort = Number(new URL(target).port);
  const pairs = new Set<{ down: Socket; up: Socket }>();
  const sockets = new Set<Socket>();
  let accepted = 0;
  const track = (s: Socket): void => {
    sockets.add(s);
    s.on('error', () => s.destroy());
  };
  const server = createServer((down) => {
    accepted++;
    track(down);
    if (relay.refuse) {
      down.destroy();
      return;
    }
    if (relay.mute) {
      down.pause();
      pairs.add({ down, up: down });
      return;
    }
    const up = connect(hubPort, '127.0.0.1');
    track(up);
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
  /** Stop relaying the hub's bytes on every held connection (the device's too when `both`); let none of them end it. */
  const silence = (both: boolean): void => {
    for (const { down, up } of pairs) {
      up.unpipe(down);
      up.pause(); // the hub's frames wait unread: the device hears nothing
      if (both) {
        down.unpipe(up);
        down.pause();
      }
      down.removeAllListeners('close');
      up.removeAllListeners('close');
    }
    pairs.clear();
  };
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const relay: SilentRelay = {
    url: `ws://127.0.0.1:${(server.address() as AddressInfo).port}/`,
    get accepted() {
      return accepted;
    },
    mute: false,
    refuse: false,
    silenceHub: () => silence(false),
    blackHole: () => silence(true),
    async close(): Promise<void> {
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(r));
    },
  };
  return relay;
}

/**
 * A client of device `index` dialling the hub through `relay` (liveness bound 1 s, quick redials), with a channel and
 * one payment made, then left idle for 2.5 s: an idle link that is alive stays up (the client's probes are answered).
 * @returns the client, its channel, and the relay's connection count once idle
 */
export async function idleClientBehind(w: World, relay: SilentRelay, index: number) {
  const c = await w.client(index, {
    url: relay.url,
    livenessTimeoutMs: 1_000,
    reconnect: { initialDelayMs: 20, maxDelayMs: 200 },
  });
  const ch = await c.openChannel({ token: w.token, deposit: 1_000_000n });
  await ch.pay(5n);
  const idle = relay.accepted;
  await new Promise((r) => setTimeout(r, 2_500));
  expect(relay.accepted).toBe(idle);
  expect(c.connected).toBe(true);
  return { c, ch, idle };
}
