/**
 * The device's transition rules: `pay()` and `close()`, proposing its payments (pipelined, lock transitions and
 * routed payments alone), countersigning the hub's credits and lock transitions, routed payments' receipts, and the
 * device's side of acks, rejects and syncs. Part of the one engine (see `engine.ts`); a device shell passes
 * {@link deviceRules} to `createEngineChannel`.
 *
 * @module
 */
import { applyLockOp, checkLockTransition, checkTransition, sameState } from './channel.js';
import type { Lock } from './locks.js';
import { TrickleError, isTrickleError, peerError } from './errors.js';
import type { RouteInstruction } from './codec.js';
import { signatureFromHex, signatureToHex } from './signer.js';
import type { Bytes32, SignedState, State } from './types.js';
import {
  availableToPay,
  type EngineChannel,
  type EngineEffect,
  type EngineEnv,
  type EngineEvent,
  type EngineRules,
  type OwnProposal,
  type PeerUpdate,
  type PendingPay,
  type StepResult,
} from './engine.js';
import {
  Out,
  ackFrame,
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
  rejectFrame,
  sigHexOf,
  updateFrame,
  type RoleRules,
} from './engine-shared.js';

function onPay(ch: EngineChannel, ev: Extract<EngineEvent, { type: 'pay' }>, env: EngineEnv): StepResult {
  const out = new Out();
  const queue = [...ch.queue];
  let available = availableToPay(ch);
  for (const p of ev.pays) {
    try {
      checkAmount(p.amount);
      if (
        ch.status !== 'open' ||
        ch.latest.state.isFinal ||
        ch.closeRefs.length > 0 ||
        ch.proposals.some((x) => x.state.isFinal)
      ) {
        throw new TrickleError('CHANNEL_FINAL', 'the channel is closing or closed: it takes no more payments');
      }
      if (p.route && p.escrowFor)
        throw new TrickleError('INVALID_ARGUMENT', 'a payment is routed or an escrow, not both');
      if (p.route && p.route.amount !== p.amount)
        throw new TrickleError('INVALID_ARGUMENT', 'routed amount differs from the payment');
      // Against this batch's queue too: two locks on one hash (or past maxLocks) in one call are refused alike.
      if (p.lock) checkLockTerms(queue.length === ch.queue.length ? ch : { ...ch, queue }, p.lock, p.escrowFor, env);
      if (p.amount > available)
        throw new TrickleError('INSUFFICIENT_FUNDS', 'not enough balance in the channel', { details: { available } });
      available -= p.amount;
      queue.push({ ref: p.ref, amount: p.amount, route: p.route, escrowFor: p.escrowFor, lock: p.lock, target: 0n });
    } catch (e) {
      out.effects.push({ type: 'reject', ref: p.ref, error: err(e) });
    }
  }
  return finishWithProposals({ ...ch, queue }, out, env);
}

function onClose(ch: EngineChannel, ev: Extract<EngineEvent, { type: 'close' }>, env: EngineEnv): StepResult {
  if (ch.latest.state.isFinal) {
    return { channel: ch, effects: [{ type: 'resolve', ref: ev.ref, state: ch.latest, amount: 0n }] };
  }
  if (ch.status !== 'open') throw new TrickleError('CHANNEL_NOT_OPEN', 'channel is not open');
  const out = new Out();
  // Payments not yet proposed never will be: the channel is closing.
  const e = new TrickleError('CHANNEL_FINAL', 'the channel is closing or closed: it takes no more payments');
  for (const q of ch.queue) out.effects.push({ type: 'reject', ref: q.ref, error: e });
  const pendingClose = ch.proposals.find((p) => p.closeRefs);
  if (pendingClose) {
    // A second close() joins the first: one final state, one answer for both.
    const proposals = ch.proposals.map((p) =>
      p === pendingClose ? { ...p, closeRefs: [...p.closeRefs!, ev.ref] } : p,
    );
    return out.finish({ ...ch, queue: [], proposals });
  }
  return finishWithProposals({ ...ch, queue: [], closeRefs: [...ch.closeRefs, ev.ref] }, out, env);
}

