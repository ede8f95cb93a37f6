/**
 * The hub's transition rules: credits to the device, countersigning the device's updates (a backlog verified at its
 * newest), the device's cooperative close, and the hub's side of acks, rejects, syncs and restores. Part of the one
 * engine (see `engine.ts`); a hub shell passes {@link hubRules} to `createEngineChannel`.
 *
 * @module
 */
import { checkLockTransition, applyLockOp, checkTransition, sameState, type LockOp } from './channel.js';
import type { Lock } from './locks.js';
import { TrickleError, isTrickleError } from './errors.js';
import { signatureToHex } from './signer.js';
import { MAX_UINT64, type Bytes32, type SignedState, type State } from './types.js';
import {
  availableToPay,
  type EngineChannel,
  type EngineEnv,
  type EngineEvent,
  type EngineRestore,
  type EngineRules,
  type EngineWrite,
  type OwnProposal,
  type PeerUpdate,
  type DeferredCredit,
  type EngineEffect,
  type PendingCredit,
  type StepResult,
  type UnsettledState,
} from './engine.js';
import {
  NONE,
  Out,
  ackFrame,
  answerCallers,
  afterPeerLockOp,
  checkAmount,
  checkLockTerms,
  checkNotClaimed,
  claimAgain,
  err,
  evidenceIfDifferent,
  finishWithProposals,
  nextIdAfter,
  nextVersion,
  nowSec,
  opOf,
  peerTransition,
  unlockOp,
  refuse,
  rejectFrame,
  sigHexOf,
  updateFrame,
  type PeerStep,
  type RoleRules,
} from './engine-shared.js';

function onCredit(ch: EngineChannel, ev: Extract<EngineEvent, { type: 'credit' }>, env: EngineEnv): StepResult {
  // A market round may net to nothing for a participant: a zero credit still moves the channel to that round.
  if (!(ev.amount === 0n && ev.round !== undefined)) checkAmount(ev.amount);
  const joined = joinCredit(ch, ev);
  if (joined) return { channel: joined, effects: [] };
  if (ch.status !== 'open' || ch.latest.state.isFinal) {
    const error = new TrickleError('CHANNEL_NOT_OPEN', 'channel is not open');
    // A credit the device may still register on-chain (a state of it is unsettled): answered when it settles.
    const d = deferralOf(ch.unsettled ?? [], ev, error);
    if (!d) throw error;
    return { channel: { ...ch, deferred: [...(ch.deferred ?? []), d] }, effects: [] };
  }
  if (ev.round !== undefined && (ev.round < 0n || ev.round > MAX_UINT64))
    throw new TrickleError('INVALID_ARGUMENT', 'round must be a uint64');
  if (ev.lock) {
    checkLockTerms(ch, ev.lock, undefined, env);
    if (ev.amount > availableToPay(ch))
      throw new TrickleError('INSUFFICIENT_FUNDS', 'the hub cannot afford this lock in the channel');
  }
  const credit: PendingCredit = {
    ref: ev.ref,
    amount: ev.amount,
    paymentId: ev.paymentId,
    round: ev.round,
    lock: ev.lock,
    attempts: 0,
  };
  return finishWithProposals({ ...ch, queue: [...ch.queue, credit] }, new Out(), env);
}

/**
 * Hub: a credit asked again while the same one waits — proposed, queued or deferred; the same payment, amount and
 * lock, or the same market round and amount — is joined by its caller `ev.ref`, answered with it (a restored credit
 * has no caller: the first to ask takes it). Proposed again as a second credit once the first landed, it would pay
 * the device twice (a cluster process whose lease came back under a new epoch works its outbox row again). Callers
 * are not in the record: nothing to write. @returns the channel with `ev.ref` joined, or undefined if none waits
 */
