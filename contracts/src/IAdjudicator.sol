// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/**
 * @title IAdjudicator
 * @notice On-chain arbiter for Trickle payment channels between one device and one hub, for one token (ERC20, or
 * ETH as the zero address). Off-chain, both parties sign EIP-712 `State`s whose counters `paidByDevice` and
 * `paidByHub` are cumulative and which commit to their pending hashlocks (`locksRoot`, `lockedByDevice`,
 * `lockedByHub`); on-chain the adjudicator holds deposits, keeps a preimage registry, and pays out the last state
 * both signed.
 *
 * Lifecycle: `open` → (`deposit`)* → either `cooperativeClose` (a final state without locks, signed by both, paid at
 * once) or `forceClose` (registers a signed state, or the zero state, and starts the challenge period) →
 * (`challenge` with a strictly newer version)* → `settle` once the deadline has passed and every lock is decided.
 * While a force close is pending, `cooperativeCloseDisputed` closes at once with a final state. A channel id, once
 * used, can never be opened again.
 *
 * Registration: a force close keeps only a hash of the registered {Registration} (with the block it was made in);
 * `challenge`, `settle` and `cooperativeCloseDisputed` take the registration back as calldata and check it against
 * the hash. It is emitted in full by `ForceClosed` / `Challenged` (`getChannel` names the block to read it from).
 *
 * Payouts: device gets depositDevice − paidByDevice + paidByHub − lockedByDevice, hub gets depositHub − paidByHub
 * + paidByDevice − lockedByHub, both before locks; each lock then goes whole to its payee if its preimage was
 * revealed (`reveal`) at or before its expiry, and back to its payer otherwise. A state for which either pre-lock
 * payout is negative is refused. Payouts are pushed in the closing transaction with capped gas; a push that fails
 * (a recipient that rejects ETH, a token that blocks the recipient or burns gas) is credited to
 * `owed[token][recipient]` instead, for the recipient to pull with `withdraw`, so one party can never trap the
 * other's funds or make its close expensive.
 *
 * Timing: `forceClose` at time t sets `deadline = t + challengeDuration`. `challenge` is accepted while
 * `block.timestamp < deadline`; `settle` from `block.timestamp >= deadline` on, once no lock is pending (a lock is
 * pending while its preimage is unrevealed and `block.timestamp <= expiry`). A challenge never moves the deadline.
 *
 * Own signature: a participant submitting `forceClose`, `challenge` or a cooperative close may leave its own
 * signature empty: sending the transaction is its consent. The other party's signature is always checked.
 */
interface IAdjudicator {
    /// @notice Life-cycle of a channel id. `None`: never used. `Closed` is final and permanent.
    enum Status {
        None,
        Open,
        Closing,
        Closed
    }

    /// @notice The parameters that fix a channel. Its id is `keccak256(abi.encode(params))`.
    /// @dev `chainId` and `adjudicator` must equal `block.chainid` and this contract; `token` is zero for ETH.
    struct Params {
        uint256 chainId;
        address adjudicator;
        address device;
        address hub;
        address token;
        uint64 challengeDuration;
        bytes32 salt;
    }

    /// @notice The state both parties sign (EIP-712 type `State`). Mirrored field for field by the TypeScript type.
    struct State {
        bytes32 channelId;
        uint64 version;
        uint256 paidByDevice;
        uint256 paidByHub;
        uint64 round;
        bytes32 locksRoot;
        uint256 lockedByDevice;
        uint256 lockedByHub;
        bool isFinal;
    }

    /// @notice Who pays a lock.
    enum Payer {
        Device,
        Hub
    }

    /**
     * @notice A pending conditional transfer: `amount` from `payer` to the other party, claimed by revealing the
     * 32-byte preimage of `hash` (`hash == keccak256(abi.encode(preimage))`) at or before `expiry` (unix seconds).
     * A state commits to its lock list with `locksRoot = keccak256(abi.encode(lock_0) ‖ abi.encode(lock_1) ‖ …)`
     * (bytes32(0) for none) and to the per-payer totals `lockedByDevice` / `lockedByHub`.
     */
    struct Lock {
        uint256 amount;
        bytes32 hash;
        uint64 expiry;
        Payer payer;
    }

    /**
     * @notice What a force close registers, kept on-chain only as a hash: the channel's parties, token and deposits,
     * the registered state's version and pre-lock payouts, its lock commitment and the deadline. The device and its
     * deposit stay readable in storage (`getChannel`); the other fields are in the `ForceClosed` / `Challenged` event.
     */
    struct Registration {
        address device;
        uint256 depositDevice;
        address token;
        address hub;
        uint256 depositHub;
        uint64 version;
        uint64 deadline;
        uint256 payoutDevice;
        uint256 payoutHub;
        bytes32 locksRoot;
    }

