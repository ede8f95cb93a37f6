import {
  getAddress,
  JsonRpcApiProvider,
  type BaseContract,
  type ContractTransactionResponse,
  type Overrides,
  type Provider,
  type TransactionReceipt,
} from 'ethers';
import { TrickleError } from '@trickle/protocol/errors';
import type { Address, Hex } from '@trickle/protocol/types';
import { decodeChainError, revertDataOf } from '../errors.js';
import { parseLogs } from '../events.js';
import type { ReplaceOptions, StuckCopy, StuckCopyStore, TxOptions, TxResult } from '../types.js';

/** Gas limits tried, in order, when the node cannot estimate (the last is EIP-7825's transaction gas cap). */
const PROBE_LIMITS = [500_000n, 2_000_000n, 8_000_000n, 1n << 24n];

/**
 * The node's gas estimate; if the node fails to estimate without a revert (Hardhat's EDR, whose block gas limit is
 * above the per-transaction cap, probes limits it then refuses for calls that forward a fixed amount of gas, like
 * the adjudicator's payout pushes), the smallest of {@link PROBE_LIMITS} at which the call succeeds. A revert is
 * thrown as it comes. With `inPlaceOf` (a send replacing the account's stuck copy, from `from`), a JSON-RPC node is
 * asked on the latest block, where the replacement runs in the copy's place: nodes that estimate on the pending block
 * by default (Hardhat's EDR) count the copy as executed first, and the same call after it can need much less (a second
 * reveal of one preimage stores nothing), a limit that then runs out of gas.
 */
async function estimate(
  fn: ReturnType<BaseContract['getFunction']>,
  args: readonly unknown[],
  overrides: Overrides,
  inPlaceOf?: { readonly provider: Provider; readonly from: string },
): Promise<bigint> {
  try {
    const p = inPlaceOf?.provider;
    if (p instanceof JsonRpcApiProvider) {
      const tx = p.getRpcTransaction({ ...(await fn.populateTransaction(...args, overrides)), from: inPlaceOf!.from });
      return BigInt((await p.send('eth_estimateGas', [tx, 'latest'])) as string);
    }
    return await fn.estimateGas(...args, overrides);
  } catch (e) {
    if (revertDataOf(e) !== undefined) throw e;
    for (const gasLimit of PROBE_LIMITS) {
      try {
        await fn.staticCall(...args, { ...overrides, gasLimit });
        return gasLimit;
      } catch (probe) {
        const data: string | undefined = revertDataOf(probe);
        if (data !== undefined && data !== '0x') throw probe;
      }
    }
    throw e;
  }
}

/**
 * Send a contract transaction, wait for it to be mined, and return its receipt and adjudicator events. Reverts
 * (at gas estimation, at submission, or mined with status 0) come back as decoded TrickleErrors.
 */
export async function sendTx(
  contract: BaseContract,
  method: string,
  args: readonly unknown[],
  opts: TxOptions & { value?: bigint | undefined } = {},
): Promise<TxResult> {
  const overrides: Overrides & { value?: bigint } = {};
  if (opts.gasLimit !== undefined) overrides.gasLimit = opts.gasLimit;
  if (opts.nonce !== undefined) overrides.nonce = opts.nonce;
  if (opts.value !== undefined && opts.value !== 0n) overrides.value = opts.value;
  let receipt: TransactionReceipt | null;
  if (opts.replace !== undefined) {
    receipt = await sendReplacing(contract, method, args, overrides, opts.replace);
  } else {
    let tx: ContractTransactionResponse;
    try {
      const fn = contract.getFunction(method);
      if (overrides.gasLimit === undefined) overrides.gasLimit = await estimate(fn, args, overrides);
      const provider: Provider | null | undefined = contract.runner?.provider;
      const signer = typeof (contract.runner as { getAddress?: unknown } | null)?.getAddress === 'function';
      tx =
        overrides.nonce == null && provider != null && signer
          ? await nonceTurn(accountOf(provider, await senderOf(contract)), () => fn.send(...args, overrides))
          : await fn.send(...args, overrides);
    } catch (e) {
      throw decodeChainError(e);
    }
    try {
      receipt = await tx.wait();
    } catch (e) {
      throw decodeChainError(revertDataOf(e) === undefined ? await replayRevert(tx, e) : e);
    }
    if (receipt === null) throw decodeChainError(new Error(`transaction ${tx.hash} was dropped`));
  }
  return {
    hash: receipt.hash as Hex,
    blockNumber: receipt.blockNumber,
    gasUsed: receipt.gasUsed,
    events: parseLogs(receipt.logs, await contract.getAddress()),
    receipt,
  };
}