export function joinCredit(
  ch: EngineChannel,
  ev: Pick<PendingCredit, 'ref' | 'amount' | 'paymentId' | 'round' | 'lock'>,
): EngineChannel | undefined {
  if (ev.paymentId === undefined && ev.round === undefined) return undefined;
  const same = (c: Pick<PendingCredit, 'amount' | 'paymentId' | 'round' | 'lock'>) =>
    c.amount === ev.amount &&
    c.lock?.hash === ev.lock?.hash &&
    (ev.paymentId !== undefined ? c.paymentId === ev.paymentId : c.round === ev.round && c.paymentId === undefined);
  const join = <C extends { readonly ref: number; readonly joined?: readonly number[] | undefined }>(c: C): C =>
    c.ref < 0 ? { ...c, ref: ev.ref } : { ...c, joined: [...(c.joined ?? NONE), ev.ref] };
  const p = ch.proposals.find((x) => x.credit && same(x.credit));
  if (p) return { ...ch, proposals: ch.proposals.map((x) => (x === p ? { ...p, credit: join(p.credit!) } : x)) };
  const q = (ch.queue as readonly PendingCredit[]).find(same);
  if (q) return { ...ch, queue: ch.queue.map((x) => (x === q ? join(q) : x)) };
  const d = ch.deferred?.find(same);
  if (d) return { ...ch, deferred: ch.deferred!.map((x) => (x === d ? join(d) : x)) };
  return undefined;
}

function proposeHub(ch: EngineChannel, out: Out, env: EngineEnv): EngineChannel {
  while (
    ch.proposals.length === 0 &&
    ch.queue.length > 0 &&
    ch.connected &&
    ch.status === 'open' &&
    !ch.latest.state.isFinal
  ) {
    const credit = ch.queue[0] as PendingCredit;
    const rest = ch.queue.slice(1);
    const cur = ch.latest.state;
    let state: State;
    let locks = ch.locks;
    const op = credit.lock || credit.unlock ? opOf('hub', credit) : undefined;
    try {
      if (op) {
        state = { ...applyLockOp(cur, ch.locks, op, 'hub', ch.config.maxLocks).state, version: nextVersion(ch, cur) };
        locks = checkLockTransition(cur, ch.locks, state, op, ch.ctx.funding, 'hub', {
          maxLocks: ch.config.maxLocks,
        }).locks;
      } else {
        state = {
          ...cur,
          version: nextVersion(ch, cur),
          paidByHub: cur.paidByHub + credit.amount,
          round: credit.round !== undefined && credit.round > cur.round ? credit.round : cur.round,
        };
        checkTransition(cur, state, ch.ctx.funding, 'hub');
      }
    } catch (e) {
      answerCallers(out.effects, credit, { type: 'reject', ref: credit.ref, error: err(e) });
      ch = { ...ch, queue: rest };
      continue;
    }
    const digest = env.crypto.digest(state);
    const sig = signatureToHex(env.crypto.sign(digest));
    const id = ch.nextId;
    const proposal: OwnProposal = { id, state, sig, pays: [], credit, locks, op, preimage: credit.unlock?.preimage };
    // Durable before it leaves: the hub never signs two different states at one version, across restarts too.
    out.persist(true);
    out.effects.push({ type: 'send', msg: updateFrame(proposal) });
    return {
      ...ch,
      queue: rest,
      proposals: [proposal],
      signedVersion: state.version,
      signedDigest: sigHexOf(digest),
      nextId: nextIdAfter(id),
    };
  }
  return ch;
}

