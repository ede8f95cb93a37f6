// Abusive peers for the fairness benchmark (bench/fairness.mjs), in their own process so their CPU is not the
// measured devices' event loop. Controlled over IPC (child_process.fork):
//   { t: 'init', url, flooder: { key, params }, sleeper: { key, params } }
//       → both connect, authenticate and announce their channels; the flooder makes two real updates → { t: 'ready' }
//   { t: 'start', flooder?: false, sleeper?: false } → the flooder replays its version-1 update (refused: STALE_VERSION) as fast as its socket takes
//       it; the sleeper stops reading its socket and asks for its channel's state (a ~400-byte answer) as fast as
//       its socket takes it → { t: 'started' }
//   { t: 'stop' } → { t: 'result', flooder: {…}, sleeper: {…} }
import { WebSocket } from 'ws';
import { decodeFrame, encodeFrame } from '@trickle/protocol/codec';
import { authDigest, channelIdOf, domainSeparator, stateDigest, trickleDomain } from '@trickle/protocol/eip712';
import { nativeSigner } from '@trickle/protocol/native';
import { parseJson } from '@trickle/protocol/json';
import { announce } from './lib/util.mjs';

const ZERO32 = `0x${'00'.repeat(32)}`;
/** Bytes a sender keeps queued in its own process before waiting for the socket to drain. */
const HIGH_WATER = 1 << 20;

class Peer {
  constructor(url, spec) {
    this.url = url;
    this.signer = nativeSigner(spec.key);
    this.params = parseJson(spec.params);
    this.channelId = channelIdOf(this.params);
    this.nextId = 1;
    this.waiters = new Map();
    this.stats = {
      sent: 0,
      replies: 0,
      byType: {},
      closeCode: undefined,
      closeReason: undefined,
      closedAfterMs: undefined,
    };
    this.startedAt = undefined;
  }

  connect() {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.url, { perMessageDeflate: false, maxPayload: 64 * 1024 });
      ws.binaryType = 'nodebuffer';
      this.ws = ws;
      ws.once('error', reject);
      ws.on('close', (code, reason) => {
        this.stats.closeCode = code;
        this.stats.closeReason = String(reason);
        if (this.startedAt !== undefined) this.stats.closedAfterMs = Math.round(performance.now() - this.startedAt);
      });
      ws.on('message', (data) => {
        const msg = decodeFrame(data);
        if (this.startedAt !== undefined) {
          this.stats.replies++;
          const k = msg.t === 'reject' || msg.t === 'error' ? `${msg.t}:${msg.code}` : msg.t;
          this.stats.byType[k] = (this.stats.byType[k] ?? 0) + 1;
        }
        if (msg.t === 'challenge') {
          this.sep = domainSeparator(trickleDomain(msg.chainId, msg.adjudicator));
          const sig = this.signer.signDigest(authDigest(this.sep, this.signer.address, msg.hub, msg.nonce));
          this.request({ t: 'auth', id: this.nextId++, device: this.signer.address, nonce: msg.nonce, sig }).then(
            () => resolve(),
            reject,
          );
          return;
        }
        const w = msg.t === 'ack' || msg.t === 'reject' ? undefined : this.waiters.get(msg.id);
        if (w) {
          this.waiters.delete(msg.id);
          if (msg.t === 'error') w.reject(new Error(`${msg.code}: ${msg.message}`));
          else w.resolve(msg);
        }
      });
    });
  }

  request(msg) {
    return new Promise((resolve, reject) => {
      this.waiters.set(msg.id, { resolve, reject });
      this.ws.send(encodeFrame(msg));
    });
  }

  open() {
    return announce(() => this.request({ t: 'open', id: this.nextId++, params: this.params }));
  }

  signed(version, paid) {
    const state = {
      channelId: this.channelId,
      version,
      paidByDevice: paid,
      paidByHub: 0n,
      round: 0n,
      locksRoot: ZERO32,
      lockedByDevice: 0n,
      lockedByHub: 0n,
      isFinal: false,
    };
    return { state, sig: this.signer.signDigest(stateDigest(this.sep, state)) };
  }

  /** Send `frame()` as fast as the socket drains: up to HIGH_WATER queued in this process, then wait a moment. */
  blast(frame) {
    this.startedAt = performance.now();
    const bytes = encodeFrame(frame());
    const loop = () => {
      if (this.ws.readyState !== WebSocket.OPEN || this.stopped) return;
      while (this.ws.bufferedAmount < HIGH_WATER) {
        this.ws.send(bytes);
        this.stats.sent++;
      }
      setTimeout(loop, 1);
    };
    loop();
  }
}

let flooder;
let sleeper;

process.on('message', async (msg) => {
  try {
    if (msg.t === 'init') {
      flooder = new Peer(msg.url, msg.flooder);
      sleeper = new Peer(msg.url, msg.sleeper);
      await Promise.all([flooder.connect(), sleeper.connect()]);
      const latest = await flooder.open();
      await sleeper.open();
      // Two real updates: version 1 is then stale, and every replay of it is refused after the usual checks.
      const v = latest?.version ?? 0n;
      const paid = latest?.paidByDevice ?? 0n;
      for (const k of [1n, 2n]) {
        const u = flooder.signed(v + k, paid + k);
        await new Promise((resolve, reject) => {
          flooder.ws.send(encodeFrame({ t: 'update', id: flooder.nextId++, ...u }));
          const check = (data) => {
            const m = decodeFrame(data);
            if (m.t === 'ack' && m.version === v + k) (flooder.ws.off('message', check), resolve());
            else if (m.t === 'reject') (flooder.ws.off('message', check), reject(new Error(`${m.code}: ${m.message}`)));
          };
          flooder.ws.on('message', check);
        });
      }
      flooder.stale = flooder.signed(v + 1n, paid + 1n);
      process.send({ t: 'ready' });
    } else if (msg.t === 'start') {
      if (msg.flooder !== false) flooder.blast(() => ({ t: 'update', id: 7, ...flooder.stale }));
      if (msg.sleeper !== false) {
        sleeper.ws._socket.pause(); // never reads again
        sleeper.blast(() => ({ t: 'sync', id: 9, channelId: sleeper.channelId, latest: null }));
      }
      process.send({ t: 'started' });
    } else if (msg.t === 'stop') {
      flooder.stopped = sleeper.stopped = true;
      const out = (p) =>
        p.startedAt === undefined
          ? { ran: false }
          : { ...p.stats, secondsFlooding: Math.round(performance.now() - p.startedAt) / 1000 };
      process.send({ t: 'result', flooder: out(flooder), sleeper: out(sleeper) });
      flooder.ws.terminate();
      sleeper.ws.terminate();
    }
  } catch (e) {
    process.send({ t: 'error', message: e?.stack ?? String(e) });
  }
});
process.on('disconnect', () => process.exit(0));