    /// @notice A state with both parties' 65-byte r‖s‖v signatures, for batch entry points.
    struct SignedState {
        State state;
        bytes deviceSig;
        bytes hubSig;
    }

    /// @notice One `settleMany` entry: the channel, its current registration and the registered state's locks.
    struct SettleEntry {
        bytes32 channelId;
        Registration reg;
        Lock[] locks;
    }

    /// @notice A channel as the adjudicator records it. After `Closed`, only `status` is kept.
    /// @dev While `Open`: the parties, token, challenge duration and deposits (what actually arrived: fee-on-transfer
    /// tokens are credited by balance delta). While `Closing`: `device`, `depositDevice`, `registrationHash` and
    /// `registeredBlock`, the block whose `ForceClosed` / `Challenged` event for this channel carries the rest of the
    /// current {Registration}.
    struct ChannelInfo {
        Status status;
        address device;
        address hub;
        address token;
        uint64 challengeDuration;
        uint256 depositDevice;
        uint256 depositHub;
        bytes32 registrationHash;
        uint64 registeredBlock;
    }

    // ------------------------------------------------------------------------------------------------------------
    // Events
    // ------------------------------------------------------------------------------------------------------------

    /// @notice A channel was opened by `opener` (the device or the hub), who deposited `deposit` (as credited).
    event ChannelOpened(
        bytes32 indexed channelId,
        address indexed device,
        address indexed hub,
        address token,
        uint64 challengeDuration,
        address opener,
        uint256 deposit
    );

    /// @notice `participant` topped up by `amount` (as credited); `total` is that participant's deposit now.
    event Deposited(bytes32 indexed channelId, address indexed participant, uint256 amount, uint256 total);

    /// @notice `by` registered a state (or the zero state). With the device and its deposit (`getChannel`), the
    /// fields make the {Registration} that `challenge` and `settle` take back.
    event ForceClosed(
        bytes32 indexed channelId,
        address by,
        address token,
        address hub,
        uint256 depositHub,
        uint64 version,
        uint64 deadline,
        uint256 payoutDevice,
        uint256 payoutHub,
        bytes32 locksRoot
    );

    /// @notice `by` replaced the registered state with a strictly newer one: the new registration's fields, as in
    /// `ForceClosed` (same deadline).
    event Challenged(
        bytes32 indexed channelId,
        address by,
        address token,
        address hub,
        uint256 depositHub,
        uint64 version,
        uint64 deadline,
        uint256 payoutDevice,
        uint256 payoutHub,
        bytes32 locksRoot
    );

    /// @notice `preimage` of `hash` became known on-chain at `timestamp` (the first reveal only).
    event Revealed(bytes32 indexed hash, bytes32 preimage, uint64 timestamp);

    /// @notice The channel closed (cooperatively or by settlement) and these payouts were made or credited.
    event Closed(bytes32 indexed channelId, uint64 version, uint256 devicePayout, uint256 hubPayout);

    /// @notice A payout push failed and was credited to `owed[token][recipient]` instead.
    event PayoutDeferred(bytes32 indexed channelId, address indexed token, address indexed recipient, uint256 amount);

    /// @notice `account` pulled `amount` of what it was owed, sent to `to`.
    event Withdrawn(address indexed token, address indexed account, address to, uint256 amount);

    // ------------------------------------------------------------------------------------------------------------
    // Errors
    // ------------------------------------------------------------------------------------------------------------