function onDeviceUpdates(ch: EngineChannel, updates: readonly PeerUpdate[], env: EngineEnv): StepResult {
  const out = new Out();
  const params = ch.ctx.params;
  const candidates: PeerUpdate[] = [];
  const steps: PeerStep[] = [];
  /** Copies of a candidate of this backlog (the same state again, at its index): answered with it, below. */
  const copies: { of: number; u: PeerUpdate }[] = [];
  let prev = ch.latest.state;
  let prevLocks = ch.locks;
  let routedPending = 0n;
  const now = nowSec(env);
  for (const u of updates) {
    try {
      if (ch.status !== 'open') throw new TrickleError('CHANNEL_NOT_OPEN', 'channel is not open');
      const st = peerTransition(ch, prev, prevLocks, u, 'device', now);
      // After the rules of protocol-spec §2 (a stale final state is STALE_VERSION, one that moves money BAD_FINAL):
      // one that keeps them still comes in a `close`, where the hub checks that it owes nothing first.
      if (st.kind === 'new' && u.state.isFinal)
        throw new TrickleError('MALFORMED', 'a final state comes in a close message');
      checkNotClaimed(ch, st, u);
      const kind = st.kind;
      if (kind === 'duplicate') {
        // A replay of the current state: answer with the same countersignature, change nothing.
        if (prev === ch.latest.state && ch.latest.hubSig)
          out.effects.push({ type: 'send', msg: ackFrame(ch, u.id, prev.version, ch.latest.hubSig) });
        else if (prev === ch.latest.state) evidenceIfDifferent(ch, u, env, out);
        else copies.push({ of: candidates.length - 1, u });
        continue;
      }
      if (u.state.version <= ch.signedVersion) {
        throw new TrickleError('STALE_VERSION', 'the hub already signed a state at this version', {
          details: { signedVersion: ch.signedVersion },
        });
      }
      if (u.route && u.escrowFor)
        throw new TrickleError('MALFORMED', 'an update is a routed payment or an escrow, not both');
      // An escrow is a plain payment, as the device's engine makes it. Beside a claim it would book the lock's amount,
      // owed for the preimage, as an order's escrow that the market refunds once no order comes.
      if (u.escrowFor && st.op) throw new TrickleError('MALFORMED', 'an escrow is not a lock operation');
      if (u.route) {
        checkAmount(u.route.amount);
        if (u.unlock) throw new TrickleError('MALFORMED', 'an unlock is not routed');
        const paid = st.op?.kind === 'add' ? st.lock!.amount : u.state.paidByDevice - prev.paidByDevice;
        if (u.route.amount > paid)
          throw new TrickleError('INSUFFICIENT_FUNDS', 'routed amount exceeds the payment in this update');
        routedPending += u.route.amount;
      }
      candidates.push(u);
      steps.push(st);
      prev = u.state;
      prevLocks = st.locks;
    } catch (e) {
      const error = err(e);
      if (isTrickleError(e, 'EQUIVOCATION')) evidenceIfDifferent(ch, u, env, out);
      out.effects.push({ type: 'refused', error }, { type: 'send', msg: rejectFrame(ch, u.id, error) });
      // The return of a lock the hub claimed: its claim again right behind the refusal.
      const again = claimAgain(ch, e, u);
      if (again) out.effects.push(again);
    }
  }
  // Verify and countersign only the newest: it covers every payment below it (counters are cumulative).
  let accepted: PeerUpdate | undefined;
  let hubSig: Uint8Array | undefined;
  while (candidates.length > 0) {
    const last = candidates[candidates.length - 1]!;
    const digest = env.crypto.digest(last.state);
    try {
      if (env.crypto.recover(digest, last.sig) !== params.device)
        throw new TrickleError('BAD_SIGNATURE', 'update not signed by the device');
      hubSig = env.crypto.sign(digest);
      accepted = last;
      break;
    } catch (e) {
      const error = err(e);
      out.effects.push({ type: 'refused', error }, { type: 'send', msg: rejectFrame(ch, last.id, error) });
      // A copy of the refused update (the same state, another signature) is judged on its own signature: in its place
      // when it asks for the same thing, else refused with it. Unanswered, a copy signed right was left waiting.
      const at = candidates.length - 1;
      const copy = copies.findIndex((c) => c.of === at && sameAsk(c.u, last));
      if (copy >= 0) {
        candidates[at] = copies.splice(copy, 1)[0]!.u;
        continue;
      }
      for (const c of copies.filter((x) => x.of === at))
        out.effects.push({ type: 'refused', error }, { type: 'send', msg: rejectFrame(ch, c.u.id, error) });
      candidates.pop();
      steps.pop();
    }
  }
  if (!accepted || !hubSig) return out.finish(ch);
  const latest: SignedState = {
    state: accepted.state,
    deviceSig: signatureToHex(accepted.sig),
    hubSig: signatureToHex(hubSig),
  };
  let next: EngineChannel = {
    ...ch,
    latest,
    locks: steps[steps.length - 1]!.locks,
    signedVersion: accepted.state.version,
    peerVersion: accepted.state.version,
  };
  for (let i = 0; i < candidates.length; i++) next = afterPeerLockOp(next, steps[i]!, candidates[i]!, latest, out);
  // A device state superseded the hub's outstanding credit: the device will refuse it; propose it again on top.
  next = dropOutstandingCredit(next);
  const writes: EngineWrite[] = [];
  let before = ch.latest.state.paidByDevice;
  for (let i = 0; i < candidates.length; i++) {
    const c = candidates[i]!;
    if (c.escrowFor) {
      const paid = c.state.paidByDevice - before;
      if (paid > 0n) writes.push({ kind: 'escrow', orderId: c.escrowFor, amount: paid });
    }
    before = c.state.paidByDevice;
    const st = steps[i]!;
    if (c.route)
      writes.push({
        kind: 'route',
        route: c.route,
        from: params.device,
        ...(st.op?.kind === 'add' ? { lock: st.lock } : {}),
      });
  }
  out.persist(true, ...writes);
  for (const w of writes) {
    if (w.kind === 'route') out.effects.push({ type: 'routed', route: w.route, from: w.from, lock: w.lock });
    if (w.kind === 'escrow') out.effects.push({ type: 'escrow', orderId: w.orderId, amount: w.amount });
  }
  // The countersignature goes out as the bytes it was made in (no hex round trip on the hot path).
  out.effects.push({
    type: 'send',
    msg: { t: 'ack', id: accepted.id, channelId: ch.ctx.channelId, version: accepted.state.version, sig: hubSig },
  });
  return finishWithProposals(next, out, env);
}

