// Test fixture (not built: tsconfig excludes *.fixture.ts): the records the hub store tests write — a channel record,
// its state, a routed payment — with a default for every field a test does not look at, and the SIGKILL rounds the
// store suites share.
import { fileURLToPath } from 'node:url';
import { expect } from 'vitest';
import type { Address, Bytes32, ChannelId, ChannelParams, State } from '@trickle/protocol/types';
import type { ChannelRecord, HubStore, RouteRecord } from './types.js';
import { killAfterLines } from '../../../../test/helpers/kill-after-lines.mjs';

/** `n` as a 32-byte hex word (a payment id, a salt). */
export const hex32 = (n: number | bigint): Bytes32 => `0x${n.toString(16).padStart(64, '0')}` as Bytes32;
/** `n` as a channel id. */
export const channelIdOf = (n: number | bigint): ChannelId => hex32(n) as string as ChannelId;

/** The parties of {@link testRecord}'s channel unless a test names others. */
export const TEST_PARTIES = {
  adjudicator: '0x5FbDB2315678afecb367f032d93F642f64180aa3' as Address,
  device: '0x19E7E376E7C213B7E7e7e46cc70A5dD086DAff2A' as Address,
  hub: '0x1563915e194D8CfBA1943570603F7606A3115508' as Address,
  token: '0x0000000000000000000000000000000000000000' as Address,
} as const;

/**
 * A state of `channelId` at `version`, nothing paid, not final, unless `more` says otherwise. Without lock fields
 * unless given: the fields every version of `State` has, the shape the stores keep lock-free.
 */
export function testState(channelId: ChannelId, version: bigint, more: Partial<State> = {}): State {
  return {
    channelId,
    version,
    paidByDevice: 0n,
    paidByHub: 0n,
    round: 0n,
    isFinal: false,
    ...more,
  } as unknown as State;
}

/** What {@link testRecord} takes besides the channel and version: any field of the record, the params and the state in part. */
export interface TestRecordOptions extends Partial<Omit<ChannelRecord, 'params' | 'channelId' | 'latest'>> {
  readonly params?: Partial<ChannelParams>;
  /** Fields of the latest state over {@link testState}'s. */
  readonly state?: Partial<State>;
  /** Signatures on the latest state. */
  readonly latest?: Omit<ChannelRecord['latest'], 'state'>;
}

/**
 * An open channel record of `channelId` whose latest state (hub-signed) is at `version`: salt = the channel id, the
 * {@link TEST_PARTIES}, a 3,600 s challenge, funded 100 by the device; `more` overrides any of it.
 */
export function testRecord(channelId: ChannelId, version: bigint, more: TestRecordOptions = {}): ChannelRecord {
  const { params, state, latest, ...rest } = more;
  return {
    params: {
      chainId: 31337n,
      ...TEST_PARTIES,
      challengeDuration: 3600n,
      salt: channelId as string as Bytes32,
      ...params,
    },
    channelId,
    funding: { device: 100n, hub: 0n },
    status: 'open',
    latest: { state: testState(channelId, version, state), ...latest },
    hubSignedVersion: version,
    ...rest,
  };
}

/** A delivered route of `paymentId`, 1,000 from the test device to the test hub over channel 1, unless `more` says. */
export function testRoute(paymentId: Bytes32, more: Partial<RouteRecord> = {}): RouteRecord {
  return {
    paymentId,
    from: TEST_PARTIES.device,
    to: TEST_PARTIES.hub,
    fromChannel: channelIdOf(1),
    amount: 1000n,
    status: 'delivered',
    ...more,
  };
}

/**
 * `rounds` times: run store-crash-child.mjs on the store at `where` (its log files of `logBytes`), SIGKILL it after 150
 * printed commits, reopen the store with `open` and check every commit the child saw resolve is there (the one after
 * it may be too, none later) and that deletes stayed deleted.
 */
export async function expectSurvivesKills(
  where: string,
  open: () => HubStore,
  { rounds, logBytes }: { rounds: number; logBytes: number },
): Promise<void> {
  const child = fileURLToPath(new URL('./store-crash-child.mjs', import.meta.url));
  for (let round = 0; round < rounds; round++) {
    const { lines, stderr: err } = await killAfterLines(child, [where, String(logBytes), '100000', '20000'], 150);
    expect(err).toBe('');
    const printed = lines.map(Number);
    const seen = printed[printed.length - 1]!;
    expect(printed.length).toBeGreaterThanOrEqual(150);
    const s = open();
    const last = Number(await s.getMeta('last'));
    // The commit after the last printed one may have become durable before the kill; none later can have.
    expect([seen, seen + 1]).toContain(last);
    expect((await s.loadMetaPrefix('k/')).map((e) => e.key).sort()).toEqual(expectedKeys(last).sort());
    await s.close();
  }
}

/** The `k/` keys after commits 1..n of the crash child's pattern: the odd numbers, and n. */
export function expectedKeys(n: number): string[] {
  const keys = new Set<string>();
  for (let k = 1; k <= n; k += 2) keys.add(`k/${k}`);
  keys.add(`k/${n}`);
  return [...keys];
}