    /// @notice `Params.chainId` / `Params.adjudicator` are not this chain / this contract.
    error WrongDomain(uint256 chainId, address adjudicator);
    /// @notice The device or the hub is the zero address.
    error ZeroParticipant();
    /// @notice The same account in both slots.
    error SameDeviceAndHub(address account);
    /// @notice `challengeDuration` is zero or above `MAX_CHALLENGE_DURATION`.
    error InvalidChallengeDuration(uint64 challengeDuration);
    /// @notice The channel id was used before (it may be open, closing or closed: ids are never reused).
    error ChannelExists(bytes32 channelId, Status status);
    /// @notice The operation needs an open channel.
    error ChannelNotOpen(bytes32 channelId, Status status);
    /// @notice The operation needs a channel with a pending force close.
    error ChannelNotClosing(bytes32 channelId, Status status);
    /// @notice The operation needs an open or closing channel.
    error ChannelNotActive(bytes32 channelId, Status status);
    /// @notice The caller is neither the device nor the hub of the channel (or of the params, at open).
    error NotParticipant(bytes32 channelId, address account);
    /// @notice ETH sent does not match the amount (ETH channels), or ETH was sent to a token channel.
    error ValueMismatch(uint256 expected, uint256 received);
    /// @notice A top-up credited nothing.
    error ZeroDeposit(bytes32 channelId);
    /// @notice A participant's deposit would exceed 2^96 − 1 base units.
    error DepositTooLarge(bytes32 channelId, uint256 total);
    /// @notice `cooperativeClose` needs a state with `isFinal` set.
    error NotFinal(bytes32 channelId, uint64 version);
    /// @notice The state would pay a party more than the channel holds (a negative payout for the other).
    error StateExceedsDeposits(
        bytes32 channelId,
        uint256 paidByDevice,
        uint256 paidByHub,
        uint256 depositDevice,
        uint256 depositHub
    );
    /// @notice The state has pending locks where none are allowed (a cooperative close needs them resolved first).
    error LocksPending(bytes32 channelId);
    /// @notice The lock list does not hash to the committed `locksRoot`, or its totals differ from the state's.
    error WrongLocks(bytes32 channelId, bytes32 locksRoot);
    /// @notice More locks than `MAX_LOCKS` in one state.
    error TooManyLocks(bytes32 channelId, uint256 count);
    /// @notice A lock is still undecided (preimage unrevealed, expiry not passed): settle after `expiry`.
    error LockNotExpired(bytes32 channelId, bytes32 hash, uint64 expiry);
    /// @notice The registration given does not match the one the channel holds.
    error WrongRegistration(bytes32 channelId);
    /// @notice A challenge must carry a strictly higher version than the registered one, a disputed cooperative close
    /// at least that version.
    error StaleVersion(bytes32 channelId, uint64 registered, uint64 given);
    /// @notice The challenge period ended at `deadline`.
    error ChallengePeriodOver(bytes32 channelId, uint64 deadline);
    /// @notice The channel can be settled from `deadline` on.
    error ChallengePeriodNotOver(bytes32 channelId, uint64 deadline);
    /// @notice A signature recovers to `recovered`, not to the `expected` party.
    error WrongSigner(bytes32 channelId, address expected, address recovered);
    /// @notice Nothing is owed to `account` in `token`.
    error NothingOwed(address token, address account);
    /// @notice `withdraw` to the zero address.
    error ZeroRecipient();
    /// @notice Sending ETH to `to` failed during `withdraw`.
    error EthTransferFailed(address to, uint256 amount);
    /// @notice Too little gas left to attempt a payout push with its full allowance; retry with more gas.
    error GasTooLow(uint256 gasLeft, uint256 needed);

    // ------------------------------------------------------------------------------------------------------------
    // Channel life-cycle
    // ------------------------------------------------------------------------------------------------------------

    /**
     * @notice Open a channel and deposit for the caller, who must be `params.device` or `params.hub`.
     * @dev ETH channels: `msg.value` must equal `amount`. Token channels: the caller approves first; the amount
     * credited is the adjudicator's balance increase. `amount` may be zero (the other side deposits later).
     * @param params the channel parameters; `chainId`/`adjudicator` must be this chain and this contract
     * @param amount the caller's deposit
     * @return channelId `keccak256(abi.encode(params))`
     */
    function open(Params calldata params, uint256 amount) external payable returns (bytes32 channelId);

    /**
     * @notice Top up the caller's deposit in an open channel (the caller is the device or the hub).
     * @param channelId the channel
     * @param amount ETH: must equal `msg.value`; token: pulled with `transferFrom`, credited by balance delta
     */
    function deposit(bytes32 channelId, uint256 amount) external payable;

    /**
     * @notice Close with a final state signed by both parties, paying out at once. Anyone may submit it.
     * Accepted while the channel is open; while a force close is pending, `cooperativeCloseDisputed` takes the state
     * (this one reverts `ChannelNotOpen`).
     * @param state a state with `isFinal` set
     * @param deviceSig the device's 65-byte signature over the state's EIP-712 digest
     * @param hubSig the hub's 65-byte signature
     */
    function cooperativeClose(State calldata state, bytes calldata deviceSig, bytes calldata hubSig) external;

    /**
     * @notice Close several open channels cooperatively. Entries whose channel is already `Closed` are skipped (a
     * race with the counterparty or a previous batch is normal); any other invalid entry reverts the whole batch,
     * including a channel with a pending force close (that one closes with `cooperativeCloseDisputed`).
     * @param states the signed final states
     * @return closed how many channels this call closed
     */
    function cooperativeCloseMany(SignedState[] calldata states) external returns (uint256 closed);