/** Whether two updates of one state ask the same of the hub (route, escrow, lock transition), whatever their signatures. */
function sameAsk(a: PeerUpdate, b: PeerUpdate): boolean {
  const ask = (u: PeerUpdate) =>
    JSON.stringify([u.route, u.escrowFor, u.paymentId, u.lock, u.unlock], (_k, v: unknown) =>
      typeof v === 'bigint' ? `${v}n` : v,
    );
  return ask(a) === ask(b);
}

function dropOutstandingCredit(ch: EngineChannel): EngineChannel {
  const out = ch.proposals[0];
  if (!out?.credit) return ch;
  return { ...ch, proposals: [], queue: [out.credit, ...ch.queue] };
}

function onPeerClose(ch: EngineChannel, ev: Extract<EngineEvent, { type: 'peer-close' }>, env: EngineEnv): StepResult {
  const reply = { id: ev.id };
  try {
    if (ch.status !== 'open') {
      // Closing (a final state this hub signed first, whose ack was lost; or a force close on-chain): a final state of
      // the latest counters is signed again on request, at the version asked if it is not below one already signed —
      // every such state pays out the same, and nothing else can follow a closing channel. At the version signed last
      // only if that is this very state: another there (a credit the device refused) would be two states the hub
      // signed at one version, and a close at it would count that credit as delivered. None with a lock pending
      // (a final state carries none, protocol-spec §2).
      const v = ev.state.version;
      if (
        ch.status === 'closing' &&
        ev.sig === undefined &&
        ch.proposals.length === 0 &&
        !ch.latest.state.isFinal &&
        ch.locks.length === 0 &&
        v > ch.latest.state.version &&
        (v > ch.signedVersion || (v === ch.signedVersion && signedThis(ch, ev.state, env))) &&
        sameState(ev.state, finalAt(ch, v))
      )
        return signFinalFirst(ch, ev.id, ev.state, env);
      throw new TrickleError('CHANNEL_NOT_OPEN', 'channel is not open');
    }
    if (!ev.state.isFinal) throw new TrickleError('MALFORMED', 'close needs a final state');
    const kind = checkTransition(ch.latest.state, ev.state, ch.ctx.funding, 'device');
    if (kind === 'duplicate') {
      if (ch.latest.hubSig)
        return {
          channel: ch,
          effects: [{ type: 'send', msg: ackFrame(ch, ev.id, ev.state.version, ch.latest.hubSig) }],
        };
      throw new TrickleError('STALE_VERSION', 'nothing to re-acknowledge');
    }
    // A final state would strand what the hub still owes the device (a refund, a round's credit).
    if (ch.queue.length > 0 || ch.proposals.length > 0 || ev.owes)
      throw new TrickleError('PENDING_CREDITS', 'the hub still owes this channel a credit; close after it lands');
    if (ev.state.version <= ch.signedVersion)
      throw new TrickleError('STALE_VERSION', 'the hub already signed this version');
    if (ev.sig === undefined) return signFinalFirst(ch, ev.id, ev.state, env);
    const digest = env.crypto.digest(ev.state);
    if (env.crypto.recover(digest, ev.sig) !== ch.ctx.params.device)
      throw new TrickleError('BAD_SIGNATURE', 'close not signed by the device');
    const hubSig = signatureToHex(env.crypto.sign(digest));
    const latest: SignedState = { state: ev.state, deviceSig: signatureToHex(ev.sig), hubSig };
    const out = new Out();
    out.persist(true);
    out.effects.push({ type: 'send', msg: ackFrame(ch, ev.id, ev.state.version, hubSig) });
    return out.finish({
      ...ch,
      latest,
      signedVersion: ev.state.version,
      signedDigest: sigHexOf(digest),
      peerVersion: ev.state.version,
    });
  } catch (e) {
    return refuse(ch, e, reply);
  }
}

