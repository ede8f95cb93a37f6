// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {IAdjudicator} from "./IAdjudicator.sol";

/**
 * @title Adjudicator
 * @notice Trickle payment-channel adjudicator. See {IAdjudicator} for the protocol; this file is about storage and
 * gas.
 *
 * Storage: three slots per channel, all written by `open`. Each participant slot packs the address with its deposit
 * (uint96: 7.9e28 base units per side), so a top-up rewrites one slot; the third (`meta`) packs the token, the
 * challenge duration and the status (top byte). A force close collapses the channel into that word: the hub slot is
 * cleared (its refund lands in the force close itself) and `meta` becomes
 * `registrationHash (low 208 bits) | block number (40 bits) | status`, the hash of the full {Registration}, which is
 * emitted in the `ForceClosed` / `Challenged` event and taken back as calldata by `challenge`, `settle` and
 * `cooperativeCloseDisputed`. So a force close writes no fresh slot, and settling reads and clears one. A 208-bit
 * hash keeps 104-bit collision resistance; a registration is checked field for field through it. Closing (either
 * way) clears `meta` and the hub slot and keeps the device slot as a tombstone: status `Closed` forever, so an id
 * is never reused, and the clearing refunds pay for the close.
 *
 * Locks: a state commits to its lock list with `locksRoot`; the list is checked against it at force close and
 * challenge (root and per-payer totals) and again at settle (against the registered root), where each lock is
 * decided from the preimage registry `revealedAt`.
 *
 * Reentrancy: every state-changing entry point that moves funds is `nonReentrant` (transient storage, EIP-1153) and
 * follows checks-effects-interactions: channel storage is final before any token or ETH moves.
 */