function proposeDevice(ch: EngineChannel, out: Out, env: EngineEnv): EngineChannel {
  while (true) {
    if (!ch.synced || !ch.connected || ch.status !== 'open' || ch.proposals.length >= ch.config.maxInFlight) return ch;
    const top = ch.proposals.at(-1);
    // A routed payment, an escrow, a lock transition or a final state is a barrier: nothing is pipelined on top of
    // it. Were a later cumulative state accepted while it was refused, the hub would hold the money without the
    // instruction (and a lock list built on a refused one would not match the hub's).
    if (top && (top.route || top.escrowFor || top.op || top.state.isFinal)) return ch;
    if (ch.queue.length === 0) {
      if (top) return ch;
      // A state of ours the hub refused but holds, paying it more, and nothing signed since: void it first (a final
      // state the hub refuses would leave it out there).
      if (ch.refused === ch.signedVersion && ch.refused > (ch.unchecked ?? ch.latest).state.version)
        return bump(ch, out, env);
      return ch.closeRefs.length > 0 ? proposeFinal(ch, out, env) : ch;
    }
    if (ch.yieldUntil > env.now) {
      out.effects.push({ type: 'timer', at: ch.yieldUntil });
      return ch;
    }
    const base = top?.state ?? (ch.unchecked ?? ch.latest).state; // on what the hub acked, checked or not
    const baseLocks = top?.locks ?? ch.locks;
    const head = ch.queue[0] as PendingPay;
    if (head.lock || head.unlock) {
      ch = proposeDeviceLockOp(ch, head, base, baseLocks, out, env);
      continue;
    }
    let n = 0;
    let total = 0n;
    let route: RouteInstruction | undefined;
    let escrowFor: Bytes32 | undefined;
    for (const q of ch.queue as readonly PendingPay[]) {
      if (q.lock || q.unlock) break;
      const alone = q.route !== undefined || q.escrowFor !== undefined;
      if (alone && n > 0) break;
      n++;
      total += q.amount;
      if (alone) {
        route = q.route;
        escrowFor = q.escrowFor;
        break;
      }
    }
    let target = base.paidByDevice;
    const pays = (ch.queue.slice(0, n) as readonly PendingPay[]).map((q) => ({ ...q, target: (target += q.amount) }));
    const state: State = { ...base, version: nextVersion(ch, base), paidByDevice: base.paidByDevice + total };
    const rest = ch.queue.slice(n);
    try {
      checkTransition(base, state, ch.ctx.funding, 'device');
    } catch (e) {
      for (const p of pays) out.effects.push({ type: 'reject', ref: p.ref, error: err(e) });
      ch = { ...ch, queue: rest };
      continue;
    }
    // Written behind: the hub holds every state the device signs, and the device signs nothing after a restart
    // before it has resynced, so losing this write can neither cost it money nor make it sign a version twice.
    ch = signAndSend(ch, { state, pays, route, escrowFor, locks: baseLocks }, rest, false, out, env);
  }
}

/**
 * Device: a sync has ended. Idle, with a signing ceiling above the latest state both signed — after a restart it is the
 * ceiling reserved on disk, up to `reserveVersions` ahead; or the hub refused what the device last signed — the device
 * passes it once with a state that only raises the version ({@link bump}). The hub proposes its credits at its
 * latest + 1, which the device must refuse at or below its ceiling (it may have signed another state there): without
 * this a restarted device that only receives would refuse every credit until it paid something. It also voids any
 * state of the device's the hub may hold (see `EngineChannel.refused`). Once per sync: a refused bump is not tried
 * again before the next one.
 */
function resynced(ch: EngineChannel, env: EngineEnv, out: Out): EngineChannel {
  if (ch.signedVersion <= ch.latest.state.version || ch.status !== 'open') return ch;
  if (ch.proposals.length > 0 || ch.queue.length > 0 || ch.closeRefs.length > 0) return ch; // those go above it anyway
  return bump(ch, out, env);
}