/** Hub: what a restored channel holds besides its latest state: its stored proposal and its unsettled states. */
function restore(r: EngineRestore, locks: readonly Lock[]): Partial<EngineChannel> {
  const proposal = restoreProposal(r, locks);
  return { proposals: proposal ? [proposal] : NONE, unsettled: r.unsettled };
}

/** Hub: the credit proposal it had signed and stored, not yet answered, as it was in flight before the restart. */
function restoreProposal(r: EngineRestore, locks: readonly Lock[]): OwnProposal | undefined {
  const latest = r.latest;
  if (!r.outgoing || r.outgoing.state.version <= latest.state.version) return undefined;
  const o = r.outgoing;
  const unlock = o.unlock;
  const amount = o.lock ? o.lock.amount : unlock ? 0n : o.state.paidByHub - latest.state.paidByHub;
  const op: LockOp | undefined = o.lock
    ? { kind: 'add', lock: { ...o.lock, payer: 'hub' } }
    : unlock
      ? unlockOp(unlock, locks, 'hub')
      : undefined;
  const credit: PendingCredit = {
    ref: o.ref,
    amount,
    paymentId: o.paymentId,
    round: o.state.round > latest.state.round ? o.state.round : undefined,
    lock: o.lock ? { hash: o.lock.hash, expiry: o.lock.expiry } : undefined,
    unlock: unlock
      ? { hash: unlock.hash, preimage: unlock.preimage, cancel: op?.kind === 'cancel' || undefined }
      : undefined,
    attempts: 0,
  };
  return {
    id: 1,
    state: o.state,
    sig: o.sig,
    pays: [],
    credit,
    locks: o.locks ?? locks,
    op,
    preimage: unlock?.preimage,
  };
}

/** Hub: the device countersigned our credit proposal `p`. */
function acked(
  next: EngineChannel,
  p: OwnProposal,
  _settled: readonly OwnProposal[],
  latest: SignedState,
  _env: EngineEnv,
  out: Out,
): EngineChannel {
  const credit = p.credit;
  // A lock the hub added is not a delivery: its paymentId is marked credited when the lock is claimed.
  const delivered = credit?.paymentId && (!p.op || p.op.kind === 'claim');
  out.persist(
    true,
    ...(delivered ? [{ kind: 'credited', paymentId: credit!.paymentId!, version: p.state.version } as const] : []),
  );
  if (credit && credit.ref >= 0)
    answerCallers(out.effects, credit, {
      type: 'resolve',
      ref: credit.ref,
      state: latest,
      amount: credit.amount,
      paymentId: credit.paymentId,
      locked: p.op?.kind === 'add' ? p.op.lock.hash : undefined,
    });
  return next;
}

/** Hub: the device refused our credit proposal: proposed again after a version conflict (a bounded number of times). */
function rejected(
  ch: EngineChannel,
  i: number,
  conflict: boolean,
  ev: Extract<EngineEvent, { type: 'peer-reject' }>,
  out: Out,
  env: EngineEnv,
): StepResult {
  const credit = ch.proposals[i]!.credit!;
  let next: EngineChannel = { ...ch, proposals: [] };
  out.persist(true); // the outstanding proposal is gone from the record
  if (conflict && credit.attempts + 1 <= ch.config.maxCreditRetries)
    next = { ...next, queue: [{ ...credit, attempts: credit.attempts + 1 }, ...next.queue] };
  else if (credit.ref >= 0)
    answerCallers(out.effects, credit, {
      type: 'reject',
      ref: credit.ref,
      error: new TrickleError(ev.code, `the device refused the credit: ${ev.message ?? ''}`),
    });
  return finishWithProposals(next, out, env);
}

