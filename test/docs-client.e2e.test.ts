// Statements of README.md and packages/client/README.md about the device SDK, checked against a real hub and chain.
import { describe, expect, it } from 'vitest';
import { onStream, type StreamEvent } from '@trickle/client';
import { TrickleChannelClientScheme } from '@trickle/x402/client';
import { worldWithHub, outcomeCode } from './helpers/hub-world.js';
import { waitFor } from './helpers/wait.js';

describe('device SDK as documented', () => {
  const world = worldWithHub();

  it('openChannel opens with a challenge period of 3600 s unless told otherwise', async () => {
    const w = world();
    const c = await w.client(2);
    const ch = await c.openChannel({ token: w.token, deposit: 1_000_000n });
    expect(ch.record.params.challengeDuration).toBe(3600n);
  });

  it('topUp adds to the deposit of a running channel; after disconnect() pay() and close() reject DISCONNECTED', async () => {
    const w = world();
    const c = await w.client(3);
    const ch = await c.openChannel({ token: w.token, deposit: 1_000_000n });
    await ch.pay(1_000n);
    const b = await c.topUp(ch.channelId, 500_000n);
    expect(b.deposit).toBe(1_500_000n);
    await c.disconnect();
    expect(await outcomeCode(ch.pay(1n))).toBe('DISCONNECTED');
    expect(await outcomeCode(c.close(ch.channelId))).toBe('DISCONNECTED');
  });

  it('a routed stream: payee sees open/tick/end; a paused stream is silent after ≥ 1 s and resumes', async () => {
    const w = world();
    const payer = await w.client(4);
    const payee = await w.client(5);
    const cha = await payer.openChannel({ token: w.token, deposit: 10_000_000n });
    const chb = await payee.openChannel({ token: w.token, deposit: 1_000_000n });
    await w.hubDeposit(chb.channelId, 5_000_000n);
    const events: { type: StreamEvent['type']; at: number }[] = [];
    onStream(payee, (e) => events.push({ type: e.type, at: Date.now() }));
    const s = cha.stream({ to: payee.address, ratePerSecond: 10_000n, maxTotal: 1_000_000n });
    expect(s.depletesAt).toBeGreaterThan(Date.now());
    await waitFor(() => events.some((e) => e.type === 'tick'));
    expect(events[0]!.type).toBe('open');
    await s.pause();
    const pausedAt = Date.now();
    await waitFor(() => events.some((e) => e.type === 'silent'), 5_000);
    const silent = events.find((e) => e.type === 'silent')!;
    expect(silent.at - pausedAt).toBeGreaterThanOrEqual(800);
    s.resume();
    await waitFor(() => events.some((e) => e.type === 'resume'), 5_000);
    const paid = await s.stop();
    expect(paid).toBe(s.paid());
    await waitFor(() => events.some((e) => e.type === 'end'), 5_000);
    expect(s.status).toBe('stopped');
    expect(() => s.adjust(1n)).toThrow(/stopped/);
  });

  it('the x402 client scheme refuses requirements it cannot satisfy, before paying', async () => {
    const w = world();
    const c = await w.client(6);
    const ch = await c.openChannel({ token: w.token, deposit: 1_000_000n });
    const scheme = new TrickleChannelClientScheme({ client: c });
    const base = {
      scheme: 'trickle-channel',
      network: `eip155:${c.hub.chainId}`,
      asset: w.token,
      amount: '1000',
      payTo: w.chain.addresses[7]!,
      maxTimeoutSeconds: 60,
      extra: { resource: 'r', hub: c.hub.hub, chainId: c.hub.chainId.toString(), adjudicator: c.hub.adjudicator },
    };
    const code = (req: object) => outcomeCode(scheme.createPaymentPayload(2, req as never));
    expect(await code({ ...base, extra: { ...base.extra, hub: w.chain.addresses[8] } })).toBe('WRONG_CHANNEL');
    expect(await code({ ...base, network: 'eip155:1' })).toBe('WRONG_CHANNEL');
    expect(await code({ ...base, maxTimeoutSeconds: 0 })).toBe('INVALID_ARGUMENT');
    expect(await code({ ...base, amount: '0' })).toBe('INVALID_ARGUMENT');
    expect(await code({ ...base, amount: '1.5' })).toBe('INVALID_ARGUMENT');
    const pinned = new TrickleChannelClientScheme({ client: c, channel: ch });
    expect(await outcomeCode(pinned.createPaymentPayload(2, { ...base, asset: w.chain.addresses[9] } as never))).toBe(
      'WRONG_CHANNEL',
    );
    expect(ch.latest.state.paidByDevice).toBe(0n);
  });
});
