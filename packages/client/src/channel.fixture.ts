// Test fixture (not built: tsconfig excludes *.fixture.ts): one ClientChannel on its own, without a client or a socket —
// the hub is played by the test, which reads what the device sends (`sent`) and hands it frames (`ch.receive`).
import { channelContext, zeroState } from '@trickle/protocol/channel';
import type { Message } from '@trickle/protocol/codec';
import { nobleVerifier, type Signer } from '@trickle/protocol/signer';
import type { Address, Bytes32, ChannelParams, Funding } from '@trickle/protocol/types';
import { ClientChannel, type ChannelDeps } from './channel.js';
import { memoryChannelStore, type DeviceChannelRecord } from './channel-store.js';
import type { Connection } from './connection.js';

/**
 * A channel of `device` with `hub` at version 0 (synced: the hub's answer to the sync is the zero state), on a memory
 * store. `onSend` sees each frame the device sends, after it is recorded in `sent`, with the channel (e.g. to ack it).
 */
export async function standaloneChannel(o: {
  device: Signer;
  hub: Address;
  adjudicator?: Address;
  funding: Funding;
  onSend?: (m: Message, ch: ClientChannel) => void;
  deps?: Partial<ChannelDeps>;
}) {
  const params: ChannelParams = {
    chainId: 31337n,
    adjudicator: o.adjudicator ?? ('0x5FbDB2315678afecb367f032d93F642f64180aa3' as Address),
    device: o.device.address,
    hub: o.hub,
    token: '0x0000000000000000000000000000000000000000' as Address,
    challengeDuration: 3600n,
    salt: `0x${'00'.repeat(32)}` as Bytes32,
  };
  const ctx = channelContext(params, o.funding);
  const zero = zeroState(ctx.channelId);
  const sent: Message[] = [];
  let nextId = 1;
  let ch!: ClientChannel;
  const connection = {
    ready: true,
    closed: false,
    id: () => nextId++,
    send: (m: Message) => {
      sent.push(m);
      o.onSend?.(m, ch);
      return true;
    },
    request: async (m: Message) => {
      sent.push(m);
      return { t: 'sync', id: (m as { id: number }).id, channelId: ctx.channelId, latest: { state: zero } } as Message;
    },
  } as unknown as Connection;
  const store = memoryChannelStore();
  const record: DeviceChannelRecord = {
    params,
    channelId: ctx.channelId,
    funding: o.funding,
    latest: { state: zero },
    signedVersion: 0n,
  };
  await store.save(record);
  ch = new ClientChannel(record, {
    signer: o.device,
    verifier: nobleVerifier,
    store,
    connection,
    maxInFlight: 8,
    yieldMs: 50,
    routeTimeoutMs: 1_000,
    ...o.deps,
  });
  await ch.resync();
  return { ch, ctx, sent, store };
}

/** Polls `f` every 5 ms until it gives a value (at most 2 s). @throws Error when it never does */
export async function until<T>(f: () => T | undefined): Promise<T> {
  for (let i = 0; i < 400; i++) {
    const v = f();
    if (v !== undefined) return v;
    await new Promise((r) => setTimeout(r, 5));
  }
  throw new Error('timed out');
}