/** Hub: a sync adopted the device's `theirs`: our credit it holds is done; one it superseded is proposed again. */
function adopted(
  next: EngineChannel,
  _before: EngineChannel,
  settled: readonly OwnProposal[],
  theirs: SignedState,
  _locks: readonly Lock[],
  _env: EngineEnv,
  out: Out,
): EngineChannel {
  const v = theirs.state.version;
  for (const p of settled) {
    const credit = p.credit!;
    if (sameState(p.state, theirs.state)) {
      if (credit.paymentId) out.writes.push({ kind: 'credited', paymentId: credit.paymentId, version: v });
      if (credit.ref >= 0)
        answerCallers(out.effects, credit, {
          type: 'resolve',
          ref: credit.ref,
          state: theirs,
          amount: credit.amount,
          paymentId: credit.paymentId,
        });
    } else next = { ...next, queue: [credit, ...next.queue] };
  }
  return next;
}

/**
 * Whether the state the hub signed at its highest version is `state`: by its digest, or after a restart (the digest
 * not kept) by elimination — a credit it signed there is kept as unsettled until a state both signed settles it.
 */
const signedThis = (ch: EngineChannel, state: State, env: EngineEnv): boolean =>
  ch.signedDigest !== undefined
    ? ch.signedDigest === sigHexOf(env.crypto.digest(state))
    : !(ch.unsettled ?? []).some((u) => u.state.version === state.version);

/** The final state of the latest counters at `version`: the one a hub signs first when the device asks to close. */
const finalAt = (ch: EngineChannel, version: bigint): State => ({ ...ch.latest.state, version, isFinal: true });

/**
 * Hub: sign the final state `state` first and answer `id` with the signature. From then on the channel takes nothing
 * more (closing); its latest state both signed stays what it was, for a challenge if the device force-closes instead,
 * until the device's countersignature comes back ({@link onClosingAck}). Asked again at the version already signed:
 * the same (deterministic) signature, nothing to store.
 */
function signFinalFirst(ch: EngineChannel, id: number, state: State, env: EngineEnv): StepResult {
  const digest = env.crypto.digest(state);
  const out = new Out();
  out.effects.push({ type: 'send', msg: ackFrame(ch, id, state.version, signatureToHex(env.crypto.sign(digest))) });
  if (ch.status === 'closing' && state.version === ch.signedVersion) return out.finish(ch);
  out.persist(true);
  return out.finish({
    ...ch,
    status: 'closing',
    signedVersion: state.version,
    signedDigest: sigHexOf(digest),
    peerVersion: state.version,
  });
}

/**
 * Hub: the device's countersignature of the final state the hub signed first (it is closing). It becomes the hub's
 * latest state, both signed, so the hub can submit the close itself; any other ack of a closing channel is ignored.
 */
function onClosingAck(ch: EngineChannel, ev: Extract<EngineEvent, { type: 'peer-ack' }>, env: EngineEnv): StepResult {
  const state = finalAt(ch, ch.signedVersion);
  if (ch.latest.state.isFinal || ev.version !== state.version) return { channel: ch, effects: [] };
  const digest = env.crypto.digest(state);
  // Not the final state this hub signed (a channel closing on-chain, a late ack): changes nothing, as a late ack.
  if (env.crypto.recover(digest, ev.sig) !== ch.ctx.params.device) return { channel: ch, effects: [] };
  const latest: SignedState = {
    state,
    deviceSig: signatureToHex(ev.sig),
    hubSig: signatureToHex(env.crypto.sign(digest)),
  };
  const out = new Out();
  out.persist(true);
  return out.finish({ ...ch, latest, peerVersion: state.version });
}

/**
 * Hub: the answer `error` to credit `c`'s caller, deferred while the device may still hold a hub-signed state of it
 * (`UnsettledState`): one at a version in `c.dangling` or `extra` (its own earlier proposals), or one of its payment
 * id among `unsettled`. @returns the deferral, or undefined when nothing of it is out there (answer it now)
 */