/**
 * Device: sign and send the latest counters and locks one version up (nothing moves): once the hub countersigns it,
 * no state the device signed below it can be registered on-chain any more. Written behind, as the device's own
 * payments are: it pays nobody anything.
 */
function bump(ch: EngineChannel, out: Out, env: EngineEnv): EngineChannel {
  const base = (ch.unchecked ?? ch.latest).state;
  const state: State = { ...base, version: nextVersion(ch, base) };
  try {
    checkTransition(base, state, ch.ctx.funding, 'device');
  } catch {
    return ch; // a final state, or no version left: nothing to pass it with (callers check the channel is open)
  }
  return signAndSend(ch, { state, pays: [], locks: ch.locks }, ch.queue, false, out, env);
}

/** Device: propose the lock transition at the head of the queue (alone: a barrier). */
function proposeDeviceLockOp(
  ch: EngineChannel,
  q: PendingPay,
  base: State,
  baseLocks: readonly Lock[],
  out: Out,
  env: EngineEnv,
): EngineChannel {
  const rest = ch.queue.slice(1);
  const op = opOf('device', q);
  let state: State;
  let locks: readonly Lock[];
  try {
    const r = applyLockOp(base, baseLocks, op, 'device', ch.config.maxLocks);
    state = { ...r.state, version: nextVersion(ch, base) };
    locks = checkLockTransition(base, baseLocks, state, op, ch.ctx.funding, 'device', {
      maxLocks: ch.config.maxLocks,
    }).locks;
  } catch (e) {
    if (q.ref >= 0) out.effects.push({ type: 'reject', ref: q.ref, error: err(e) });
    return { ...ch, queue: rest };
  }
  const pays: PendingPay[] = [{ ...q, target: state.paidByDevice }];
  // A give-back: the hub may hold it (countersigned, refused or unanswered) until a state both signed reaches its
  // version, and registered it returns the lock to the hub whatever is revealed on-chain: the device claims that lock
  // meanwhile no more (`givenBack`), after a restart too — the gated persist below writes it before the state leaves.
  if (op.kind === 'cancel')
    ch = { ...ch, givenBack: [...(ch.givenBack ?? []), { hash: op.hash, version: state.version }] };
  // Durable before it leaves: after a restart the device must know the lock list of any state it signed.
  return signAndSend(
    ch,
    { state, pays, route: q.route, locks, op, preimage: q.unlock?.preimage },
    rest,
    true,
    out,
    env,
  );
}

function proposeFinal(ch: EngineChannel, out: Out, env: EngineEnv): EngineChannel {
  const base = (ch.unchecked ?? ch.latest).state; // the hub signs the final state first: its ack is checked
  const state: State = { ...base, version: nextVersion(ch, base), isFinal: true };
  try {
    checkTransition(base, state, ch.ctx.funding, 'device');
  } catch (e) {
    // No final state can be signed here (pending locks: BAD_FINAL; no version left): close() fails with the code,
    // and its caller force-closes with the latest state and its locks.
    for (const ref of ch.closeRefs) out.effects.push({ type: 'reject', ref, error: err(e) });
    return { ...ch, closeRefs: [] };
  }
  // Unsigned: the hub signs the final state first and the device countersigns it on the ack. A final state the device
  // signed first would stay valid on-chain for ever (the adjudicator's cooperative close of an open channel cannot
  // know a newer version): a hub that refused it (PENDING_CREDITS) could credit the device and then close with it.
  // Its version counts as used (signedVersion, signedDigest): the device signs it on the ack only if it signed nothing
  // else meanwhile.
  const id = ch.nextId;
  const proposal: OwnProposal = { id, state, pays: [], closeRefs: ch.closeRefs, locks: ch.locks };
  out.persist(true); // the channel is closing: durable before the request leaves
  out.effects.push({ type: 'send', msg: { t: 'close', id, state } });
  // Proposed only with nothing in flight: the final state is the one proposal.
  return { ...proposed(ch, proposal, env.crypto.digest(state), ch.queue, out), closeRefs: [] };
}

/**
 * The channel once the device signed `p` (its state and what it carries) and sent it, written at once (`gate`) or
 * behind; `queue`: what stays queued.
 */
