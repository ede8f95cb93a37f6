import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { Contract, ContractFactory, Interface, Signature, type TransactionReceipt } from 'ethers';
import { decodeRevertData } from '@trickle/chain/errors';
import { adjudicatorInterface } from '@trickle/chain/events';
import { ReentrantReceiverArtifact } from '@trickle/chain/generated/artifacts';
import { channelIdOf, stateDigest } from '@trickle/protocol/eip712';
import { signatureToHex } from '@trickle/protocol/signer';
import type { Address, ChannelId, ChannelParams, Hex, State } from '@trickle/protocol/types';
import { CHALLENGE, createFixture, deltas, ETH, ONE_ETH, type Fixture } from './fixture.js';

/**
 * Re-entrancy through an ETH payout: a participant that is a contract (ReentrantReceiver) takes its payout in
 * `receive` and, within the push's 30,000 gas, calls the adjudicator again — to force-close another of its channels
 * (a call that needs no signature and that it may make at any other time) or to withdraw. The guard refuses each
 * attempt (`ReentrancyGuardReentrantCall`), the payouts are exact and the other channel is untouched; the same call
 * made afterwards, outside the payout, succeeds (so only the guard stopped it).
 */
let fx: Fixture;
let receiver: Contract;
let receiverAddress: Address;
const receiverInterface = new Interface(ReentrantReceiverArtifact.abi as never);
const Mode = { None: 0, Withdraw: 1, ForceClose: 2 } as const;

beforeAll(async () => {
  fx = await createFixture();
  const factory = new ContractFactory(
    ReentrantReceiverArtifact.abi as never,
    ReentrantReceiverArtifact.bytecode,
    fx.deployer,
  );
  const deployed = await factory.deploy(fx.adj.address);
  await deployed.waitForDeployment();
  receiverAddress = (await deployed.getAddress()) as Address;
  receiver = new Contract(receiverAddress, ReentrantReceiverArtifact.abi as never, fx.relayer);
  await fx.rebase();
});
afterAll(() => fx.close());
beforeEach(() => fx.reset());

const call = (fn: string, args: unknown[]): string => adjudicatorInterface.encodeFunctionData(fn, args);

/** The receiver (as the device) opens an ETH channel with `deposit`; the hub tops it up with `hubDeposit`. */
async function openAsReceiver(deposit: bigint, hubDeposit: bigint): Promise<ChannelId> {
  const params: ChannelParams = fx.params(ETH, { device: receiverAddress });
  await (await receiver.getFunction('act').send(call('open', [params, deposit]), { value: deposit })).wait();
  const id = channelIdOf(params);
  if (hubDeposit > 0n) await fx.adj.connect(fx.hub).deposit(id, hubDeposit, { token: ETH });
  return id;
}

/** The hub's signature over `state`, 65 bytes, and compact (r, vs) for `forceClose`. */
function hubSigned(state: State): { sig: string; r: string; vs: string } {
  const sig: string = signatureToHex(fx.hubKey.signDigest(stateDigest(fx.sep, state)));
  const s = Signature.from(sig);
  return { sig, r: s.r, vs: s.yParityAndS };
}

/** The receiver's events in `receipt`. */
function receiverEvents(receipt: TransactionReceipt): { name: string; args: Record<string, unknown> }[] {
  return receipt.logs
    .filter((l) => l.address.toLowerCase() === receiverAddress.toLowerCase())
    .map((l) => receiverInterface.parseLog(l)!)
    .map((e) => ({ name: e.name, args: e.args.toObject() }));
}

async function arm(mode: number, other: ChannelId | string = `0x${'00'.repeat(32)}`): Promise<void> {
  await (await receiver.getFunction('arm').send(mode, other)).wait();
}

describe('ETH payouts to a contract that re-enters from receive', () => {
  it('settle: the receiver’s force close of its other channel from receive is refused by the guard; payouts exact, the other channel still open', async () => {
    const id = await openAsReceiver(ONE_ETH, ONE_ETH);
    const other = await openAsReceiver(ONE_ETH / 2n, 0n);
    // The receiver force-closes with a state only the hub signed (its own consent is the transaction).
    const state = fx.state(id, { version: 2n, paidByHub: ONE_ETH / 4n });
    const { r, vs } = hubSigned(state);
    await (await receiver.getFunction('act').send(call('forceClose', [state, r, vs]))).wait();
    await fx.chain.increaseTime(CHALLENGE);
    await arm(Mode.ForceClose, other);

    let receipt: TransactionReceipt | undefined;
    const [toReceiver, toHub] = await deltas(fx, ETH, [receiverAddress, fx.hub.address], async () => {
      receipt = (await fx.adj.connect(fx.relayer).settle(id)).receipt;
    });
    expect([toReceiver, toHub]).toEqual([ONE_ETH + ONE_ETH / 4n, ONE_ETH - ONE_ETH / 4n]);
    const events = receiverEvents(receipt!);
    expect(events.map((e) => e.name)).toEqual(['Received', 'Reentered']);
    expect(events[1]!.args['ok']).toBe(false);
    expect(decodeRevertData(events[1]!.args['returnData'] as Hex)?.error).toBe('ReentrancyGuardReentrantCall');
    expect(await fx.adj.owed(ETH, receiverAddress)).toBe(0n);
    expect((await fx.adj.getChannel(other)).status).toBe('open');
    expect(await fx.balance(ETH, fx.adj.address)).toBe(ONE_ETH / 2n); // only the other channel's deposit is left

    // The same call outside a payout is the receiver's right: it succeeds, so the guard alone refused it above.
    await arm(Mode.None);
    const zero = fx.state(other);
    await (
      await receiver.getFunction('act').send(call('forceClose', [zero, `0x${'00'.repeat(32)}`, `0x${'00'.repeat(32)}`]))
    ).wait();
    expect((await fx.adj.getChannel(other)).status).toBe('closing');
  });

  it('cooperative close submitted by the receiver (its own signature left out): a withdraw or force close from receive is refused; the close pays exactly', async () => {
    for (const mode of [Mode.Withdraw, Mode.ForceClose]) {
      await fx.reset();
      const id = await openAsReceiver(ONE_ETH, ONE_ETH);
      const other = await openAsReceiver(ONE_ETH / 2n, 0n);
      await arm(mode, other);
      const final = fx.state(id, { version: 5n, paidByDevice: ONE_ETH / 10n, isFinal: true });
      const { sig } = hubSigned(final);
      let receipt: TransactionReceipt | undefined;
      const [toReceiver, toHub] = await deltas(fx, ETH, [receiverAddress, fx.hub.address], async () => {
        receipt =
          (await (await receiver.getFunction('act').send(call('cooperativeClose', [final, '0x', sig]))).wait()) ??
          undefined;
      });
      expect([toReceiver, toHub]).toEqual([ONE_ETH - ONE_ETH / 10n, ONE_ETH + ONE_ETH / 10n]);
      const events = receiverEvents(receipt!);
      expect(
        events.map((e) => e.name),
        `mode ${mode}`,
      ).toEqual(['Received', 'Reentered']);
      expect(events[1]!.args['ok']).toBe(false);
      expect(decodeRevertData(events[1]!.args['returnData'] as Hex)?.error).toBe('ReentrancyGuardReentrantCall');
      expect((await fx.adj.getChannel(id)).status).toBe('closed');
      expect((await fx.adj.getChannel(other)).status).toBe('open');
      expect(await fx.balance(ETH, fx.adj.address)).toBe(ONE_ETH / 2n);
    }
  });
});