export function deferralOf(
  unsettled: readonly UnsettledState[],
  c: Pick<PendingCredit, 'ref' | 'joined' | 'amount' | 'paymentId' | 'round' | 'lock' | 'dangling'>,
  error: TrickleError,
  extra?: bigint,
): DeferredCredit | undefined {
  const versions = new Set<bigint>(c.dangling);
  if (extra !== undefined) versions.add(extra);
  for (const u of unsettled)
    if (c.paymentId !== undefined && u.paymentId === c.paymentId) versions.add(u.state.version);
  if (versions.size === 0) return undefined;
  const { ref, joined, amount, paymentId, round, lock } = c;
  return {
    ref,
    joined,
    amount,
    paymentId,
    round,
    lock,
    code: error.code,
    message: error.shortMessage,
    versions: [...versions],
  };
}

/** Whether a proposal of ours holds more for the device than `latest`: a credit, or a lock toward it. */
function givesDevice(p: OwnProposal, latest: State): boolean {
  return p.state.paidByHub > latest.paidByHub || p.op?.kind === 'add';
}

/**
 * Hub, after every step that changed the channel: the states it signed first that the device may hold without having
 * countersigned them ({@link UnsettledState}) are kept (durable), and a credit refused while one of its states is
 * unsettled is not answered yet: answering it (a router refunds the payer) while the device can still register the
 * state that pays it would pay twice. A state settles as void once a state both signed above it exists, as delivered
 * when a sync brings it back both signed or the channel closes on-chain at its version (void at another version).
 * When a credit is deferred, or the device syncs while states are unsettled, a state of the latest counters one
 * version up is proposed (nothing moves): once countersigned, every unsettled state below it is void.
 */