function signAndSend(
  ch: EngineChannel,
  p: Omit<OwnProposal, 'id' | 'sig'>,
  queue: EngineChannel['queue'],
  gate: boolean,
  out: Out,
  env: EngineEnv,
): EngineChannel {
  const digest = env.crypto.digest(p.state);
  const proposal: OwnProposal = { ...p, id: ch.nextId, sig: signatureToHex(env.crypto.sign(digest)) };
  out.persist(gate);
  out.effects.push({ type: 'send', msg: updateFrame(proposal) });
  return proposed(ch, proposal, digest, queue, out);
}

/** The channel once the device signed `proposal` (its state's digest: `digest`); `queue`: what stays queued. */
function proposed(
  ch: EngineChannel,
  proposal: OwnProposal,
  digest: Uint8Array,
  queue: EngineChannel['queue'],
  out: Out,
): EngineChannel {
  const version = proposal.state.version;
  return {
    ...ch,
    queue,
    proposals: [...ch.proposals, proposal],
    signedVersion: version,
    reservedVersion: reserveUpTo(ch, version, out),
    signedDigest: sigHexOf(digest),
    nextId: nextIdAfter(proposal.id),
  };
}

/**
 * Device: the reserved ceiling once `version` is signed; a new ceiling is made durable (a gated persist) before the
 * state leaves when `version` is above the current one.
 */
function reserveUpTo(ch: EngineChannel, version: bigint, out: Out): bigint {
  if (version <= ch.reservedVersion) return ch.reservedVersion;
  out.persist(true);
  return version + BigInt(Math.max(0, ch.config.reserveVersions - 1));
}

/** Device: the hub's proposals, each answered in turn (one persist for all). */
function onPeerUpdates(ch: EngineChannel, updates: readonly PeerUpdate[], env: EngineEnv): StepResult {
  let r: StepResult = { channel: ch, effects: [] };
  const effects: EngineEffect[] = [];
  for (const u of updates) {
    r = onHubCredit(r.channel, u, env);
    effects.push(...r.effects);
  }
  return mergePersists(r.channel, effects);
}

/** Several steps' effects as one: one persist (gated when any was), at the front. */
function mergePersists(channel: EngineChannel, effects: readonly EngineEffect[]): StepResult {
  const persists = effects.filter((e): e is Extract<EngineEffect, { type: 'persist' }> => e.type === 'persist');
  if (persists.length <= 1 && (persists.length === 0 || effects[0] === persists[0])) return { channel, effects };
  const merged: EngineEffect = {
    type: 'persist',
    gate: persists.some((p) => p.gate),
    writes: persists.flatMap((p) => p.writes),
  };
  return { channel, effects: [merged, ...effects.filter((e) => e.type !== 'persist')] };
}

