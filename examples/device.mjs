#!/usr/bin/env node
// A paying device against a running hub: connect, open a channel with a deposit, stream payments, close
// cooperatively. The region between the markers is the README's device snippet, word for word (a test checks it).
// Configuration from the environment (docs/operator.md sets it up):
//   HUB_URL  RPC_URL  CHAIN_ID  ADJUDICATOR  TOKEN  DEVICE_KEY_FILE  STORE_DIR  [PAYMENTS=10]
//   node examples/device.mjs
// #region readme
import { readFileSync } from 'node:fs';
import { connectChain } from '@trickle/chain/rpc';
import { TrickleClient, adjudicatorClientChain, fileChannelStore } from '@trickle/client';
import { nobleSigner } from '@trickle/protocol/signer';

const { HUB_URL, RPC_URL, CHAIN_ID, ADJUDICATOR, TOKEN, DEVICE_KEY_FILE, STORE_DIR, PAYMENTS = '10' } = process.env;
const deviceKey = readFileSync(DEVICE_KEY_FILE, 'utf8').trim();
const chain = await connectChain(RPC_URL, { expectChainId: Number(CHAIN_ID) }); // refuses any other chain

const client = await TrickleClient.connect({
  url: HUB_URL, // ws://… or wss://…
  signer: nobleSigner(deviceKey), // keys are Signer objects, never strings passed around
  store: fileChannelStore(STORE_DIR), // one file per channel: durable before a payment resolves
  chain: adjudicatorClientChain({
    wallet: chain.wallet(deviceKey),
    chainId: Number(CHAIN_ID),
    adjudicator: ADJUDICATOR,
  }),
  connectTimeoutMs: 10_000, // a wrong URL fails with DISCONNECTED and the cause
  onRetry: (r) => console.error(`hub unreachable (${r.reason}); attempt ${r.attempt + 1} in ${r.delayMs} ms`),
});
const channel = await client.openChannel({ token: TOKEN, deposit: 20_000_000n }); // 20 USDT; waits for the hub
channel.onPayment((p) => console.error(`received ${p.amount}`)); // routed payments, market proceeds
for (let i = 0; i < Number(PAYMENTS); i++) {
  await channel.pay(1_000n); // resolves when the hub's countersigned state is durable
}
const closed = await client.close(channel.channelId); // cooperative; force close if the hub does not answer
await client.disconnect(); // channels stay in the store; its open files are released
chain.provider.destroy();
// #endregion readme

console.log(
  JSON.stringify({
    device: client.address,
    channelId: channel.channelId,
    paid: channel.latest.state.paidByDevice.toString(),
    close: closed.mode,
    tx: closed.hash,
  }),
);