function after(before: EngineChannel, r: StepResult, ev: EngineEvent, env: EngineEnv): StepResult {
  let ch = r.channel;
  if (before.proposals.length === 0 && !ch.unsettled && !ch.deferred) return r; // the common step: nothing to do
  const latest = ch.latest.state;
  const was = before.unsettled ?? [];
  let unsettled = was;
  const deferredWas = ch.deferred ?? [];
  let deferred = deferredWas;
  const closedAt = ev.type === 'chain-status' && ev.status === 'closed' ? ev.version : undefined;
  // Closed on-chain at a known version: our proposals still out are settled by it too (below), not left waiting.
  const closing = closedAt !== undefined ? ch.proposals : NONE;
  if (closing.length > 0) ch = { ...ch, proposals: NONE };
  // 1. Our proposals that left unanswered, above the latest, holding more for the device.
  const dropped = new Map<number, bigint>(); // credit ref → version
  for (const p of before.proposals) {
    if (p.state.version <= latest.version || !p.credit || !givesDevice(p, latest)) continue;
    if (ch.proposals.some((q) => q.id === p.id)) continue;
    if (!unsettled.some((u) => u.state.version === p.state.version))
      unsettled = [
        ...unsettled,
        { state: p.state, hubSig: p.sig!, paymentId: p.credit.paymentId, round: p.credit.round },
      ];
    dropped.set(p.credit.ref, p.state.version);
  }
  if (dropped.size > 0 && ch.queue.length > 0)
    ch = {
      ...ch,
      queue: ch.queue.map((q) => {
        const v = dropped.get(q.ref);
        return v === undefined ? q : { ...q, dangling: [...((q as PendingCredit).dangling ?? []), v] };
      }),
    };
  // 2. A credit refused while a state of it is unsettled: deferred instead.
  let effects = r.effects;
  let newlyDeferred = false;
  // Their callers are refused, or deferred just below if the device may hold them (decided at the closing version).
  if (closing.length > 0) {
    const error = new TrickleError('CHANNEL_NOT_OPEN', 'the channel closed on-chain');
    const list = [...effects];
    for (const p of closing)
      if (p.credit && p.credit.ref >= 0) answerCallers(list, p.credit, { type: 'reject', ref: p.credit.ref, error });
    effects = list;
  }
  if (unsettled.length > 0 && effects.some((e) => e.type === 'reject')) {
    const credits = [...before.queue, ...before.proposals.map((p) => p.credit)] as (PendingCredit | undefined)[];
    const waits = new Set<PendingCredit>(); // deferred: the callers that joined them wait with them
    effects = effects.filter((e) => {
      if (e.type !== 'reject' || e.ref < 0) return true;
      const c = credits.find((x) => x?.ref === e.ref || x?.joined?.includes(e.ref));
      if (!c) return true;
      if (c.ref !== e.ref) return !waits.has(c);
      const d = deferralOf(unsettled, c, e.error, dropped.get(c.ref));
      if (!d) return true;
      waits.add(c);
      deferred = [...deferred, d];
      newlyDeferred = true;
      return false;
    });
  }
  // 3. Settle: void below a state both signed, delivered at it; on-chain, at the version the channel closed with.
  const settled = new Map<bigint, SignedState | undefined>(); // version → the state, if delivered
  const held = unsettled;
  if (unsettled.length > 0) {
    const left = unsettled.filter((u) => {
      const v = u.state.version;
      if (closedAt !== undefined) settled.set(v, v === closedAt ? { state: u.state, hubSig: u.hubSig } : undefined);
      else if (latest.version > v) settled.set(v, undefined);
      else if (latest.version === v) settled.set(v, ch.latest);
      else return true;
      return false;
    });
    // The same array when none settled: a new one would look like a change, and the record be written again.
    if (left.length < unsettled.length) unsettled = left;
  }
  const out: EngineEffect[] = [];
  const writes: EngineWrite[] = [];
  // A credit that landed is marked so, whether or not a caller still waits for it (after a restart or a takeover
  // none does): a router or a cluster's outbox that finds it unmarked would credit it again.
  for (const u of held)
    if (u.paymentId && settled.get(u.state.version))
      writes.push({ kind: 'credited', paymentId: u.paymentId, version: u.state.version });
  if (settled.size > 0 || newlyDeferred) {
    const kept: DeferredCredit[] = [];
    for (const d of deferred) {
      let delivered = d.delivered;
      for (const v of d.versions) delivered ??= settled.get(v);
      if (unsettled.some((u) => d.versions.includes(u.state.version))) {
        kept.push(delivered === d.delivered ? d : { ...d, delivered });
        continue;
      }
      if (delivered && d.paymentId && !writes.some((w) => w.kind === 'credited' && w.paymentId === d.paymentId))
        writes.push({ kind: 'credited', paymentId: d.paymentId, version: delivered.state.version });
      answerCallers(
        out,
        d,
        delivered
          ? { type: 'resolve', ref: d.ref, state: delivered, amount: d.amount, paymentId: d.paymentId }
          : { type: 'reject', ref: d.ref, error: new TrickleError(d.code, d.message) },
      );
    }
    if (kept.length !== deferred.length || kept.some((d, i) => d !== deferred[i])) deferred = kept;
  }
  if (unsettled !== was || deferred !== deferredWas)
    ch = {
      ...ch,
      unsettled: unsettled.length > 0 ? unsettled : undefined,
      deferred: deferred.length > 0 ? deferred : undefined,
    };
  // 4. Nothing of ours in flight to go above them: propose the latest counters one version up.
  const o = new Out();
  if (
    unsettled.length > 0 &&
    (newlyDeferred || ev.type === 'peer-sync') &&
    ch.status === 'open' &&
    !latest.isFinal &&
    ch.queue.length === 0 &&
    ch.proposals.length === 0
  )
    ch = proposeHub({ ...ch, queue: [{ ref: -1, amount: 0n, attempts: 0 }] }, o, env);
  if (unsettled === was && writes.length === 0 && out.length === 0 && o.effects.length === 0) {
    return ch === r.channel ? r : { channel: ch, effects };
  }
  // One persist first (gated: the unsettled states are durable before anything else of this step).
  const persist = effects.filter((e): e is Extract<EngineEffect, { type: 'persist' }> => e.type === 'persist');
  return {
    channel: ch,
    effects: [
      { type: 'persist', gate: true, writes: [...persist.flatMap((e) => e.writes), ...writes, ...o.writes] },
      ...effects.filter((e) => e.type !== 'persist'),
      ...out,
      ...o.effects,
    ],
  };
}

const rules: RoleRules = Object.freeze({
  role: 'hub',
  after,
  closingAck: onClosingAck,
  credit: onCredit,
  peerClose: onPeerClose,
  peerUpdates: onDeviceUpdates,
  propose: proposeHub,
  restore,
  acked,
  rejected,
  adopted,
});

/** The hub's rules, for `createEngineChannel(restore, hubRules)`. */
export const hubRules: EngineRules = rules;
