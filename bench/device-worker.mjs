// A load-generating process for the hub benchmark: drives many devices over raw WebSockets with the protocol codec
// and the native signer/verifier. Every update is its own state (no coalescing): the device computes the state's
// digest, signs it, sends it; on the hub's ack it verifies the hub's countersignature over that same digest and only
// then counts it. Controlled by its parent over IPC (child_process.fork):
//   { t: 'init', url, devices: [{ key, params }] }          → connect, authenticate, announce channels → { t: 'ready' }
//   { t: 'run', count, warmupMs, measureMs, window, drainMs, maxUpdates, intervalMs? }
//                                                          → drive the first `count` devices (at most `maxUpdates`
//                                                            updates, until the time is up; with intervalMs one
//                                                            update per device per interval) → { t: 'result', … }
//   { t: 'exit' }
import { WebSocket } from 'ws';
import { decodeFrame, encodeFrame } from '@trickle/protocol/codec';
import { authDigest, domainSeparator, stateDigest, trickleDomain, channelIdOf } from '@trickle/protocol/eip712';
import { bestKeccak256, nativeSigner, nativeVerifier } from '@trickle/protocol/native';
import { parseJson } from '@trickle/protocol/json';
import { announce, percentile } from './lib/util.mjs';

const keccak = bestKeccak256(); // state digests with the compiled keccak when installed, as a Node device does
const verifier = nativeVerifier();
/** @type {Device[]} */
let devices = [];
let run; // the current run's counters, or undefined between runs

class Device {
  constructor(url, spec) {
    this.signer = nativeSigner(spec.key);
    this.params = spec.params;
    this.channelId = channelIdOf(spec.params);
    this.url = url;
    this.nextId = 1;
    this.version = 0n;
    this.paid = 0n;
    /** Proposals sent and not yet acknowledged: { version, digest, sentAt } in version order. */
    this.inflight = [];
    this.active = false;
    this.window = 1;
    this.waiters = new Map();
  }