    /**
     * @notice Close at once with a final state signed by both while a force close is pending (anyone may submit).
     * A final state older than the registered version is refused (`StaleVersion`): the parties signed on after it (a
     * final state one side refused, then a credit), and closing with it would undo what they signed since.
     * @param reg the channel's current registration (from its `ForceClosed` / `Challenged` event)
     */
    function cooperativeCloseDisputed(
        Registration calldata reg,
        State calldata state,
        bytes calldata deviceSig,
        bytes calldata hubSig
    ) external;

    /**
     * @notice Start a unilateral close. Only the device or the hub may call: the transaction is its consent, and
     * `r`/`vs` is the other party's signature of the state in EIP-2098 compact form (both zero for the zero state:
     * version 0, counters 0, round 0, no locks, which needs no signature). Deadline: now + challengeDuration. For a
     * state without locks; see `forceCloseWithLocks`.
     */
    function forceClose(State calldata state, bytes32 r, bytes32 vs) external;

    /**
     * @notice `forceClose` for a state with pending locks.
     * @param locks the state's pending locks, in committed order (checked against `locksRoot` and the totals)
     */
    function forceCloseWithLocks(State calldata state, Lock[] calldata locks, bytes32 r, bytes32 vs) external;

    /**
     * @notice Replace the registered state with a strictly newer one (without locks) signed by both, before the
     * deadline. The deadline is not extended. Anyone may submit (e.g. a watchtower).
     * @param reg the current registration
     */
    function challenge(Registration calldata reg, State calldata state, bytes calldata deviceSig, bytes calldata hubSig)
        external;

    /**
     * @notice `challenge` with a newer state that has pending locks.
     * @param locks the new state's pending locks, in committed order
     */
    function challengeWithLocks(
        Registration calldata reg,
        State calldata state,
        Lock[] calldata locks,
        bytes calldata deviceSig,
        bytes calldata hubSig
    ) external;

    /**
     * @notice Pay out the registered state (without locks) once the deadline has passed. Anyone may call.
     * @param reg the current registration
     */
    function settle(bytes32 channelId, Registration calldata reg) external;

    /**
     * @notice `settle` for a registered state with locks: each is decided first (it must not be pending).
     * @param locks the registered state's locks (checked against the registered `locksRoot`)
     */
    function settleWithLocks(bytes32 channelId, Registration calldata reg, Lock[] calldata locks) external;

    /**
     * @notice Settle several channels. Entries that cannot be settled yet (not closing, deadline not reached, a lock
     * pending, already settled) are skipped, so a hub can submit every candidate without racing its counterparties;
     * an entry not yet due is skipped before its registration is checked (a challenge may have replaced it since it
     * was read). A due entry with a wrong registration or lock list reverts the batch.
     * @return settled how many channels this call settled
     */
    function settleMany(SettleEntry[] calldata entries) external returns (uint256 settled);

    /**
     * @notice Record that `preimage` is known: `revealedAt[keccak256(abi.encode(preimage))]` becomes the block
     * timestamp, unless it was revealed before (then nothing changes). Anyone may call.
     * @return hash the hash the preimage opens
     * @return revealedAt when it was first revealed
     */
    function reveal(bytes32 preimage) external returns (bytes32 hash, uint64 revealedAt);

    /// @notice When the preimage of `hash` was first revealed (unix seconds), 0 if never.
    function revealedAt(bytes32 hash) external view returns (uint64);

    /**
     * @notice Pull everything owed to the caller in `token` (payouts whose push failed), sending it to `to`.
     * @return amount what was sent
     */
    function withdraw(address token, address to) external returns (uint256 amount);

    // ------------------------------------------------------------------------------------------------------------
    // Views
    // ------------------------------------------------------------------------------------------------------------

    /// @notice The recorded channel (all zero with `Status.None` for an unknown id).
    function getChannel(bytes32 channelId) external view returns (ChannelInfo memory);

    /// @notice Amount of `token` that `account` can pull with `withdraw`.
    function owed(address token, address account) external view returns (uint256);

    /// @notice The EIP-712 digest of `state` under this adjudicator's domain (what both parties sign).
    function stateDigest(State calldata state) external view returns (bytes32);

    /// @notice The root a lock list commits to (bytes32(0) for none), as a state's `locksRoot`.
    function locksRootOf(Lock[] calldata locks) external pure returns (bytes32);

    /// @notice The hash `challenge` and `settle` check a registration against.
    function registrationHashOf(bytes32 channelId, Registration calldata reg) external pure returns (bytes32);

    /// @notice `keccak256(abi.encode(params))`, computed from the given fields as they are.
    function channelIdOf(Params calldata params) external pure returns (bytes32);

    /// @notice The EIP-712 domain separator (name "Trickle", version "1", chain id, this contract).
    function domainSeparator() external view returns (bytes32);
}