function onHubCredit(ch: EngineChannel, u: PeerUpdate, env: EngineEnv): StepResult {
  const out = new Out();
  const reply = (e: unknown): StepResult => {
    const error = err(e);
    out.effects.push({ type: 'refused', error }, { type: 'send', msg: rejectFrame(ch, u.id, error) });
    return out.finish(ch);
  };
  try {
    // Not resynced yet: no answer at all. A STALE_VERSION reject here would make the hub re-queue a credit that the
    // copy it resends after our sync then lands, so the credit would be paid twice; the hub resends it after the sync.
    if (!ch.synced)
      return {
        channel: ch,
        effects: [{ type: 'refused', error: new TrickleError('STALE_VERSION', 'the device has not resynced yet') }],
      };
    // A copy of the credit we already countersigned (the hub resends it after a reconnect, or our ack was lost):
    // acknowledge it again. Refusing it as a crossing would make the hub propose the same credit a second time.
    if (sameState(u.state, ch.latest.state)) {
      if (ch.latest.deviceSig)
        out.effects.push({ type: 'send', msg: ackFrame(ch, u.id, ch.latest.state.version, ch.latest.deviceSig) });
      return out.finish(ch);
    }
    // Rules 1 and 2 of protocol-spec §2 against the latest state both signed come first, whatever is in flight: a
    // state for another channel, or a different one at or below the latest version, is WRONG_CHANNEL, EQUIVOCATION
    // (kept as evidence, below) or STALE_VERSION (a duplicate of the latest was answered above).
    if (u.state.channelId !== ch.latest.state.channelId || u.state.version <= ch.latest.state.version)
      checkTransition(ch.latest.state, u.state, ch.ctx.funding, 'hub');
    // Crossing: we signed our own state at this version (or later) and it is in flight. Refuse; the hub proposes
    // again on top of ours. Hold our next proposals briefly so it can.
    if (ch.proposals.length > 0 && u.state.version <= ch.signedVersion) {
      const r = reply(new TrickleError('STALE_VERSION', 'crossed with an update of the device'));
      return { channel: { ...ch, yieldUntil: env.now + ch.config.yieldMs }, effects: r.effects };
    }
    if (ch.status !== 'open') throw new TrickleError('CHANNEL_NOT_OPEN', 'channel is not open');
    // A lock transition of ours in flight changes the lock list the hub's state must build on: a crossing.
    if (ch.proposals.some((p) => p.op))
      throw new TrickleError('STALE_VERSION', 'crossed with a lock transition of the device');
    if (u.lock || u.unlock) return acceptHubLockOp(ch, u, env, out);
    checkTransition(ch.latest.state, u.state, ch.ctx.funding, 'hub'); // a duplicate of the latest was answered above
    // After the rules (a final state that moves money is BAD_FINAL): one that keeps them is still no update.
    if (u.state.isFinal) throw new TrickleError('MALFORMED', 'the hub never proposes a final state');
    let next = countersign(ch, u, ch.locks, env, out);
    const latest = next.latest;
    const amount = u.state.paidByHub - ch.latest.state.paidByHub;
    const round = u.state.round > ch.latest.state.round ? u.state.round : undefined;
    // Nothing moved (the hub goes a version up over a credit the device refused): no money arrived.
    if (amount > 0n || round !== undefined)
      out.effects.push({ type: 'incoming', amount, paymentId: u.paymentId, round, state: latest });
    if (ch.proposals.length > 0) {
      // Our proposals in flight are all below this version (a crossing is refused above), so the hub, which signed
      // this one, refuses them. The payments its state already holds (their ack is still on its way) are done with
      // it; the others are proposed again on top of it, as after a version conflict.
      next = supersede({ ...next, proposals: [] }, ch.proposals, latest, ch.locks, env, out);
    }
    return finishWithProposals(next, out, env);
  } catch (e) {
    if (isTrickleError(e, 'EQUIVOCATION')) evidenceIfDifferent(ch, u, env, out);
    const r = reply(e);
    // The return of a lock this device claimed: its claim again right behind the refusal, as the hub does.
    const again = claimAgain(ch, e, u);
    return again ? { channel: r.channel, effects: [...r.effects, again] } : r;
  }
}

/**
 * Device: verify the hub's signature on `u` (checked against the rules by the caller), countersign it and make it the
 * latest state (with lock list `locks`), durable before the ack leaves: the device holds a lock toward it or receives
 * money. @throws TrickleError BAD_SIGNATURE, or STALE_VERSION for a version the device already signed
 */
function countersign(
  ch: EngineChannel,
  u: PeerUpdate,
  locks: readonly Lock[],
  env: EngineEnv,
  out: Out,
): EngineChannel {
  const digest = env.crypto.digest(u.state);
  if (env.crypto.recover(digest, u.sig) !== ch.ctx.params.hub)
    throw new TrickleError('BAD_SIGNATURE', 'not signed by the hub');
  if (u.state.version <= ch.signedVersion)
    throw new TrickleError('STALE_VERSION', 'the device already signed this version');
  const sig = signatureToHex(env.crypto.sign(digest));
  out.persist(true);
  out.effects.push({ type: 'send', msg: ackFrame(ch, u.id, u.state.version, sig) });
  return {
    ...ch,
    latest: { state: u.state, deviceSig: sig, hubSig: signatureToHex(u.sig) },
    locks,
    signedVersion: u.state.version,
    signedDigest: sigHexOf(digest),
    peerVersion: u.state.version,
    yieldUntil: 0,
  };
}

