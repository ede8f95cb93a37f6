/**
 * Per-channel pipelining in the hub's channel table: while a channel's step is being committed, the signature work of
 * the updates queued meanwhile is done, so the next step's write goes out in the turn the commit returns. Driven with
 * a committer whose commits the test resolves or fails, and the real (inline) crypto answering a turn later, as the
 * crypto workers do. A commit that fails discards the work done over it: its jobs are refused with STORE_FAILURE and
 * nothing of them is sent or stored.
 */
import { describe, expect, it } from 'vitest';
import { channelIdOf, domainSeparator, stateDigest, trickleDomain } from '@trickle/protocol/eip712';
import type { Message, RouteInstruction } from '@trickle/protocol/codec';
import { nobleSigner, nobleVerifier, signatureToHex } from '@trickle/protocol/signer';
import { ETH_TOKEN, ZERO_ROOT, type Address, type Bytes32, type State } from '@trickle/protocol/types';
import { ChannelTable } from './channels.js';
import type { Committer } from './committer.js';
import { inlineCrypto, type HubCrypto } from './crypto.js';
import type { ChannelRecord, StoreWrite } from './store/types.js';

const hubKey = nobleSigner(`0x${'11'.repeat(32)}`);
const deviceKey = nobleSigner(`0x${'22'.repeat(32)}`);
const payee = `0x${'44'.repeat(20)}` as Address;
const adjudicator = `0x${'aa'.repeat(20)}` as Address;
const sep = domainSeparator(trickleDomain(31337n, adjudicator));
const params = {
  chainId: 31337n,
  adjudicator,
  device: deviceKey.address,
  hub: hubKey.address,
  token: ETH_TOKEN,
  challengeDuration: 3600n,
  salt: `0x${'06'.repeat(32)}` as Bytes32,
};
const channelId = channelIdOf(params);
const at = (version: bigint, paid: bigint): State => ({
  channelId,
  version,
  paidByDevice: paid,
  paidByHub: 0n,
  round: 0n,
  locksRoot: ZERO_ROOT,
  lockedByDevice: 0n,
  lockedByHub: 0n,
  isFinal: false,
});
const sign = (key: typeof hubKey, s: State) => key.signDigest(stateDigest(sep, s));
const v1 = at(1n, 10n);
const record: ChannelRecord = {
  params,
  channelId,
  funding: { device: 1000n, hub: 1000n },
  status: 'open',
  latest: { state: v1, deviceSig: signatureToHex(sign(deviceKey, v1)), hubSig: signatureToHex(sign(hubKey, v1)) },
  hubSignedVersion: 1n,
};
const paymentId = (n: number) => `0x${n.toString(16).padStart(64, '0')}` as Bytes32;

/** A channel table over a committer whose commits the test completes or fails, and crypto that counts its calls. */
function openTable() {
  const commits: { writes: readonly StoreWrite[]; resolve: () => void; reject: (e: unknown) => void }[] = [];
  let committed = 0;
  const committer: Committer = {
    write: (writes) =>
      new Promise<void>((resolve, reject) =>
        commits.push({
          writes,
          resolve: () => {
            committed++;
            resolve();
          },
          reject,
        }),
      ),
    drain: async () => {},
  };
  // The inline backend's answers, given a turn later (as the worker pool's are); each call notes how many commits
  // had completed when it started.
  const inline = inlineCrypto(hubKey, nobleVerifier);
  const calls: { version: bigint; afterCommits: number }[] = [];
  let answered = 0;
  const digests = new Map<string, bigint>();
  const crypto: HubCrypto = {
    ...inline,
    verifyAndSign(digest, sig, expected) {
      calls.push({ version: digests.get(Buffer.from(digest).toString('hex')) ?? -1n, afterCommits: committed });
      return new Promise((r) => setImmediate(r)).then(() =>
        inline.verifyAndSign(digest, sig, expected).finally(() => answered++),
      );
    },
  };
  const frames: Message[] = [];
  const events: string[] = [];
  const table = new ChannelTable({
    crypto,
    signer: hubKey,
    verifier: nobleVerifier,
    committer,
    send: (_device, msg) => {
      frames.push(msg);
      return true;
    },
    isConnected: () => true,
    onRouted: (route) => events.push(`routed ${route.paymentId}`),
    checkRoute: (_from, _token, route) => {
      events.push(`check ${route.paymentId} after ${committed} commits`);
    },
    onEscrow: () => {},
    onOutcome: () => {},
    maxCreditRetries: 20,
    now: () => 1_700_000_000_000,
  });
  table.restore([record]);
  const pay = (id: number, version: bigint, paid: bigint, route?: RouteInstruction) => {
    const state = at(version, paid);
    digests.set(Buffer.from(stateDigest(sep, state)).toString('hex'), version);
    table.enqueue(deviceKey.address, channelId, { t: 'update', id, state, sig: sign(deviceKey, state), route });
  };
  return { table, commits, frames, events, calls, pay, answered: () => answered };
}

const endOfTurn = () => new Promise((r) => setImmediate(r));
/** The channel records a commit holds: their latest versions. */
const versionsIn = (writes: readonly StoreWrite[]) =>
  writes.flatMap((w) => (w.kind === 'channel' ? [w.record.latest.state.version] : []));

