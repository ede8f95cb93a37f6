// A device as its own process (for SIGKILL tests): the built client (`@trickle/client`, dist/) on a file store.
// Usage: [DEVICE_CLOCK_SKEW_MS=ms] node device-child.mjs <hubUrl> <privateKey> <storeDir>
// stdin: `pay <amount> <count>` pays one by one, printing `paid <version> <paidByDevice>` after each resolved
// payment; `burst <amount> <count>` calls pay() count times in one turn, printing the same per resolved payment.
// stdout: `ready <channelId> <version> <paidByDevice> <paidByHub>` once resynced; `credit <amount> <paidByHub>` per
// payment received (reported after the device made it durable); `error <code> <reason>` and exit 2 when connecting
// is refused. A line is printed only after the step it names is done.
import { createInterface } from 'node:readline';
import { TrickleClient, fileChannelStore } from '@trickle/client';
import { nobleSigner } from '@trickle/protocol/signer';

const [url, key, dir] = process.argv.slice(2);
// A device whose clock is wrong: DEVICE_CLOCK_SKEW_MS shifts Date.now (and new Date()) by that much.
const skew = Number(process.env['DEVICE_CLOCK_SKEW_MS'] ?? 0);
if (skew !== 0) {
  const RealDate = Date;
  const now = () => RealDate.now() + skew;
  globalThis.Date = class extends RealDate {
    constructor(...args) {
      super(...(args.length === 0 ? [now()] : args));
    }
    static now() {
      return now();
    }
  };
}
const out = (line) => process.stdout.write(`${line}\n`);
let client;
try {
  client = await TrickleClient.connect({
    url,
    signer: nobleSigner(key),
    store: fileChannelStore(dir),
    reconnect: { initialDelayMs: 20, maxDelayMs: 100 },
  });
} catch (e) {
  out(`error ${e.code} ${e.details?.reason ?? ''}`);
  process.exit(2);
}
const ch = client.channels()[0];
ch.onPayment((p) => out(`credit ${p.amount} ${ch.latest.state.paidByHub}`));
// resynced: the hub's answer adopted (a payment waits for it anyway)
await ch.pay(1n);
out(`ready ${ch.channelId} ${ch.latest.state.version} ${ch.latest.state.paidByDevice} ${ch.latest.state.paidByHub}`);
const paid = () => out(`paid ${ch.latest.state.version} ${ch.latest.state.paidByDevice}`);
for await (const line of createInterface({ input: process.stdin })) {
  const [cmd, a, n] = line.trim().split(/\s+/);
  if (cmd === 'pay') for (let k = 0; k < Number(n); k++) await ch.pay(BigInt(a)).then(paid);
  else if (cmd === 'burst') await Promise.all(Array.from({ length: Number(n) }, () => ch.pay(BigInt(a)).then(paid)));
  else if (cmd === 'exit') break;
}
await client.disconnect();
process.exit(0);