/** Device: countersign the hub's lock transition (add, claim or expiry of a lock the hub pays). */
function acceptHubLockOp(ch: EngineChannel, u: PeerUpdate, env: EngineEnv, out: Out): StepResult {
  // The hub builds on the latest state both signed; a lock transition of ours in flight is a crossing.
  if (ch.proposals.length > 0) throw new TrickleError('STALE_VERSION', 'crossed with an update of the device');
  const st = peerTransition(ch, ch.latest.state, ch.locks, u, 'hub', nowSec(env));
  checkNotClaimed(ch, st);
  let next = countersign(ch, u, st.locks, env, out);
  const latest = next.latest;
  const amount = u.state.paidByHub - ch.latest.state.paidByHub;
  if (amount > 0n) out.effects.push({ type: 'incoming', amount, paymentId: u.paymentId, state: latest });
  next = afterPeerLockOp(next, st, u, latest, out);
  return finishWithProposals(next, out, env);
}

/** Resolve acked payments; routed ones wait for their receipt; a lock resolves once in place (`locked`). */
function settlePays(
  ch: EngineChannel,
  pays: readonly PendingPay[],
  latest: SignedState,
  env: EngineEnv,
  out: Out,
): EngineChannel {
  const routed = [...ch.routed];
  let early = ch.early;
  for (const w of pays) {
    if (w.unlock) {
      // Its outcome is a lock-settled effect; a lock given back (the device's caller asked) is answered here.
      if (w.ref >= 0) out.effects.push({ type: 'resolve', ref: w.ref, state: latest, amount: 0n });
      continue;
    }
    if (w.lock) {
      out.effects.push({
        type: 'resolve',
        ref: w.ref,
        state: latest,
        amount: w.amount,
        paymentId: w.route?.paymentId,
        locked: w.lock.hash,
      });
      continue;
    }
    if (!w.route) {
      out.effects.push({ type: 'resolve', ref: w.ref, state: latest, amount: w.amount });
      continue;
    }
    const found = early.find((e) => e.paymentId === w.route!.paymentId);
    if (found) {
      early = early.filter((e) => e !== found);
      if (found.delivered)
        out.effects.push({
          type: 'resolve',
          ref: w.ref,
          state: latest,
          amount: w.amount,
          paymentId: w.route.paymentId,
        });
      else out.effects.push({ type: 'reject', ref: w.ref, error: noRoute() });
      continue;
    }
    routed.push({
      ref: w.ref,
      paymentId: w.route.paymentId,
      amount: w.amount,
      target: w.target,
      version: latest.state.version,
      since: env.now,
    });
    out.effects.push({ type: 'timer', at: env.now + ch.config.routeTimeoutMs });
  }
  return { ...ch, routed, early };
}

const noRoute = () => new TrickleError('NO_ROUTE', 'not delivered: the hub refunded it');

function onReceipt(ch: EngineChannel, ev: Extract<EngineEvent, { type: 'receipt' }>): StepResult {
  const w = ch.routed.find((r) => r.paymentId === ev.paymentId);
  if (!w) {
    // The receipt can overtake the ack: keep it for when the payment is acked (bounded by what is in flight).
    const pending =
      ch.proposals.some((p) => p.route?.paymentId === ev.paymentId) ||
      ch.queue.some((q) => (q as PendingPay).route?.paymentId === ev.paymentId);
    if (!pending || ch.early.some((e) => e.paymentId === ev.paymentId)) return { channel: ch, effects: [] };
    return {
      channel: { ...ch, early: [...ch.early, { paymentId: ev.paymentId, delivered: ev.delivered }] },
      effects: [],
    };
  }
  const routed = ch.routed.filter((r) => r !== w);
  const effect: EngineEffect = ev.delivered
    ? { type: 'resolve', ref: w.ref, state: ch.latest, amount: w.amount, paymentId: w.paymentId }
    : { type: 'reject', ref: w.ref, error: noRoute() };
  return { channel: { ...ch, routed }, effects: [effect] };
}