/** Defaults of {@link ReplaceOptions}. */
export const REPLACE_DEFAULTS = { everyBlocks: 2, everyMs: 15_000, bumpPercent: 20, capTimes: 10n, pollMs: 1_000 };

/** The least raise a node accepts for a replacement (12.5%, rounded up; geth wants 10%). */
const minRaise = (fee: bigint): bigint => fee + (fee + 7n) / 8n;

function positiveInt(name: string, v: number, min: number): number {
  if (!Number.isSafeInteger(v) || v < min)
    throw new TrickleError('INVALID_ARGUMENT', `replace.${name} must be an integer of at least ${min}`, {
      details: { [name]: v },
    });
  return v;
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * A copy a replace-by-fee send gave up on (fee cap, deadline, a failed re-send) while none of its copies was mined:
 * it stays in the mempool holding its nonce, and every later transaction of the account would queue behind it.
 */
interface Abandoned {
  readonly nonce: number;
  /** Fees of the newest copy the node accepted: a replacement must raise both by the node's rule. */
  readonly maxFee: bigint;
  readonly tip: bigint;
}

/** What this process knows of one account's abandoned copies on one provider (one chain). */
interface Account {
  /** Abandoned copies no send has taken, lowest nonce first. */
  abandoned: Abandoned[];
  /** Abandoned copies a running send took (to replace them), by nonce: saved with the others until it ends. */
  readonly taken: Map<number, Abandoned>;
  /**
   * The newest copy of each running send with a store, by nonce: saved with the others as soon as it is sent, so that
   * a process that dies mid-send (killed, crashed) leaves it to its restart to replace. Dropped when the send ends
   * (mined: a stale entry of a mined nonce is skipped when read; given up: it is abandoned).
   */
  readonly inFlight: Map<number, Abandoned>;
  /** Each store's copies, read once (merged into `abandoned`) before the account's first send with it. */
  readonly loads: WeakMap<StuckCopyStore, Promise<void>>;
  /** The last save in flight: saves land in the order they were made. */
  saving: Promise<unknown>;
  /** The last first send in flight (see {@link nonceTurn}): the account's sends take new nonces one at a time. */
  sending: Promise<unknown>;
}

/**
 * The abandoned nonces of each account, per provider (one chain), lowest first. The account's next replace-by-fee
 * send takes the lowest one (whatever its call: the caller that gave up was told so and sends again if it still
 * needs to), so it replaces the stuck copy instead of waiting behind it. Per account, not per call: a stuck nonce
 * blocks every later transaction of the account. Forgotten once the nonce is mined (by any copy) or dropped. In
 * memory, and in the caller's {@link StuckCopyStore} when it gives one, so that a restarted process replaces a copy
 * an earlier one abandoned.
 */
const accounts = new WeakMap<Provider, Map<string, Account>>();
/** Most abandoned nonces remembered per account (the highest is forgotten beyond). */
const MAX_ABANDONED = 64;

function accountOf(provider: Provider, from: string): Account {
  let byAccount = accounts.get(provider);
  if (byAccount === undefined) accounts.set(provider, (byAccount = new Map()));
  let account = byAccount.get(from);
  if (account === undefined)
    byAccount.set(
      from,
      (account = {
        abandoned: [],
        taken: new Map(),
        inFlight: new Map(),
        loads: new WeakMap(),
        saving: Promise.resolve(),
        sending: Promise.resolve(),
      }),
    );
  return account;
}

/** Remember `a` as abandoned (over what was known of its nonce, unless that was priced higher). */
function rememberAbandoned(account: Account, a: Abandoned): void {
  account.taken.delete(a.nonce);
  const known = account.abandoned.find((x) => x.nonce === a.nonce);
  if (known !== undefined && known.maxFee > a.maxFee) return;
  const list = account.abandoned.filter((x) => x.nonce !== a.nonce);
  list.push(a);
  list.sort((x, y) => x.nonce - y.nonce);
  account.abandoned = list.slice(0, MAX_ABANDONED);
}

/**
 * Take (synchronously, so that two concurrent sends never both take it) the account's lowest abandoned nonce that is
 * not mined yet. (The node's pending count cannot tell whether the copy is still waiting: EDR's leaves out a copy
 * priced below the next base fee. One dropped from the mempool is harmless to reuse: every lower nonce was used.) One
 * above the pending count is no copy this chain holds (a stored copy of another chain with the same id, e.g. a
 * development chain started again): sending at it would leave a gap no later transaction of the account gets past.
 */
async function takeAbandoned(provider: Provider, from: string, account: Account): Promise<Abandoned | undefined> {
  for (;;) {
    const a = account.abandoned.shift();
    if (a === undefined) return undefined;
    account.taken.set(a.nonce, a);
    const [latest, pending] = await Promise.all([
      provider.getTransactionCount(from, 'latest'),
      provider.getTransactionCount(from, 'pending'),
    ]);
    if (a.nonce >= latest && a.nonce <= Math.max(latest, pending)) return a;
    account.taken.delete(a.nonce);
  }
}

/** A stored copy, checked (a store is outside data): as {@link Abandoned}. */
function fromStored(c: StuckCopy): Abandoned {
  const fee = (v: unknown) => typeof v === 'bigint' && v >= 0n;
  if (!Number.isSafeInteger(c?.nonce) || c.nonce < 0 || !fee(c.maxFeePerGas) || !fee(c.maxPriorityFeePerGas))
    throw new TrickleError('STORE_FAILURE', 'a stored stuck copy is malformed', { details: { copy: c } });
  return { nonce: c.nonce, maxFee: c.maxFeePerGas, tip: c.maxPriorityFeePerGas };
}

/**
 * Read `store`'s copies of the account into memory, once (concurrent sends wait for the same read; a failed read is
 * tried again by the next send). A nonce a running send of this process holds is left to it.
 * @throws TrickleError `STORE_FAILURE` when the store cannot be read
 */
async function loadStuck(account: Account, store: StuckCopyStore, address: Address): Promise<void> {
  let loading = account.loads.get(store);
  if (loading === undefined) {
    loading = (async () => {
      let copies: readonly StuckCopy[];
      try {
        copies = await store.load(address);
      } catch (cause) {
        throw new TrickleError('STORE_FAILURE', 'cannot read the stuck copies of the sending account', {
          details: { account: address },
          cause,
        });
      }
      for (const c of copies) {
        const a = fromStored(c);
        if (!account.taken.has(a.nonce) && !account.inFlight.has(a.nonce)) rememberAbandoned(account, a);
      }
    })();
    account.loads.set(store, loading);
    // Not cached when it failed: the next send reads again (this send gets the failure through `loading`).
    loading.then(undefined, () => account.loads.delete(store));
  }
  await loading;
}

/**
 * Save the account's abandoned copies, those running sends took and those in flight included (one per nonce, the
 * highest priced), after the saves made before.
 */
function saveStuck(account: Account, store: StuckCopyStore, address: Address): Promise<void> {
  const byNonce = new Map<number, Abandoned>();
  for (const a of [...account.abandoned, ...account.taken.values(), ...account.inFlight.values()]) {
    const known = byNonce.get(a.nonce);
    if (known === undefined || a.maxFee > known.maxFee) byNonce.set(a.nonce, a);
  }
  const copies: StuckCopy[] = [...byNonce.values()]
    .sort((x, y) => x.nonce - y.nonce)
    .map((a) => ({ nonce: a.nonce, maxFeePerGas: a.maxFee, maxPriorityFeePerGas: a.tip }));
  const saved = account.saving.then(() => store.save(address, copies));
  account.saving = saved.then(
    () => undefined,
    () => undefined, // orders the next save only; this one's failure is its caller's, through `saved`
  );
  return saved;
}

/**
 * `e` (the send's own error, decoded) once the account's copies are saved; when the save fails, the same error with
 * `details.stuckCopyUnsaved` and the save's failure as its cause (a restarted process will not know the copy).
 */
async function afterSave(e: unknown, save: Promise<void> | undefined): Promise<TrickleError> {
  const err = decodeChainError(e);
  if (save === undefined) return err;
  try {
    await save;
    return err;
  } catch (cause) {
    return new TrickleError(err.code, err.shortMessage, {
      details: { ...err.details, stuckCopyUnsaved: true },
      cause,
    });
  }
}

/** The sending account of a contract's runner (a `Signer`). */
/**
 * Runs `send` (a first send, whose nonce the signer reads from the node's pending count) after the account's previous
 * one has reached the node. Sends of one account may run at once (a hub answering many force closes in one challenge
 * period sends its challenges together rather than one per block), and two that read the pending count together
 * would take the same nonce: one would replace or refuse the other.
 */
function nonceTurn<T>(account: Account, send: () => Promise<T>): Promise<T> {
  const turn = account.sending.then(send, send);
  account.sending = turn.then(
    () => undefined,
    () => undefined,
  );
  return turn;
}

async function senderOf(contract: BaseContract): Promise<string> {
  const runner = contract.runner as { getAddress?: () => Promise<string> } | null;
  if (typeof runner?.getAddress !== 'function')
    throw new TrickleError('INVALID_ARGUMENT', 'replace needs a runner that is a signer');
  return (await runner.getAddress()).toLowerCase();
}

/**
 * Send the call and, while no copy is mined, send it again with the same nonce and higher fees every
 * `everyBlocks` blocks or `everyMs` ms (see {@link ReplaceOptions}). Receipts are polled by hash for every copy
 * sent (never `wait()`, which throws TRANSACTION_REPLACED on the copies that lost): the one mined is the result.
 * A send that gives up with a copy unmined remembers its nonce, which the account's next send (without an explicit
 * nonce) takes, priced at least 12.5% above that copy ({@link Abandoned}); with `r.stuckCopies` it is saved there too,
 * and read back by a restarted process before its first send.
 * @throws TrickleError `LIMIT_EXCEEDED` (fee cap reached; also at once, nothing sent, when the cap is below what
 *   replacing the account's abandoned copy takes), `TIMEOUT` (deadline passed), `CHAIN_REVERTED`, `INTERNAL`
 *   (the nonce was taken by another transaction; a replacement of an abandoned copy refused as underpriced: the next
 *   send goes above it), `STORE_FAILURE` (`r.stuckCopies` could not be read: nothing sent); details name every
 *   copy's hash, and `stuckCopyUnsaved` when the give-up could not be saved
 */
async function sendReplacing(
  contract: BaseContract,
  method: string,
  args: readonly unknown[],
  overrides: Overrides,
  r: ReplaceOptions,
): Promise<TransactionReceipt> {
  const everyBlocks = positiveInt('everyBlocks', r.everyBlocks ?? REPLACE_DEFAULTS.everyBlocks, 1);
  const everyMs = positiveInt('everyMs', r.everyMs ?? REPLACE_DEFAULTS.everyMs, 1);
  const bumpPercent = BigInt(positiveInt('bumpPercent', r.bumpPercent ?? REPLACE_DEFAULTS.bumpPercent, 13));
  const pollMs = positiveInt('pollMs', r.pollMs ?? REPLACE_DEFAULTS.pollMs, 1);
  if (r.maxFeePerGas !== undefined && r.maxFeePerGas <= 0n)
    throw new TrickleError('INVALID_ARGUMENT', 'replace.maxFeePerGas must be positive');
  const provider: Provider | null | undefined = contract.runner?.provider;
  if (provider == null) throw new TrickleError('INVALID_ARGUMENT', 'replace needs a runner with a provider');
  const fn = contract.getFunction(method);
  const sent: ContractTransactionResponse[] = [];
  const hashes = (): Hex[] => sent.map((t) => t.hash as Hex);
  let nonce: number | undefined = overrides.nonce ?? undefined;
  let legacy = false;
  let maxFee = 0n;
  let tip = 0n;
  let cap = 0n;
  /** The head and the time when the last copy was sent: its bound counts from there. */
  let fromBlock = 0;
  let since = 0;
  /** The newest copy the node accepted: what is left in the mempool if this send gives up. */
  let pending: Abandoned | undefined;
  let from: string;
  let account: Account;
  let reused: Abandoned | undefined;
  const store = r.stuckCopies;
  let address: Address;
  try {
    from = await senderOf(contract);
    address = getAddress(from) as Address;
    account = accountOf(provider, from);
    if (nonce === undefined) {
      if (store !== undefined) await loadStuck(account, store, address);
      reused = await takeAbandoned(provider, from, account);
    }
  } catch (e) {
    throw decodeChainError(e);
  }
  /** Remember `a` as abandoned; the save's promise when there is a store (its failure is reported with the error). */
  const abandon = (a: Abandoned): Promise<void> | undefined => {
    account.inFlight.delete(a.nonce);
    rememberAbandoned(account, a);
    return store === undefined ? undefined : saveStuck(account, store, address);
  };
  /** Set once the nonce is spent (a copy mined, or another transaction took it): nothing is left to remember. */
  let spent = false;

  /** The sender is stopping: give up before sending anything more (the copy sent last is remembered). */
  const checkAborted = (): void => {
    if (r.signal?.aborted === true)
      throw new TrickleError('TIMEOUT', `${method} given up: the sender is stopping`, {
        details: { method, aborted: true, nonce, hashes: hashes() },
      });
  };
  const send = async (): Promise<void> => {
    checkAborted();
    fromBlock = await provider.getBlockNumber(); // before sending: a block mined meanwhile counts towards the bound
    since = Date.now();
    const fees = legacy ? { gasPrice: maxFee } : { maxFeePerGas: maxFee, maxPriorityFeePerGas: tip };
    const tx =
      nonce === undefined
        ? await nonceTurn(account, () => fn.send(...args, { ...overrides, ...fees }))
        : await fn.send(...args, { ...overrides, ...fees, nonce });
    nonce = tx.nonce;
    sent.push(tx);
    pending = { nonce, maxFee, tip };
    if (store !== undefined) {
      // Written as soon as it is out, so that a process that dies mid-send leaves a copy its restart replaces (the
      // next send takes its nonce) instead of queuing behind it. Not awaited: a store that is slow or failing must not
      // hold up following and re-pricing the copy (a dispute's deadline runs). A failed write is not the send's
      // failure: every save writes the whole list, so the next one (a re-priced copy, a give-up, another send) writes
      // it again, and a give-up whose save fails is reported (`stuckCopyUnsaved`).
      account.inFlight.set(nonce, pending);
      void saveStuck(account, store, address).then(
        () => undefined,
        () => undefined,
      );
    }
    r.onSend?.({
      hash: tx.hash as Hex,
      nonce,
      attempt: sent.length - 1,
      maxFeePerGas: maxFee,
      maxPriorityFeePerGas: tip,
    });
  };
  /** The receipt of the copy that was mined, if one was; a reverted one is thrown decoded. */
  const mined = async (): Promise<TransactionReceipt | undefined> => {
    for (const tx of sent) {
      const receipt = await provider.getTransactionReceipt(tx.hash);
      if (receipt === null) continue;
      spent = true;
      if (receipt.status === 0) {
        const reverted = Object.assign(new Error(`transaction ${tx.hash} reverted`), {
          code: 'CALL_EXCEPTION',
          receipt,
        });
        throw decodeChainError(await replayRevert(tx, reverted));
      }
      return receipt;
    }
    return undefined;
  };

  try {
    if (overrides.gasLimit === undefined)
      overrides.gasLimit = await estimate(fn, args, overrides, reused && { provider, from });
    const fee = await provider.getFeeData();
    legacy = fee.maxFeePerGas === null || fee.maxPriorityFeePerGas === null;
    maxFee = (legacy ? fee.gasPrice : fee.maxFeePerGas) ?? 0n;
    tip = legacy ? maxFee : (fee.maxPriorityFeePerGas ?? 0n);
    cap = r.maxFeePerGas ?? maxFee * REPLACE_DEFAULTS.capTimes;
    if (reused !== undefined) {
      // Replace the account's abandoned copy: its nonce, both fees raised by what nodes accept for a replacement.
      if (minRaise(reused.maxFee) > cap) {
        throw new TrickleError(
          'LIMIT_EXCEEDED',
          `${method} cannot replace the account's stuck copy under the fee cap`,
          {
            details: {
              method,
              limit: 'maxFeePerGas',
              maxFeePerGas: cap,
              lastFeePerGas: reused.maxFee,
              nonce: reused.nonce,
            },
          },
        );
      }
      nonce = reused.nonce;
      if (maxFee < minRaise(reused.maxFee)) maxFee = minRaise(reused.maxFee);
      if (tip < minRaise(reused.tip)) tip = minRaise(reused.tip);
    }
    if (maxFee > cap) maxFee = cap;
    if (tip > maxFee) tip = maxFee;
    await send();
  } catch (e) {
    if (reused !== undefined && sent.length === 0) {
      const code = (e as { code?: unknown } | null)?.code;
      // The stuck copy was mined meanwhile (its nonce is spent): send afresh. Otherwise it is still stuck.
      if (code === 'NONCE_EXPIRED') {
        account.taken.delete(reused.nonce);
        return sendReplacing(contract, method, args, overrides, r);
      }
      // Refused as underpriced: a copy priced above what was known holds the nonce (one a process sent and could not
      // save before it stopped). The next send goes at least 12.5% above the fees just tried, and so on up to the cap.
      const stillStuck =
        code === 'REPLACEMENT_UNDERPRICED' && maxFee > reused.maxFee ? { nonce: reused.nonce, maxFee, tip } : reused;
      throw await afterSave(e, abandon(stillStuck));
    }
    throw decodeChainError(e);
  }
  /** Polls for a mined copy, sending a re-priced one at every bound, until one is mined or the send gives up. */
  const follow = async (): Promise<TransactionReceipt> => {
    for (;;) {
      for (;;) {
        const receipt = await mined();
        if (receipt !== undefined) return receipt;
        checkAborted();
        const head = await provider.getBlock('latest');
        if (head === null) throw new TrickleError('INTERNAL', 'the chain returned no latest block');
        if (r.deadline !== undefined && BigInt(head.timestamp) >= r.deadline)
          throw new TrickleError('TIMEOUT', `${method} not mined before its deadline`, {
            details: { method, deadline: r.deadline, chainTime: BigInt(head.timestamp), nonce, hashes: hashes() },
          });
        if ((await provider.getTransactionCount(from, 'latest')) > nonce!) {
          const late = await mined();
          if (late !== undefined) return late;
          spent = true;
          throw new TrickleError('INTERNAL', `the nonce of ${method} was used by another transaction`, {
            details: { method, nonce, hashes: hashes() },
          });
        }
        if (head.number - fromBlock >= everyBlocks || Date.now() - since >= everyMs) break;
        await sleep(pollMs);
      }
      // Not mined within the bound: price a replacement above both the last copy and what the node asks now.
      const fee = await provider.getFeeData();
      const raise = (v: bigint): bigint => (v * (100n + bumpPercent) + 99n) / 100n;
      const now = (legacy ? fee.gasPrice : fee.maxFeePerGas) ?? 0n;
      const nowTip = (legacy ? fee.gasPrice : fee.maxPriorityFeePerGas) ?? 0n;
      let nextFee = raise(maxFee) > now ? raise(maxFee) : now;
      let nextTip = raise(tip) > nowTip ? raise(tip) : nowTip;
      if (nextFee > cap) nextFee = cap;
      if (nextTip > nextFee) nextTip = nextFee;
      if (nextFee < minRaise(maxFee) || nextTip < minRaise(tip)) {
        const late = await mined();
        if (late !== undefined) return late;
        throw new TrickleError('LIMIT_EXCEEDED', `${method} not mined at the fee cap`, {
          details: { method, limit: 'maxFeePerGas', maxFeePerGas: cap, lastFeePerGas: maxFee, nonce, hashes: hashes() },
        });
      }
      maxFee = nextFee;
      tip = nextTip;
      try {
        await send();
      } catch (e) {
        // A copy mined in between (NONCE_EXPIRED) is found by the next poll; a node wanting a larger raise
        // (REPLACEMENT_UNDERPRICED) gets one at the next bound, from the fees just tried.
        const code = (e as { code?: unknown } | null)?.code;
        if (code !== 'NONCE_EXPIRED' && code !== 'REPLACEMENT_UNDERPRICED') {
          const late = await mined();
          if (late !== undefined) return late;
          throw decodeChainError(e);
        }
      }
    }
  };

  try {
    const receipt = await follow();
    if (reused !== undefined) account.taken.delete(reused.nonce);
    if (nonce !== undefined) account.inFlight.delete(nonce);
    return receipt;
  } catch (e) {
    // Given up with a copy unmined: it keeps its nonce, which the account's next send takes.
    if (!spent) throw await afterSave(e, abandon(pending!));
    if (reused !== undefined) account.taken.delete(reused.nonce);
    if (nonce !== undefined) account.inFlight.delete(nonce);
    throw e;
  }
}

/**
 * A mined transaction that reverted carries no revert data in its receipt; replay it as a call on the state before
 * its block to recover the error (best effort: other transactions earlier in the same block are not replayed).
 */
async function replayRevert(tx: ContractTransactionResponse, original: unknown): Promise<unknown> {
  const receipt = (original as { receipt?: TransactionReceipt }).receipt;
  const provider = tx.provider;
  if (receipt === undefined) return original;
  try {
    await provider.call({
      from: tx.from,
      to: tx.to,
      data: tx.data,
      value: tx.value,
      gasLimit: tx.gasLimit,
      blockTag: Math.max(0, receipt.blockNumber - 1),
    });
  } catch (e) {
    return revertDataOf(e) === undefined ? original : e;
  }
  return original;
}

/** Run a read-only contract call, decoding reverts. */
export async function callView<T>(contract: BaseContract, method: string, args: readonly unknown[]): Promise<T> {
  try {
    return (await contract.getFunction(method).staticCall(...args)) as T;
  } catch (e) {
    throw decodeChainError(e);
  }
}