contract Adjudicator is IAdjudicator, EIP712, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    /// @notice keccak256 of the EIP-712 `State` type string.
    bytes32 public constant STATE_TYPEHASH = keccak256(
        "State(bytes32 channelId,uint64 version,uint256 paidByDevice,uint256 paidByHub,uint64 round,bytes32 locksRoot,uint256 lockedByDevice,uint256 lockedByHub,bool isFinal)"
    );

    /// @notice Upper bound on `challengeDuration` (one year): catches milliseconds passed as seconds.
    uint64 public constant MAX_CHALLENGE_DURATION = 365 days;

    /// @notice Most locks one state may carry: settling that many stays far below a block's gas limit.
    uint256 public constant MAX_LOCKS = 64;

    /// @notice Gas forwarded with an ETH payout push. Enough for a smart-contract wallet's `receive`, small enough
    /// that a hostile recipient cannot make a batch expensive.
    uint256 public constant ETH_PUSH_GAS = 30_000;

    /// @dev Gas that must be left before an ETH push: the call's own cost (cold account 2,600, value 9,000, new
    /// account 25,000) plus ETH_PUSH_GAS after the 1/64 retention. With it, a failed push is the recipient's doing,
    /// never a submitter's who passed too little gas on purpose.
    uint256 private constant ETH_PUSH_RESERVE = 70_000;

    /// @notice Gas forwarded with an ERC20 payout push (`transfer`): a standard token needs 30–60k (a fresh
    /// recipient balance included); a token that burns gas or needs more fails the push, which is then owed (pull it
    /// with `withdraw`, uncapped), so the other party's close never costs more than this per push.
    uint256 public constant TOKEN_PUSH_GAS = 150_000;

    /// @notice Gas that must be left before an ERC20 payout push (TOKEN_PUSH_GAS after the 1/64 retention, plus the
    /// call's own cost), for the same reason: a caller cannot starve a transfer to divert a payout into `owed`.
    uint256 public constant TOKEN_PUSH_RESERVE = 160_000;

    /// @dev Largest deposit per participant.
    uint256 private constant MAX_DEPOSIT = type(uint96).max;

    // The `meta` word. Open: token | challengeDuration << 160 | status << 248. Closing: registration hash (low 208
    // bits) | block << 208 | status << 248. Closed: zero, with the device slot still set (see _status).
    uint256 private constant STATUS_SHIFT = 248;
    uint256 private constant BLOCK_SHIFT = 208;
    uint256 private constant DURATION_SHIFT = 160;
    uint256 private constant HASH_MASK = (1 << 208) - 1;

    /// @dev One participant: address and deposit share a slot.
    struct Party {
        address account;
        uint96 deposit;
    }

    struct Channel {
        Party device;
        Party hub;
        uint256 meta;
    }

    mapping(bytes32 channelId => Channel) private _channels;

    /// @inheritdoc IAdjudicator
    mapping(address token => mapping(address account => uint256)) public owed;

    /// @inheritdoc IAdjudicator
    mapping(bytes32 hash => uint64) public revealedAt;

    constructor() EIP712("Trickle", "1") {}

    // ------------------------------------------------------------------------------------------------------------
    // Open and deposit
    // ------------------------------------------------------------------------------------------------------------

    /// @inheritdoc IAdjudicator
    function open(Params calldata params, uint256 amount) external payable nonReentrant returns (bytes32 channelId) {
        if (params.chainId != block.chainid || params.adjudicator != address(this)) {
            revert WrongDomain(params.chainId, params.adjudicator);
        }
        address device = params.device;
        address hub = params.hub;
        if (device == address(0) || hub == address(0)) revert ZeroParticipant();
        if (device == hub) revert SameDeviceAndHub(device);
        uint64 challengeDuration = params.challengeDuration;
        if (challengeDuration == 0 || challengeDuration > MAX_CHALLENGE_DURATION) {
            revert InvalidChallengeDuration(challengeDuration);
        }
        channelId = keccak256(abi.encode(params));
        if (msg.sender != device && msg.sender != hub) revert NotParticipant(channelId, msg.sender);

        Channel storage c = _channels[channelId];
        Status status = _status(c, c.meta);
        if (status != Status.None) revert ChannelExists(channelId, status);

        address token = params.token;
        // Effects before the token pull; the deposit is known only once it has arrived.
        c.meta = uint256(uint160(token)) | (uint256(challengeDuration) << DURATION_SHIFT)
            | (uint256(uint8(Status.Open)) << STATUS_SHIFT);
        uint256 credited = _pullIn(token, amount);
        if (credited > MAX_DEPOSIT) revert DepositTooLarge(channelId, credited);
        bool byDevice = msg.sender == device;
        c.device = Party({account: device, deposit: byDevice ? uint96(credited) : 0});
        c.hub = Party({account: hub, deposit: byDevice ? 0 : uint96(credited)});

        emit ChannelOpened(channelId, device, hub, token, challengeDuration, msg.sender, credited);
    }

    /// @inheritdoc IAdjudicator
    function deposit(bytes32 channelId, uint256 amount) external payable nonReentrant {
        Channel storage c = _channels[channelId];
        uint256 meta = c.meta;
        Status status = _status(c, meta);
        if (status != Status.Open) revert ChannelNotOpen(channelId, status);
        Party storage party;
        if (msg.sender == c.device.account) {
            party = c.device;
        } else if (msg.sender == c.hub.account) {
            party = c.hub;
        } else {
            revert NotParticipant(channelId, msg.sender);
        }
        uint256 credited = _pullIn(address(uint160(meta)), amount);
        if (credited == 0) revert ZeroDeposit(channelId);
        uint256 total = party.deposit + credited;
        if (total > MAX_DEPOSIT) revert DepositTooLarge(channelId, total);
        party.deposit = uint96(total);
        emit Deposited(channelId, msg.sender, credited, total);
    }

    // ------------------------------------------------------------------------------------------------------------
    // Cooperative close
    // ------------------------------------------------------------------------------------------------------------

    /// @inheritdoc IAdjudicator
    function cooperativeClose(State calldata state, bytes calldata deviceSig, bytes calldata hubSig)
        external
        nonReentrant
    {
        _cooperativeClose(state, deviceSig, hubSig);
    }

    /// @inheritdoc IAdjudicator
    function cooperativeCloseMany(SignedState[] calldata states) external nonReentrant returns (uint256 closed) {
        for (uint256 i = 0; i < states.length; ++i) {
            SignedState calldata s = states[i];
            if (_status(_channels[s.state.channelId]) == Status.Closed) continue;
            _cooperativeClose(s.state, s.deviceSig, s.hubSig);
            ++closed;
        }
    }

    function _cooperativeClose(State calldata state, bytes calldata deviceSig, bytes calldata hubSig) private {
        bytes32 channelId = state.channelId;
        Channel storage c = _channels[channelId];
        uint256 meta = c.meta;
        Status status = _status(c, meta);
        if (status != Status.Open) {
            // A pending force close holds only a registration hash: that case is cooperativeCloseDisputed.
            if (status == Status.Closing) revert ChannelNotOpen(channelId, status);
            revert ChannelNotActive(channelId, status);
        }
        if (!state.isFinal) revert NotFinal(channelId, state.version);
        if (_hasLocks(state)) revert LocksPending(channelId);
        Party memory device = c.device;
        Party memory hub = c.hub;
        _verify(channelId, state, deviceSig, hubSig, device.account, hub.account);
        (uint256 payoutDevice, uint256 payoutHub) = _payouts(channelId, state, device.deposit, hub.deposit);

        // The device slot stays as the tombstone: the id can never be opened again.
        delete c.hub;
        c.meta = 0;
        emit Closed(channelId, state.version, payoutDevice, payoutHub);
        address token = address(uint160(meta));
        _push(channelId, token, device.account, payoutDevice);
        _push(channelId, token, hub.account, payoutHub);
    }

    /// @inheritdoc IAdjudicator
    function cooperativeCloseDisputed(
        Registration calldata reg,
        State calldata state,
        bytes calldata deviceSig,
        bytes calldata hubSig
    ) external nonReentrant {
        bytes32 channelId = state.channelId;
        Channel storage c = _channels[channelId];
        uint256 meta = c.meta;
        Status status = _status(c, meta);
        if (status != Status.Closing) revert ChannelNotClosing(channelId, status);
        _checkRegistration(channelId, meta, reg);
        if (!state.isFinal) revert NotFinal(channelId, state.version);
        // A final state older than the registered one was superseded: the parties signed on after it (a final state
        // the hub refused, then a credit). Closing with it would undo what they signed since.
        if (state.version < reg.version) revert StaleVersion(channelId, reg.version, state.version);
        if (_hasLocks(state)) revert LocksPending(channelId);
        _verify(channelId, state, deviceSig, hubSig, reg.device, reg.hub);
        (uint256 payoutDevice, uint256 payoutHub) = _payouts(channelId, state, reg.depositDevice, reg.depositHub);

        c.meta = 0;
        emit Closed(channelId, state.version, payoutDevice, payoutHub);
        _push(channelId, reg.token, reg.device, payoutDevice);
        _push(channelId, reg.token, reg.hub, payoutHub);
    }

    // ------------------------------------------------------------------------------------------------------------
    // Unilateral close
    // ------------------------------------------------------------------------------------------------------------

    /// @inheritdoc IAdjudicator
    function forceClose(State calldata state, bytes32 r, bytes32 vs) external nonReentrant {
        _forceClose(state, _noLocks(), r, vs);
    }

    /// @inheritdoc IAdjudicator
    function forceCloseWithLocks(State calldata state, Lock[] calldata locks, bytes32 r, bytes32 vs)
        external
        nonReentrant
    {
        _forceClose(state, locks, r, vs);
    }

    function _forceClose(State calldata state, Lock[] calldata locks, bytes32 r, bytes32 vs) private {
        bytes32 channelId = state.channelId;
        Channel storage c = _channels[channelId];
        uint256 meta = c.meta;
        Status status = _status(c, meta);
        if (status != Status.Open) revert ChannelNotOpen(channelId, status);
        Party memory device = c.device;
        Party memory hub = c.hub;
        if (msg.sender != device.account && msg.sender != hub.account) revert NotParticipant(channelId, msg.sender);
        bytes32 root = _checkLocks(channelId, state, locks);
        // A channel that never moved can always be closed from its deposits, without the counterparty.
        bool zeroState = state.version == 0 && state.paidByDevice == 0 && state.paidByHub == 0 && state.round == 0
            && root == 0;
        if (!zeroState) {
            // The caller consents by sending the transaction; the other party by its signature.
            address other = msg.sender == device.account ? hub.account : device.account;
            address signer = ECDSA.recover(_hashTypedDataV4(_hashState(state)), r, vs);
            if (signer != other) revert WrongSigner(channelId, other, signer);
        }
        (uint256 payoutDevice, uint256 payoutHub) = _payouts(channelId, state, device.deposit, hub.deposit);

        Registration memory reg = Registration({
            device: device.account,
            depositDevice: device.deposit,
            token: address(uint160(meta)),
            hub: hub.account,
            depositHub: hub.deposit,
            version: state.version,
            deadline: uint64(block.timestamp) + uint64(meta >> DURATION_SHIFT),
            payoutDevice: payoutDevice,
            payoutHub: payoutHub,
            locksRoot: root
        });
        // The device slot is kept (the tombstone once closed); the hub slot's refund lands here.
        delete c.hub;
        c.meta = _register(channelId, reg, ForceClosed.selector);
    }

    /// @inheritdoc IAdjudicator
    function challenge(Registration calldata reg, State calldata state, bytes calldata deviceSig, bytes calldata hubSig)
        external
        nonReentrant
    {
        _challenge(reg, state, _noLocks(), deviceSig, hubSig);
    }

    /// @inheritdoc IAdjudicator
    function challengeWithLocks(
        Registration calldata reg,
        State calldata state,
        Lock[] calldata locks,
        bytes calldata deviceSig,
        bytes calldata hubSig
    ) external nonReentrant {
        _challenge(reg, state, locks, deviceSig, hubSig);
    }

    function _challenge(
        Registration calldata reg,
        State calldata state,
        Lock[] calldata locks,
        bytes calldata deviceSig,
        bytes calldata hubSig
    ) private {
        bytes32 channelId = state.channelId;
        Channel storage c = _channels[channelId];
        uint256 meta = c.meta;
        Status status = _status(c, meta);
        if (status != Status.Closing) revert ChannelNotClosing(channelId, status);
        _checkRegistration(channelId, meta, reg);
        if (block.timestamp >= reg.deadline) revert ChallengePeriodOver(channelId, reg.deadline);
        if (state.version <= reg.version) revert StaleVersion(channelId, reg.version, state.version);
        _verify(channelId, state, deviceSig, hubSig, reg.device, reg.hub);
        c.meta = _register(channelId, _reregister(channelId, reg, state, locks), Challenged.selector);
    }

    /// @dev `reg` with the version, pre-lock payouts and lock root of the newer `state` (same parties and deadline).
    function _reregister(bytes32 channelId, Registration calldata reg, State calldata state, Lock[] calldata locks)
        private
        pure
        returns (Registration memory next)
    {
        next = reg;
        next.locksRoot = _checkLocks(channelId, state, locks);
        (next.payoutDevice, next.payoutHub) = _payouts(channelId, state, reg.depositDevice, reg.depositHub);
        next.version = state.version;
    }

    /// @inheritdoc IAdjudicator
    function settle(bytes32 channelId, Registration calldata reg) external nonReentrant {
        _settle(channelId, reg, _noLocks(), true);
    }

    /// @inheritdoc IAdjudicator
    function settleWithLocks(bytes32 channelId, Registration calldata reg, Lock[] calldata locks) external nonReentrant {
        _settle(channelId, reg, locks, true);
    }

    /// @inheritdoc IAdjudicator
    function settleMany(SettleEntry[] calldata entries) external nonReentrant returns (uint256 settled) {
        for (uint256 i = 0; i < entries.length; ++i) {
            SettleEntry calldata e = entries[i];
            if (_settle(e.channelId, e.reg, e.locks, false)) ++settled;
        }
    }

    /// @dev Settles `channelId`; when it is not settleable (yet), reverts if `strict`, else returns false. A wrong
    /// registration or lock list always reverts: it is the caller's mistake, not a race.
    function _settle(bytes32 channelId, Registration calldata reg, Lock[] calldata locks, bool strict)
        private
        returns (bool)
    {
        Channel storage c = _channels[channelId];
        uint256 meta = c.meta;
        Status status = _status(c, meta);
        if (status != Status.Closing) {
            if (strict) revert ChannelNotClosing(channelId, status);
            return false;
        }
        // A batch skips an entry not yet due before checking its registration: until the deadline a challenge may
        // replace it between the caller's read and this transaction (a race, not a caller bug). A wrong deadline
        // only skips; a registration claiming a passed one is checked.
        uint64 deadline = reg.deadline;
        if (!strict && block.timestamp < deadline) return false;
        _checkRegistration(channelId, meta, reg);
        if (block.timestamp < deadline) revert ChallengePeriodNotOver(channelId, deadline);
        uint256 payoutDevice = reg.payoutDevice;
        uint256 payoutHub = reg.payoutHub;
        uint256 n = locks.length;
        if (n != 0 || reg.locksRoot != 0) {
            if (n > MAX_LOCKS || _locksRoot(locks) != reg.locksRoot) revert WrongLocks(channelId, reg.locksRoot);
            for (uint256 i = 0; i < n; ++i) {
                Lock calldata l = locks[i];
                uint64 expiry = l.expiry;
                uint64 revealed = revealedAt[l.hash];
                bool toDevice;
                if (revealed != 0 && revealed <= expiry) {
                    toDevice = l.payer == Payer.Hub; // claimed: the payee's
                } else if (block.timestamp > expiry) {
                    toDevice = l.payer == Payer.Device; // expired unclaimed: back to the payer
                } else {
                    if (strict) revert LockNotExpired(channelId, l.hash, expiry);
                    return false;
                }
                if (toDevice) payoutDevice += l.amount;
                else payoutHub += l.amount;
            }
        }

        c.meta = 0;
        emit Closed(channelId, reg.version, payoutDevice, payoutHub);
        _push(channelId, reg.token, reg.device, payoutDevice);
        _push(channelId, reg.token, reg.hub, payoutHub);
        return true;
    }

    // ------------------------------------------------------------------------------------------------------------
    // Preimages
    // ------------------------------------------------------------------------------------------------------------

    /// @inheritdoc IAdjudicator
    function reveal(bytes32 preimage) external returns (bytes32 hash, uint64 revealed) {
        hash = keccak256(abi.encode(preimage));
        revealed = revealedAt[hash];
        if (revealed == 0) {
            revealed = uint64(block.timestamp);
            revealedAt[hash] = revealed;
            emit Revealed(hash, preimage, revealed);
        }
    }

    // ------------------------------------------------------------------------------------------------------------
    // Pull payments
    // ------------------------------------------------------------------------------------------------------------

    /// @inheritdoc IAdjudicator
    function withdraw(address token, address to) external nonReentrant returns (uint256 amount) {
        if (to == address(0)) revert ZeroRecipient();
        amount = owed[token][msg.sender];
        if (amount == 0) revert NothingOwed(token, msg.sender);
        owed[token][msg.sender] = 0;
        emit Withdrawn(token, msg.sender, to, amount);
        if (token == address(0)) {
            bool ok;
            // The caller pulls its own funds: all gas, and no return data copied.
            assembly ("memory-safe") {
                ok := call(gas(), to, amount, 0, 0, 0, 0)
            }
            if (!ok) revert EthTransferFailed(to, amount);
        } else {
            IERC20(token).safeTransfer(to, amount);
        }
    }

    // ------------------------------------------------------------------------------------------------------------
    // Views
    // ------------------------------------------------------------------------------------------------------------

    /// @inheritdoc IAdjudicator
    function getChannel(bytes32 channelId) external view returns (ChannelInfo memory info) {
        Channel storage c = _channels[channelId];
        uint256 meta = c.meta;
        info.status = _status(c, meta);
        if (info.status == Status.Open) {
            info.token = address(uint160(meta));
            info.challengeDuration = uint64(meta >> DURATION_SHIFT);
            info.device = c.device.account;
            info.depositDevice = c.device.deposit;
            info.hub = c.hub.account;
            info.depositHub = c.hub.deposit;
        } else if (info.status == Status.Closing) {
            info.device = c.device.account;
            info.depositDevice = c.device.deposit;
            info.registrationHash = bytes32(meta & HASH_MASK);
            info.registeredBlock = uint64(uint40(meta >> BLOCK_SHIFT));
        }
    }

    /// @inheritdoc IAdjudicator
    function stateDigest(State calldata state) external view returns (bytes32) {
        return _hashTypedDataV4(_hashState(state));
    }

    /// @inheritdoc IAdjudicator
    function locksRootOf(Lock[] calldata locks) external pure returns (bytes32) {
        return _locksRoot(locks);
    }

    /// @inheritdoc IAdjudicator
    function registrationHashOf(bytes32 channelId, Registration calldata reg) external pure returns (bytes32) {
        return bytes32(uint256(_registrationHash(channelId, reg)) & HASH_MASK);
    }

    /// @inheritdoc IAdjudicator
    function channelIdOf(Params calldata params) external pure returns (bytes32) {
        return keccak256(abi.encode(params));
    }

    /// @inheritdoc IAdjudicator
    function domainSeparator() external view returns (bytes32) {
        return _domainSeparatorV4();
    }

    // ------------------------------------------------------------------------------------------------------------
    // Internals
    // ------------------------------------------------------------------------------------------------------------

    /// @dev The status: the top byte of `meta`, or, once `meta` is cleared, Closed if the device slot (kept as the
    /// channel's tombstone) is set and None if it is not.
    function _status(Channel storage c, uint256 meta) private view returns (Status) {
        if (meta != 0) return Status(uint8(meta >> STATUS_SHIFT));
        return c.device.account == address(0) ? Status.None : Status.Closed;
    }

    /// @dev An empty lock list in calldata (for the entry points of states without locks).
    function _noLocks() private pure returns (Lock[] calldata locks) {
        assembly ("memory-safe") {
            locks.offset := 0
            locks.length := 0
        }
    }

    function _status(Channel storage c) private view returns (Status) {
        return _status(c, c.meta);
    }

    /// @dev Emits `reg` (as `ForceClosed` or `Challenged`, by the caller, without the device and its deposit, which
    /// stay in storage) and returns the `meta` word of a channel registered so in this block. One buffer serves both:
    /// channelId ‖ reg is hashed, then the word holding the device's deposit is overwritten with the caller and the
    /// event data is the buffer from there (by, token, hub, depositHub, version, deadline, payouts, locksRoot).
    function _register(bytes32 channelId, Registration memory reg, bytes32 topic0) private returns (uint256 meta) {
        uint256 h;
        assembly ("memory-safe") {
            let p := mload(0x40)
            mstore(p, channelId)
            mcopy(add(p, 0x20), reg, 0x140)
            h := keccak256(p, 0x160)
            mstore(add(p, 0x40), caller())
            log2(add(p, 0x40), 0x120, topic0, channelId)
        }
        meta = (h & HASH_MASK) | (uint256(uint40(block.number)) << BLOCK_SHIFT)
            | (uint256(uint8(Status.Closing)) << STATUS_SHIFT);
    }

    /// @dev keccak256(abi.encode(channelId, reg)) over the calldata words as given (a registration with dirty
    /// padding hashes differently from the registered one and is refused).
    function _registrationHash(bytes32 channelId, Registration calldata reg) private pure returns (bytes32 h) {
        assembly ("memory-safe") {
            let p := mload(0x40)
            mstore(p, channelId)
            calldatacopy(add(p, 0x20), reg, 0x140)
            h := keccak256(p, 0x160)
        }
    }

    function _checkRegistration(bytes32 channelId, uint256 meta, Registration calldata reg) private pure {
        if ((uint256(_registrationHash(channelId, reg)) ^ meta) & HASH_MASK != 0) revert WrongRegistration(channelId);
    }

    /// @dev keccak256 over the lock list's calldata (128 bytes per lock), bytes32(0) for none.
    function _locksRoot(Lock[] calldata locks) private pure returns (bytes32 root) {
        uint256 n = locks.length;
        if (n == 0) return 0;
        assembly ("memory-safe") {
            let p := mload(0x40)
            let len := mul(n, 0x80)
            calldatacopy(p, locks.offset, len)
            root := keccak256(p, len)
        }
    }

    /// @dev Checks a state's lock list against its commitment (root, per-payer totals, count); returns the root.
    function _checkLocks(bytes32 channelId, State calldata state, Lock[] calldata locks)
        private
        pure
        returns (bytes32 root)
    {
        uint256 n = locks.length;
        root = state.locksRoot;
        if (n == 0) {
            if (_hasLocks(state)) revert WrongLocks(channelId, root);
            return root;
        }
        if (n > MAX_LOCKS) revert TooManyLocks(channelId, n);
        if (_locksRoot(locks) != root) revert WrongLocks(channelId, root);
        uint256 byDevice;
        uint256 byHub;
        for (uint256 i = 0; i < n; ++i) {
            Lock calldata l = locks[i];
            if (l.payer == Payer.Device) byDevice += l.amount;
            else byHub += l.amount;
        }
        if (byDevice != state.lockedByDevice || byHub != state.lockedByHub) revert WrongLocks(channelId, root);
    }

    /// @dev Whether a state commits to any pending lock.
    function _hasLocks(State calldata state) private pure returns (bool) {
        return state.locksRoot != 0 || state.lockedByDevice != 0 || state.lockedByHub != 0;
    }

    /// @dev EIP-712 hashStruct: every member is a static type, so the encoding is one word per member, copied from
    /// calldata as given (dirty padding changes the digest, so such a state never verifies).
    function _hashState(State calldata state) private pure returns (bytes32 h) {
        bytes32 typehash = STATE_TYPEHASH;
        assembly ("memory-safe") {
            let p := mload(0x40)
            mstore(p, typehash)
            calldatacopy(add(p, 0x20), state, 0x120)
            h := keccak256(p, 0x140)
        }
    }

    /// @dev Both signatures over the state's digest; a participant submitting the transaction may leave its own
    /// empty. ECDSA rejects malformed, high-s, bad-v and zero recoveries.
    function _verify(
        bytes32 channelId,
        State calldata state,
        bytes calldata deviceSig,
        bytes calldata hubSig,
        address device,
        address hub
    ) private view {
        bytes32 digest = _hashTypedDataV4(_hashState(state));
        if (deviceSig.length != 0 || msg.sender != device) {
            address signer = ECDSA.recoverCalldata(digest, deviceSig);
            if (signer != device) revert WrongSigner(channelId, device, signer);
        }
        if (hubSig.length != 0 || msg.sender != hub) {
            address signer = ECDSA.recoverCalldata(digest, hubSig);
            if (signer != hub) revert WrongSigner(channelId, hub, signer);
        }
    }

    /// @dev Pre-lock payouts of `state` against the deposits: each side's deposit, plus what it received, minus what
    /// it paid and what it has locked. Reverts if either would be negative. With the locked totals they sum to the
    /// deposits.
    function _payouts(bytes32 channelId, State calldata state, uint256 depositDevice, uint256 depositHub)
        private
        pure
        returns (uint256 payoutDevice, uint256 payoutHub)
    {
        uint256 byDevice = state.paidByDevice;
        uint256 byHub = state.paidByHub;
        uint256 lockedDevice = state.lockedByDevice;
        uint256 lockedHub = state.lockedByHub;
        bool ok;
        // Deposits are below 2^96, so a sum of a deposit and a net below another deposit cannot overflow.
        unchecked {
            if (byHub >= byDevice) {
                uint256 net = byHub - byDevice;
                if (net <= depositHub && lockedHub <= depositHub - net) {
                    payoutHub = depositHub - net - lockedHub;
                    uint256 gross = depositDevice + net;
                    if (lockedDevice <= gross) {
                        payoutDevice = gross - lockedDevice;
                        ok = true;
                    }
                }
            } else {
                uint256 net = byDevice - byHub;
                if (net <= depositDevice && lockedDevice <= depositDevice - net) {
                    payoutDevice = depositDevice - net - lockedDevice;
                    uint256 gross = depositHub + net;
                    if (lockedHub <= gross) {
                        payoutHub = gross - lockedHub;
                        ok = true;
                    }
                }
            }
        }
        if (!ok) revert StateExceedsDeposits(channelId, byDevice, byHub, depositDevice, depositHub);
    }

    /// @dev Takes a deposit in: ETH must arrive as msg.value; tokens are credited by the balance delta, never more
    /// than `amount` (a token whose `balanceOf` over-reports cannot credit more than was asked for).
    function _pullIn(address token, uint256 amount) private returns (uint256 credited) {
        if (token == address(0)) {
            if (msg.value != amount) revert ValueMismatch(amount, msg.value);
            return amount;
        }
        if (msg.value != 0) revert ValueMismatch(0, msg.value);
        if (amount == 0) return 0;
        uint256 before = IERC20(token).balanceOf(address(this));
        IERC20(token).safeTransferFrom(msg.sender, address(this), amount);
        uint256 afterwards = IERC20(token).balanceOf(address(this));
        credited = afterwards > before ? afterwards - before : 0;
        if (credited > amount) credited = amount;
    }

    /// @dev Pushes a payout with capped gas; if the transfer fails, credits it to `owed` for a later `withdraw`.
    function _push(bytes32 channelId, address token, address to, uint256 amount) private {
        if (amount == 0) return;
        bool ok;
        if (token == address(0)) {
            if (gasleft() < ETH_PUSH_RESERVE) revert GasTooLow(gasleft(), ETH_PUSH_RESERVE);
            // Capped gas and no return data copied: a hostile recipient can neither grief nor bomb.
            assembly ("memory-safe") {
                ok := call(ETH_PUSH_GAS, to, amount, 0, 0, 0, 0)
            }
        } else {
            if (gasleft() < TOKEN_PUSH_RESERVE) revert GasTooLow(gasleft(), TOKEN_PUSH_RESERVE);
            // transfer(to, amount) with capped gas; at most 32 bytes of return data copied. Success: no return data
            // from an account with code (USDT-style), or a 32-byte true.
            assembly ("memory-safe") {
                let p := mload(0x40)
                mstore(p, shl(224, 0xa9059cbb))
                mstore(add(p, 4), to)
                mstore(add(p, 36), amount)
                mstore(0, 0)
                let success := call(TOKEN_PUSH_GAS, token, 0, p, 68, 0, 32)
                // No return data counts as success (USDT-style): the token has code, since a deposit of it arrived
                // through safeTransferFrom (which checks), and no push happens for a channel nobody funded.
                switch returndatasize()
                case 0 { ok := success }
                default { ok := and(success, and(gt(returndatasize(), 31), eq(mload(0), 1))) }
            }
        }
        if (!ok) {
            owed[token][to] += amount;
            emit PayoutDeferred(channelId, token, to, amount);
        }
    }
}