/** Whether an adopted state holds a device payment of ours (a lock transition: by the lock list it commits to). */
function payDone(w: PendingPay, state: State, locks: readonly Lock[]): boolean {
  if (w.lock) return locks.some((l) => l.hash === w.lock!.hash);
  if (w.unlock) return !locks.some((l) => l.hash === w.unlock!.hash);
  return w.target <= state.paidByDevice;
}

/** Device: the hub countersigned our proposal `p` (and every one below it). */
function acked(
  next: EngineChannel,
  p: OwnProposal,
  settled: readonly OwnProposal[],
  latest: SignedState,
  env: EngineEnv,
  out: Out,
): EngineChannel {
  if (p.state.isFinal) {
    out.persist(true); // the final state goes on-chain: durable first
    for (const ref of p.closeRefs ?? []) out.effects.push({ type: 'resolve', ref, state: latest, amount: 0n });
    return next;
  }
  // The device's own payment: the hub committed it before acking, so it is written behind. A lock transition is
  // written at once: the device must know the lock list of its latest state after a restart.
  out.persist(settled.some((x) => x.op !== undefined));
  return settlePays(
    next,
    settled.flatMap((x) => x.pays),
    latest,
    env,
    out,
  );
}

/**
 * Device: the hub refused our proposal `ch.proposals[i]`. A proposal pipelined on top of the refused one holds its
 * payments too (counters are cumulative) and the hub may still accept it (a STORE_FAILURE or a crossing refuses one
 * version, not the ones above it). So the refused proposal's payments ride on the next one and share its outcome;
 * answering them now would tell a caller "failed" for a payment the hub then accepts, or queue it again and pay it
 * twice.
 */
function rejected(
  ch: EngineChannel,
  i: number,
  conflict: boolean,
  ev: Extract<EngineEvent, { type: 'peer-reject' }>,
  out: Out,
  env: EngineEnv,
): StepResult {
  const p = ch.proposals[i]!;
  const above = ch.proposals[i + 1];
  if (above) {
    const proposals = ch.proposals
      .filter((x) => x !== p)
      .map((x) => (x === above ? { ...x, pays: [...p.pays, ...x.pays] } : x));
    return finishWithProposals({ ...ch, proposals }, out, env);
  }
  // The newest proposal: its payments fail on the merits, or are queued again after a version conflict. Either way
  // the hub keeps our signature on it: one that pays it more than the state it acked is ours to void — a payment, a
  // lock of ours, or a lock of the hub's given back (a device state leaves a hub lock out only as a give-back: once
  // registered, that lock goes back to the hub whatever is revealed on-chain).
  const held = (ch.unchecked ?? ch.latest).state;
  if (
    p.sig &&
    (p.state.paidByDevice > held.paidByDevice ||
      p.state.lockedByDevice > held.lockedByDevice ||
      p.state.lockedByHub < held.lockedByHub)
  ) {
    ch = { ...ch, refused: p.state.version };
    // Durable before its callers hear of the refusal: a device that restarts still knows what it is exposed to (and
    // its close says so). Rare, so this write costs the payment path nothing.
    out.persist(true);
  }
  const proposals = ch.proposals.slice(0, i);
  const closeRefs = p.closeRefs ?? [];
  let queue = ch.queue;
  if (conflict) {
    queue = [...p.pays.map((w) => ({ ...w, target: 0n })), ...queue];
  } else {
    const e = peerError(ev, 'refused by the hub');
    for (const w of p.pays) out.effects.push({ type: 'reject', ref: w.ref, error: e });
    for (const ref of closeRefs) out.effects.push({ type: 'reject', ref, error: e });
  }
  const reclose = conflict ? closeRefs : [];
  return finishWithProposals({ ...ch, proposals, queue, closeRefs: [...ch.closeRefs, ...reclose] }, out, env);
}

