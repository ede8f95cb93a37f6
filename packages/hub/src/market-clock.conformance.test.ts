// Spec §7: "A credit the hub owes is never dropped: a refused or undelivered one is retried with backoff, and re-sent
// after a hub restart until the channel's round shows it landed." A single hub's market clock whose device refuses
// its round credit (BAD_CLEARING, say: it lacked the record) keeps retrying it, and keeps the channel owing it, however
// many times it was refused — not only until a restart.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest';
import { trickleDomain } from '@trickle/protocol/eip712';
import { TrickleError } from '@trickle/protocol/errors';
import { stringifyJson } from '@trickle/protocol/json';
import { nobleSigner, nobleVerifier } from '@trickle/protocol/signer';
import type { Address, Bytes32, ChannelId } from '@trickle/protocol/types';
import { escrowKey, type ChannelTable, type EscrowRecord } from './channels.js';
import { createCommitter } from './committer.js';
import { MarketClock } from './market-clock.js';
import { openLmdbStore } from './store/lmdb.js';

const dir = mkdtempSync(join(tmpdir(), 'trickle-market-conformance-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
afterEach(() => vi.useRealTimers());

const token = `0x${'7e'.repeat(20)}` as Address;
const domain = trickleDomain(31337n, '0x5FbDB2315678afecb367f032d93F642f64180aa3' as Address);
const hub = nobleSigner(`0x${'11'.repeat(32)}`);
const device = nobleSigner(`0x${'22'.repeat(32)}`);
const channelId = `0x${(1000).toString(16).padStart(64, '0')}` as ChannelId;
const orderId = `0x${'01'.padStart(64, '0')}` as Bytes32;

const channels = {
  get: (id: ChannelId) =>
    id === channelId
      ? { status: 'open', params: { token }, latest: { state: { round: 0n, isFinal: false } } }
      : undefined,
  channelsOf: (d: Address) => (d === device.address ? [channelId] : []),
} as unknown as ChannelTable;

describe('§7 a round credit the device refuses is never dropped', () => {
  it('is retried past 30 refusals, and the channel still owes it', async () => {
    const store = openLmdbStore({ path: dir });
    const committer = createCommitter(store);
    let attempts = 0;
    const clock = new MarketClock(
      {
        channels,
        committer,
        store,
        signer: hub,
        verifier: nobleVerifier,
        domain,
        send: () => true,
        broadcast: () => undefined,
        credit: () => {
          attempts++;
          return Promise.reject(new TrickleError('BAD_CLEARING', 'refused by the device'));
        },
        onRound: () => undefined,
        log: () => undefined,
      },
      { token },
    );
    await clock.restore();
    const round = clock.round;
    // A bid's escrow is paid, and its order never placed: the round refunds the whole escrow as its credit.
    await clock.checkEscrow(orderId, token, device.address);
    const e: EscrowRecord = { orderId, device: device.address, channelId, amount: 300n };
    await committer.write([{ kind: 'meta', key: escrowKey(orderId), value: stringifyJson(e) }]);
    clock.onEscrow(e);

    await clock.closeRound();
    expect(clock.round).toBe(round + 1n);
    // The first refusal schedules its retry on the real clock; from the second on, the fake one runs them.
    await vi.waitFor(() => expect(attempts).toBeGreaterThanOrEqual(1));
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    await new Promise((r) => setImmediate(r));
    await vi.waitFor(() => expect(attempts).toBeGreaterThanOrEqual(2), { timeout: 2_000, interval: 20 });
    // Far more than 30 attempts' worth of backoff (each at most 10 s).
    for (let k = 0; k < 120; k++) await vi.advanceTimersByTimeAsync(10_000);
    expect(attempts).toBeGreaterThan(31);
    expect(clock.owes(channelId)).toBe(true);
    vi.useRealTimers();
    await clock.stop();
    await store.close();
  });
});
