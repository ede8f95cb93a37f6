import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nobleSigner } from '@trickle/protocol/signer';
import type { ClientChannel } from '@trickle/client/channel';
import { createWorld, type World } from './helpers/harness.js';
import { RawDevice } from './helpers/raw-device.js';
import { waitFor } from './helpers/wait.js';

/**
 * A device that stops reading does not make the hub queue without bound: past `maxBufferedBytes` the hub stops
 * reading that connection (its requests wait in the kernel) and resumes when it drains, and a peer that lets more
 * than 4× that pile up is disconnected with 1008; other devices are served meanwhile.
 */
describe('backpressure toward a slow reader', () => {
  let w: World;
  let other: ClientChannel;
  beforeAll(async () => {
    w = await createWorld();
    await w.startHub({
      limits: {
        maxBufferedBytes: 16 * 1024,
        messagesPerSecond: 1_000_000,
        messageBurst: 1_000_000,
        maxInFlightPerConnection: 100_000,
        closeGraceMs: 30_000, // the peer below reads again after 2 s: a close frame of the hub's waits for it
      },
    });
    const c = await w.client(3);
    other = await c.openChannel({ token: w.token, deposit: 1_000_000n });
  });
  afterAll(async () => w?.close());

  it('stops reading a peer that does not read, serves others, and either answers everything once it drains or drops it past the bound', async () => {
    const slowClient = await w.client(2);
    const ch = await slowClient.openChannel({ token: w.token, deposit: 1_000_000n });
    await ch.pay(1n);
    slowClient.disconnect();
    const d = await RawDevice.connect(w.hub!.url, nobleSigner(w.chain.accounts[2]!));
    const socket = (d.ws as unknown as { _socket: { pause(): void; resume(): void } })._socket;
    const framesOut = async () =>
      Number(
        (await w.hub!.metrics.registry.getSingleMetricAsString('trickle_frames_total')).match(
          /direction="out"} (\d+)/,
        )?.[1] ?? 0,
      );
    socket.pause();
    const N = 40_000; // each answered with a ~400-byte sync frame: far more than socket buffers hold
    for (let k = 0; k < N; k++) d.send({ t: 'sync', id: k + 10, channelId: ch.channelId, latest: null });
    await new Promise((r) => setTimeout(r, 1500));
    const before = await framesOut();
    await new Promise((r) => setTimeout(r, 500));
    const stalled = await framesOut();
    // the hub stopped producing for this peer (bounded queue), and did not disconnect it
    expect(stalled - before).toBeLessThan(N / 10);
    expect(d.closeCode).toBeUndefined();
    // another device is served meanwhile
    await other.pay(5n);
    expect(other.latest.state.paidByDevice).toBe(5n);
    // Once the peer reads again, one of the two bounded outcomes: the hub stopped reading in time and now answers
    // every request; or more than 4× maxBufferedBytes piled up (replies produced in one burst) and it dropped the
    // peer with 1008. Which one depends on how fast the burst was read before the pause took effect.
    socket.resume();
    const answered = () => d.inbox.filter((m) => m.t === 'sync').length;
    await waitFor(() => d.closeCode !== undefined || answered() >= N, 30_000);
    if (d.closeCode !== undefined) {
      expect(d.closeCode).toBe(1008);
      expect(await w.hub!.metrics.registry.getSingleMetricAsString('trickle_disconnects_total')).toMatch(
        /reason="slow-reader"} 1/,
      );
    } else {
      expect(answered()).toBe(N);
      d.close();
    }
  }, 60_000);
});