/**
 * Device: our proposals `superseded` by `latest` (with lock list `locks`), a state the hub signed: the payments it holds
 * are done, the others are queued again, and the close() callers they carried wait for the next final state.
 * paidByDevice rises only through states the device signed, all from its own chain of proposals: a payment whose
 * cumulative target the state reaches is in it.
 */
function supersede(
  next: EngineChannel,
  superseded: readonly OwnProposal[],
  latest: SignedState,
  locks: readonly Lock[],
  env: EngineEnv,
  out: Out,
): EngineChannel {
  const pays = superseded.flatMap((p) => p.pays);
  const done = pays.filter((w) => payDone(w, latest.state, locks));
  next = settlePays(next, done, latest, env, out);
  const again = pays.filter((w) => !done.includes(w)).map((w) => ({ ...w, target: 0n }));
  return {
    ...next,
    queue: again.length > 0 ? [...again, ...next.queue] : next.queue,
    closeRefs: [...superseded.flatMap((p) => p.closeRefs ?? []), ...next.closeRefs],
  };
}

/** Device: a sync adopted the hub's `theirs` (lock list `locks`) over `before`. */
function adopted(
  next: EngineChannel,
  before: EngineChannel,
  settled: readonly OwnProposal[],
  theirs: SignedState,
  locks: readonly Lock[],
  env: EngineEnv,
  out: Out,
): EngineChannel {
  next = supersede(next, settled, theirs, locks, env, out);
  // close() callers whose final state the hub acked (the ack was lost) get it now; if the adopted state is not
  // final, their close is proposed again on top of it.
  if (theirs.state.isFinal) {
    for (const ref of next.closeRefs) out.effects.push({ type: 'resolve', ref, state: theirs, amount: 0n });
    next = { ...next, closeRefs: [] };
  }
  if (theirs.state.paidByHub > before.latest.state.paidByHub) {
    out.effects.push({
      type: 'incoming',
      amount: theirs.state.paidByHub - before.latest.state.paidByHub,
      state: theirs,
    });
  }
  return next;
}

/**
 * Device: routed payments whose receipt did not come in time are answered `TIMEOUT`; a timer is asked for the next
 * deadline of those still waiting (a tick may come early, for another timer, and a shell keeps one timer).
 */
function tick(ch: EngineChannel, env: EngineEnv, out: Out): EngineChannel {
  if (ch.routed.length === 0) return ch;
  const expired = ch.routed.filter((r) => env.now - r.since >= ch.config.routeTimeoutMs);
  const waiting = expired.length === 0 ? ch.routed : ch.routed.filter((r) => !expired.includes(r));
  if (waiting.length > 0)
    out.effects.push({ type: 'timer', at: Math.min(...waiting.map((r) => r.since)) + ch.config.routeTimeoutMs });
  if (expired.length === 0) return ch;
  for (const r of expired) {
    out.effects.push({
      type: 'reject',
      ref: r.ref,
      error: new TrickleError('TIMEOUT', 'no receipt yet: delivered or refunded later', {
        details: { paymentId: r.paymentId },
      }),
    });
  }
  return { ...ch, routed: waiting };
}

/**
 * Device: after every step that changed the channel. Give-backs a state both signed reached (the new `latest`) are
 * dropped from `givenBack`: countersigned, or void (the device signed no other state at their version). The step that
 * moved `latest` writes the channel, so the record drops them with the state that reached them.
 */
function after(before: EngineChannel, r: StepResult): StepResult {
  const given = r.channel.givenBack;
  if (given === undefined || r.channel.latest === before.latest) return r;
  const v = r.channel.latest.state.version;
  const left = given.filter((g) => g.version > v);
  if (left.length === given.length) return r;
  return { channel: { ...r.channel, givenBack: left.length > 0 ? left : undefined }, effects: r.effects };
}

const rules: RoleRules = Object.freeze({
  role: 'device',
  pay: onPay,
  close: onClose,
  receipt: onReceipt,
  peerUpdates: onPeerUpdates,
  propose: proposeDevice,
  acked,
  rejected,
  adopted,
  tick,
  resynced,
  after,
});

/** The device's rules, for `createEngineChannel(restore, deviceRules)`. */
export const deviceRules: EngineRules = rules;