  connect() {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.url, { perMessageDeflate: false, maxPayload: 64 * 1024 });
      ws.binaryType = 'nodebuffer';
      this.ws = ws;
      const fail = (e) => reject(e instanceof Error ? e : new Error(String(e)));
      ws.once('error', fail);
      ws.on('close', (code) => {
        if (run && this.active) run.errors.push(`device ${this.signer.address} closed ${code}`);
      });
      ws.on('message', (data) => {
        let msg;
        try {
          msg = decodeFrame(data);
        } catch (e) {
          if (run) run.errors.push(`undecodable frame: ${e.message}`);
          return;
        }
        if (msg.t === 'challenge') {
          this.hub = msg.hub;
          const sep = domainSeparator(trickleDomain(msg.chainId, msg.adjudicator));
          this.sep = sep;
          const sig = this.signer.signDigest(authDigest(sep, this.signer.address, msg.hub, msg.nonce));
          this.request({ t: 'auth', id: this.nextId++, device: this.signer.address, nonce: msg.nonce, sig }).then(
            () => resolve(),
            fail,
          );
          return;
        }
        if (msg.t === 'ack') return this.onAck(msg);
        if (msg.t === 'reject') return this.onReject(msg);
        const w = this.waiters.get(msg.id);
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

  /** Announce the channel (the hub checks it on-chain) and adopt the hub's latest state of it. */
  async open() {
    const latest = await announce(() => this.request({ t: 'open', id: this.nextId++, params: this.params }));
    if (latest) {
      this.version = latest.version;
      this.paid = latest.paidByDevice;
    }
  }

  /** Sign and send the next state: one more base unit paid, its own version. */
  sendNext() {
    const state = {
      channelId: this.channelId,
      version: this.version + 1n,
      paidByDevice: this.paid + 1n,
      paidByHub: 0n,
      round: 0n,
      locksRoot: `0x${'00'.repeat(32)}`,
      lockedByDevice: 0n,
      lockedByHub: 0n,
      isFinal: false,
    };
    const digest = stateDigest(this.sep, state, keccak);
    const sig = this.signer.signDigest(digest);
    this.version = state.version;
    this.paid = state.paidByDevice;
    this.inflight.push({ version: state.version, digest, sentAt: performance.now() });
    this.cork();
    this.ws.send(encodeFrame({ t: 'update', id: this.nextId, state, sig }));
    this.nextId = (this.nextId % 0x7fffffff) + 1;
    run.sent++;
  }

  /**
   * The updates this device sends in one turn (two acks read together top the window up twice) leave in one write,
   * as the hub's acks to it do: the socket is corked until the turn's work is done.
   */
  cork() {
    if (this.corked) return;
    const socket = this.ws._socket;
    if (!socket) return;
    this.corked = true;
    socket.cork();
    process.nextTick(() => {
      this.corked = false;
      socket.uncork();
    });
  }

  onAck(msg) {
    if (msg.channelId !== this.channelId) return;
    const i = this.inflight.findIndex((p) => p.version === msg.version);
    if (i < 0) return;
    const p = this.inflight[i];
    // The hub's countersignature over exactly the state we signed.
    if (verifier.recoverAddress(p.digest, msg.sig) !== this.hub) {
      run?.errors.push('ack with a bad hub signature');
      return;
    }
    // Cumulative: it covers every version up to it; only the acked one was verified and countersigned by the hub.
    this.inflight.splice(0, i + 1);
    if (!run) return;
    const now = performance.now();
    if (now >= run.measureFrom && now < run.measureTo) {
      run.acks++;
      run.covered += i + 1;
      if (run.rtt.length < 200_000) run.rtt.push(now - p.sentAt);
    }
    run.acksTotal++;
    this.topUp(now);
  }

  onReject(msg) {
    if (msg.channelId !== this.channelId) return;
    if (run) {
      run.rejects++;
      if (run.errors.length < 20) run.errors.push(`reject ${msg.code}: ${msg.message}`);
    }
    // Resume from the hub's latest: drop everything in flight (it builds on the refused update).
    this.inflight = [];
    const latest = msg.latest?.state;
    if (latest && latest.version >= this.version) {
      this.version = latest.version;
      this.paid = latest.paidByDevice;
    }
    if (run) this.topUp(performance.now());
  }

  topUp(now) {
    if (!this.active || now >= run.stopAt || this.intervalMs) return;
    while (this.inflight.length < this.window && run.sent < run.maxSent) this.sendNext();
  }
}

async function init(msg) {
  devices = msg.devices.map((d) => new Device(msg.url, { key: d.key, params: parseJson(d.params) }));
  // Connect in small waves: a thousand simultaneous handshakes would only measure the accept queue.
  let next = 0;
  const wave = async () => {
    while (next < devices.length) {
      const d = devices[next++];
      await d.connect();
      await d.open();
    }
  };
  await Promise.all(Array.from({ length: 32 }, wave));
  process.send({ t: 'ready', devices: devices.length });
}

async function start(msg) {
  const t0 = performance.now();
  let cpu0 = process.cpuUsage();
  setTimeout(() => (cpu0 = process.cpuUsage()), msg.warmupMs);
  run = {
    measureFrom: t0 + msg.warmupMs,
    measureTo: t0 + msg.warmupMs + msg.measureMs,
    stopAt: t0 + msg.warmupMs + msg.measureMs,
    acks: 0,
    acksTotal: 0,
    covered: 0,
    sent: 0,
    maxSent: msg.maxUpdates,
    rejects: 0,
    errors: [],
    rtt: [],
  };
  const active = devices.slice(0, msg.count);
  for (const d of active) {
    d.active = true;
    d.window = msg.window;
    d.intervalMs = msg.intervalMs ?? 0;
    d.inflight = [];
  }
  // Paced (intervalMs): each device proposes one update per interval, open loop, when its window has room (a tick
  // without room is counted as skipped); otherwise each ack tops the window up at once (closed loop).
  const timers = [];
  run.skipped = 0;
  for (const d of active) {
    if (!d.intervalMs) continue;
    const tick = () => {
      if (!d.active || performance.now() >= run.stopAt) return;
      if (d.inflight.length < d.window && run.sent < run.maxSent) d.sendNext();
      else run.skipped++;
    };
    timers.push(setTimeout(() => timers.push(setInterval(tick, d.intervalMs)), Math.random() * d.intervalMs));
  }
  for (const d of active) d.topUp(t0);
  await new Promise((r) => setTimeout(r, msg.warmupMs + msg.measureMs));
  for (const t of timers) clearInterval(t);
  const cpuMeasured = process.cpuUsage(cpu0);
  // Let what is still in flight come back (bounded), so the next run starts from a quiet hub.
  const drainUntil = performance.now() + msg.drainMs;
  while (active.some((d) => d.inflight.length > 0) && performance.now() < drainUntil)
    await new Promise((r) => setTimeout(r, 10));
  const unanswered = active.reduce((n, d) => n + d.inflight.length, 0);
  for (const d of active) {
    d.active = false;
    // Anything unanswered would be refused as stale on the next run: resume after it.
    d.inflight = [];
  }
  const rtt = Float64Array.from(run.rtt).sort();
  const r = run;
  run = undefined;
  process.send({
    t: 'result',
    acks: r.acks,
    covered: r.covered,
    acksTotal: r.acksTotal,
    sent: r.sent,
    rejects: r.rejects,
    skipped: r.skipped,
    unanswered,
    errors: r.errors.slice(0, 10),
    cpuSeconds: (cpuMeasured.user + cpuMeasured.system) / 1e6,
    rttMs: { p50: percentile(rtt, 50), p99: percentile(rtt, 99), samples: rtt.length },
    // every measured latency (ms, sorted), when asked: for a percentile over several runs together
    ...(msg.samples ? { rttSamplesMs: Array.from(rtt) } : {}),
  });
}

process.on('message', (msg) => {
  const fail = (e) => {
    process.send({ t: 'error', message: e?.stack ?? String(e) });
  };
  if (msg.t === 'init') init(msg).catch(fail);
  else if (msg.t === 'run') start(msg).catch(fail);
  else if (msg.t === 'exit') {
    for (const d of devices) d.ws?.terminate();
    process.exit(0);
  }
});
process.on('disconnect', () => process.exit(0));
