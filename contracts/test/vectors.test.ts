import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { startLocalChain, type LocalChain } from '@trickle/devchain/localChain';
import { deployAdjudicator } from '@trickle/chain/deploy';
import type { Adjudicator } from '@trickle/chain/adjudicator';
import type { ChannelParams, State } from '@trickle/protocol/types';

const vectors = (name: string) =>
  JSON.parse(readFileSync(new URL(`../../protocol-spec/vectors/${name}`, import.meta.url), 'utf8')).vectors as any[];

/**
 * The JSON vectors of protocol-spec/ checked against the deployed bytecode: the adjudicator computes the same
 * channel ids and EIP-712 digests the TypeScript core signs (the vectors include a domain for the adjudicator as
 * these tests deploy it: the first contract of local account 0 on chain 31337).
 */
describe('protocol-spec vectors on the adjudicator', () => {
  let chain: LocalChain;
  let adj: Adjudicator;
  beforeAll(async () => {
    chain = await startLocalChain({ accounts: 2 });
    adj = await deployAdjudicator(chain.wallet(0)); // nonce 0: the address the vectors name
  });
  afterAll(async () => chain?.close());

  it('the deployment matches the vectors’ local domain', () => {
    expect(vectors('signed-states.json').some((v) => v.domain.verifyingContract === adj.address)).toBe(true);
  });

  it('channel ids: keccak256(abi.encode(...)) on-chain equals the vector', async () => {
    const local = vectors('channel-ids.json').filter((v) => v.params.adjudicator === adj.address);
    expect(local.length).toBeGreaterThan(0);
    for (const v of local) {
      const p = {
        ...v.params,
        chainId: BigInt(v.params.chainId),
        challengeDuration: BigInt(v.params.challengeDuration),
      } as ChannelParams;
      expect(await adj.channelIdOf(p)).toBe(v.channelId);
    }
  });

  it('state digests: the contract hashes exactly what the vectors sign', async () => {
    const local = vectors('signed-states.json').filter((v) => v.domain.verifyingContract === adj.address);
    expect(local.length).toBeGreaterThanOrEqual(2);
    for (const v of local) {
      const m = v.message;
      const state: State = {
        channelId: m.channelId,
        version: BigInt(m.version),
        paidByDevice: BigInt(m.paidByDevice),
        paidByHub: BigInt(m.paidByHub),
        round: BigInt(m.round),
        locksRoot: m.locksRoot,
        lockedByDevice: BigInt(m.lockedByDevice),
        lockedByHub: BigInt(m.lockedByHub),
        isFinal: m.isFinal,
      };
      expect(await adj.stateDigest(state)).toBe(v.digest);
    }
  });

  it('lock roots: the contract computes every root of vectors/locks.json', async () => {
    const file = JSON.parse(
      readFileSync(new URL('../../protocol-spec/vectors/locks.json', import.meta.url), 'utf8'),
    ) as { vectors: { locks: any[]; locksRoot: string }[] };
    expect(file.vectors.length).toBeGreaterThanOrEqual(3);
    for (const v of file.vectors) {
      const locks = v.locks.map((l) => ({ ...l, amount: BigInt(l.amount), expiry: BigInt(l.expiry) }));
      expect(await adj.locksRoot(locks)).toBe(v.locksRoot);
    }
  });
});