describe('channel table pipelining', () => {
  it('does the next update’s signature work during a commit and writes its step in the turn the commit returns', async () => {
    const hub = openTable();
    hub.pay(1, 2n, 20n);
    await expect.poll(() => hub.commits.length).toBe(1);
    hub.pay(2, 3n, 30n);
    // Verified and countersigned while the first commit is still in flight.
    await expect.poll(() => hub.answered()).toBe(2);
    expect(hub.calls).toEqual([
      { version: 2n, afterCommits: 0 },
      { version: 3n, afterCommits: 0 },
    ]);
    expect(hub.frames.filter((f) => f.t === 'ack')).toEqual([]);
    expect(hub.commits).toHaveLength(1);

    hub.commits[0]!.resolve();
    await endOfTurn();
    // The second step was written in that turn, with no crypto call after the commit.
    expect(hub.commits).toHaveLength(2);
    expect(versionsIn(hub.commits[1]!.writes)).toEqual([3n]);
    expect(hub.calls).toHaveLength(2);
    // The first update is acked; the second is not until its own commit.
    expect(hub.frames.map((f) => (f.t === 'ack' ? f.id : f.t))).toEqual([1]);

    hub.commits[1]!.resolve();
    await expect.poll(() => hub.frames.length).toBe(2);
    const ack = hub.frames[1] as Extract<Message, { t: 'ack' }>;
    expect(ack).toMatchObject({ t: 'ack', id: 2, version: 3n });
    expect(hub.table.get(channelId)!.latest.state.version).toBe(3n);
    expect(hub.table.get(channelId)!.latest.hubSig).toBe(signatureToHex(sign(hubKey, at(3n, 30n))));
  });

  it('does that work once more for updates that came while it was done, and no more, during one commit', async () => {
    const hub = openTable();
    hub.pay(1, 2n, 20n);
    await expect.poll(() => hub.commits.length).toBe(1);
    hub.pay(2, 3n, 30n);
    await expect.poll(() => hub.answered()).toBe(2);
    hub.pay(3, 4n, 40n); // came after the work for version 3 was done: done once more, for the newest
    await expect.poll(() => hub.answered()).toBe(3);
    hub.pay(4, 5n, 50n); // two were done during this commit: waits for the next
    expect(hub.calls).toHaveLength(3);

    hub.commits[0]!.resolve();
    await endOfTurn();
    expect(hub.commits).toHaveLength(2);
    expect(versionsIn(hub.commits[1]!.writes)).toEqual([4n]);
    expect(hub.calls).toEqual([
      { version: 2n, afterCommits: 0 },
      { version: 3n, afterCommits: 0 },
      { version: 4n, afterCommits: 0 },
      { version: 5n, afterCommits: 1 }, // during the second commit
    ]);
    hub.commits[1]!.resolve();
    await expect.poll(() => hub.commits.length).toBe(3);
    expect(versionsIn(hub.commits[2]!.writes)).toEqual([5n]);
    hub.commits[2]!.resolve();
    await expect.poll(() => hub.table.get(channelId)!.latest.state.version).toBe(5n);
    expect(hub.calls).toHaveLength(4);
  });

  it('refuses with STORE_FAILURE, and neither sends nor stores, an update whose work was done over a commit that failed', async () => {
    const hub = openTable();
    hub.pay(1, 2n, 20n);
    await expect.poll(() => hub.commits.length).toBe(1);
    hub.pay(2, 3n, 30n);
    await expect.poll(() => hub.answered()).toBe(2); // the hub's signature over version 3 exists, unsent

    hub.commits[0]!.reject(new Error('disk on fire'));
    await expect.poll(() => hub.frames.filter((f) => f.t === 'reject').length).toBe(2);
    const rejects = hub.frames.filter((f) => f.t === 'reject') as Extract<Message, { t: 'reject' }>[];
    expect(rejects.map((r) => [r.id, r.code, r.latest?.state.version])).toEqual([
      [1, 'STORE_FAILURE', 1n],
      [2, 'STORE_FAILURE', 1n],
    ]);
    expect(hub.frames.filter((f) => f.t === 'ack')).toEqual([]);
    expect(hub.table.isFrozen(channelId)).toBe(true);
    expect(hub.table.get(channelId)!.latest).toEqual(record.latest);

    // The writes after the failed one (the freeze's probe, the thaw's step) hold the channel as it was, until the
    // device's next update lands.
    await expect.poll(() => hub.commits.length, { timeout: 10_000 }).toBe(2);
    expect(versionsIn(hub.commits[1]!.writes)).toEqual([1n]);
    hub.commits[1]!.resolve();
    await expect.poll(() => hub.table.isFrozen(channelId)).toBe(false);
    hub.pay(3, 2n, 25n);
    for (let i = 2; ; i++) {
      await expect.poll(() => hub.commits.length).toBeGreaterThan(i);
      const versions = versionsIn(hub.commits[i]!.writes);
      hub.commits[i]!.resolve();
      if (versions[0] !== 1n) {
        expect(versions).toEqual([2n]);
        break;
      }
    }
    await expect.poll(() => hub.frames.filter((f) => f.t === 'ack')).toMatchObject([{ id: 3, version: 2n }]);
    expect(hub.table.get(channelId)!.latest.state).toEqual(at(2n, 25n));
  });

  it('checks a queued update’s route only once the step before it is durable and its routes forwarded', async () => {
    const hub = openTable();
    hub.pay(1, 2n, 20n, { to: payee, amount: 10n, paymentId: paymentId(1) });
    await expect.poll(() => hub.commits.length).toBe(1);
    hub.pay(2, 3n, 30n, { to: payee, amount: 10n, paymentId: paymentId(2) });
    await expect.poll(() => hub.answered()).toBe(2);
    expect(hub.events).toEqual([`check ${paymentId(1)} after 0 commits`]);

    hub.commits[0]!.resolve();
    await expect.poll(() => hub.commits.length).toBe(2);
    hub.commits[1]!.resolve();
    await expect.poll(() => hub.events.length).toBe(4);
    expect(hub.events).toEqual([
      `check ${paymentId(1)} after 0 commits`,
      `routed ${paymentId(1)}`,
      `check ${paymentId(2)} after 1 commits`,
      `routed ${paymentId(2)}`,
    ]);
  });
});
