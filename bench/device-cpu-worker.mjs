// One device in its own process, for bench/device-cpu.mjs: a real TrickleClient (native signer/verifier, the file
// channel store) on one channel, paying a real hub. Controlled by its parent over IPC:
//   { t: 'init', url, dir, key, record }   → connect, attach the channel (open on-chain) → { t: 'ready' }
//   { t: 'run', mode, perSec, warmupMs, measureMs }
//     mode 'meter':  a meter: a timer wakes when the next payment is due (`perSec` a second, open loop) and calls
//                    pay(1n); when the previous ack is back a pay() is its own state, else the client coalesces it
//                    into the next
//     mode 'strict': one pay() per state strictly: the next pay(1n) is called when the previous one resolved, at
//                    most `perSec` per second (0: as fast as acks come back)
//     → { t: 'result', cpuUs: { user, system }, states, payments, failed, firstError, spanMs }: this process's CPU
//       over the measured window, the states acked in it (version delta) and the payments resolved in it
//   { t: 'exit' }
import { TrickleClient, fileChannelStore } from '@trickle/client';
import { nativeSigner, nativeVerifier } from '@trickle/protocol/native';
import { parseJson } from '@trickle/protocol/json';

let client;
let channel;

async function init(msg) {
  client = await TrickleClient.connect({
    url: msg.url,
    signer: nativeSigner(msg.key),
    verifier: nativeVerifier(),
    store: fileChannelStore(msg.dir),
  });
  channel = await client.attachChannel(parseJson(msg.record));
  return { t: 'ready' };
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function run(msg) {
  const t0 = performance.now();
  const from = t0 + msg.warmupMs;
  const to = from + msg.measureMs;
  let resolved = 0;
  let failed = 0;
  let firstError;
  let stop = false;
  const ok = () => resolved++;
  const bad = (e) => {
    failed++;
    firstError ??= `${e?.code ?? ''} ${e?.message ?? e}`;
  };
  let loop;
  if (msg.mode === 'meter') {
    let issued = 0;
    let pending = 0;
    const done = () => (pending--, ok());
    const fail = (e) => (pending--, bad(e));
    loop = new Promise((resolve) => {
      const tick = () => {
        if (stop) return resolve();
        const due = Math.floor(((performance.now() - t0) / 1000) * msg.perSec) - issued;
        issued += due;
        // bounded: a meter that cannot pay does not pile up calls without end
        for (let k = 0; k < due && pending < 10_000; k++) {
          pending++;
          channel.pay(1n).then(done, fail);
        }
        // the next payment's due time: one wake-up per payment, as a meter makes them
        setTimeout(tick, Math.max(0, t0 + ((issued + 1) * 1000) / msg.perSec - performance.now()));
      };
      tick();
    });
  } else {
    const gapMs = msg.perSec > 0 ? 1000 / msg.perSec : 0;
    loop = (async () => {
      let next = performance.now();
      while (!stop) {
        try {
          await channel.pay(1n);
          ok();
        } catch (e) {
          bad(e);
          await sleep(10);
        }
        if (gapMs > 0) {
          next += gapMs;
          const wait = next - performance.now();
          if (wait >= 1) await sleep(wait);
          else if (wait < -100) next = performance.now(); // fell behind: no burst to catch up
        }
      }
    })();
  }
  await sleep(from - performance.now());
  const cpu0 = process.cpuUsage();
  const v0 = channel.latest.state.version;
  const r0 = resolved;
  const at0 = performance.now();
  await sleep(to - performance.now());
  const cpu = process.cpuUsage(cpu0);
  const v1 = channel.latest.state.version;
  const r1 = resolved;
  const spanMs = performance.now() - at0;
  stop = true;
  await Promise.race([loop, sleep(5000)]);
  await channel.idle(5000).catch(bad); // payments still unanswered 5 s after the run count as failed
  return {
    t: 'result',
    cpuUs: { user: cpu.user, system: cpu.system },
    states: Number(v1 - v0),
    payments: r1 - r0,
    failed,
    firstError,
    spanMs,
  };
}

process.on('message', (msg) => {
  const reply = (p) =>
    p.then(
      (r) => process.send(r),
      (e) => process.send({ t: 'error', message: e?.stack ?? String(e) }),
    );
  if (msg.t === 'init') reply(init(msg));
  else if (msg.t === 'run') reply(run(msg));
  else if (msg.t === 'exit') void client?.disconnect().finally(() => process.exit(0));
});
process.on('disconnect', () => process.exit(0));
