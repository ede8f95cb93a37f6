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
 * Storage: four slots per channel, three written at open. Each participant slot packs the address with its deposit
 * (uint96: 7.9e28 base units per side, 79 billion whole 18-decimal tokens), so a top-up rewrites one warm-able slot
 * instead of touching a fresh one; the fourth slot (registered version, deadline, device payout) is written only by
 * a force close. The registered state is kept as the device's payout, not as its two counters: deposits are frozen
 * once a channel is closing, so the payout is all `settle` needs and all `challenge` has to replace. On close every
 * slot but the status is cleared (gas refund), and the status stays `Closed` forever so an id is never reused.
 *
 * Reentrancy: every state-changing entry point is `nonReentrant` (transient storage, EIP-1153) and follows
 * checks-effects-interactions: channel storage is final before any token or ETH moves.
 */
contract Adjudicator is IAdjudicator, EIP712, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    /// @notice keccak256 of the EIP-712 `State` type string.
    bytes32 public constant STATE_TYPEHASH = keccak256(
        "State(bytes32 channelId,uint64 version,uint256 paidByDevice,uint256 paidByHub,uint64 round,bytes32 locksRoot,uint256 lockedByDevice,uint256 lockedByHub,bool isFinal)"
    );

    /// @notice Upper bound on `challengeDuration` (one year): catches milliseconds passed as seconds.
    uint64 public constant MAX_CHALLENGE_DURATION = 365 days;

    /// @notice Gas forwarded with an ETH payout push. Enough for a smart-contract wallet's `receive`, small enough
    /// that a hostile recipient cannot make a batch expensive.
    uint256 public constant ETH_PUSH_GAS = 30_000;

    /// @dev Gas that must be left before an ETH push: the call's own cost (cold account 2,600, value 9,000, new
    /// account 25,000) plus ETH_PUSH_GAS after the 1/64 retention. With it, a failed push is the recipient's doing,
    /// never a submitter's who passed too little gas on purpose.
    uint256 private constant ETH_PUSH_RESERVE = 70_000;

    /// @notice Gas that must be left before an ERC20 payout push (the token then gets at least ~95k), for the same
    /// reason: a caller cannot starve a transfer to divert a payout into `owed`.
    uint256 public constant TOKEN_PUSH_RESERVE = 100_000;

    /// @dev Largest deposit per participant.
    uint256 private constant MAX_DEPOSIT = type(uint96).max;

    /// @dev One participant: address and deposit share a slot.
    struct Party {
        address account;
        uint96 deposit;
    }

    /// @dev Token, challenge duration and status share a slot; the status keeps it non-zero for ETH channels.
    struct Meta {
        address token;
        uint64 challengeDuration;
        Status status;
    }

    /// @dev The registered state of a force close. payoutHub = depositDevice + depositHub − payoutDevice.
    struct Registered {
        uint64 version;
        uint64 deadline;
        uint128 payoutDevice;
    }

    struct Channel {
        Party device;
        Party hub;
        Meta meta;
        Registered reg;
    }

    mapping(bytes32 channelId => Channel) private _channels;

    /// @inheritdoc IAdjudicator
    mapping(address token => mapping(address account => uint256)) public owed;

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
        Status status = c.meta.status;
        if (status != Status.None) revert ChannelExists(channelId, status);

        address token = params.token;
        // Effects before the token pull; the deposit is known only once it has arrived.
        c.meta = Meta({token: token, challengeDuration: challengeDuration, status: Status.Open});
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
        Meta memory meta = c.meta;
        if (meta.status != Status.Open) revert ChannelNotOpen(channelId, meta.status);
        Party storage party;
        if (msg.sender == c.device.account) {
            party = c.device;
        } else if (msg.sender == c.hub.account) {
            party = c.hub;
        } else {
            revert NotParticipant(channelId, msg.sender);
        }
        uint256 credited = _pullIn(meta.token, amount);
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
            if (_channels[s.state.channelId].meta.status == Status.Closed) continue;
            _cooperativeClose(s.state, s.deviceSig, s.hubSig);
            ++closed;
        }
    }

    function _cooperativeClose(State calldata state, bytes calldata deviceSig, bytes calldata hubSig) private {
        bytes32 channelId = state.channelId;
        Channel storage c = _channels[channelId];
        Meta memory meta = c.meta;
        if (meta.status != Status.Open && meta.status != Status.Closing) {
            revert ChannelNotActive(channelId, meta.status);
        }
        if (!state.isFinal) revert NotFinal(channelId, state.version);
        if (_hasLocks(state)) revert LocksPending(channelId);
        Party memory device = c.device;
        Party memory hub = c.hub;
        _verify(channelId, state, deviceSig, hubSig, device.account, hub.account);
        (uint256 payoutDevice, uint256 payoutHub) = _payouts(channelId, state, device.deposit, hub.deposit);

        _clear(c, meta.status == Status.Closing);
        emit Closed(channelId, state.version, payoutDevice, payoutHub);
        _push(channelId, meta.token, device.account, payoutDevice);
        _push(channelId, meta.token, hub.account, payoutHub);
    }

    // ------------------------------------------------------------------------------------------------------------
    // Unilateral close
    // ------------------------------------------------------------------------------------------------------------

    /// @inheritdoc IAdjudicator
    function forceClose(State calldata state, bytes calldata deviceSig, bytes calldata hubSig) external nonReentrant {
        bytes32 channelId = state.channelId;
        Channel storage c = _channels[channelId];
        Meta memory meta = c.meta;
        if (meta.status != Status.Open) revert ChannelNotOpen(channelId, meta.status);
        Party memory device = c.device;
        Party memory hub = c.hub;
        if (msg.sender != device.account && msg.sender != hub.account) revert NotParticipant(channelId, msg.sender);
        // A channel that never moved can always be closed from its deposits, without the counterparty.
        if (_hasLocks(state)) revert LocksPending(channelId);
        bool zeroState = state.version == 0 && state.paidByDevice == 0 && state.paidByHub == 0 && state.round == 0;
        if (!zeroState) _verify(channelId, state, deviceSig, hubSig, device.account, hub.account);
        (uint256 payoutDevice,) = _payouts(channelId, state, device.deposit, hub.deposit);

        uint64 deadline = uint64(block.timestamp) + meta.challengeDuration;
        c.meta.status = Status.Closing;
        c.reg = Registered({version: state.version, deadline: deadline, payoutDevice: uint128(payoutDevice)});
        emit ForceClosed(channelId, state.version, state.paidByDevice, state.paidByHub, deadline, msg.sender);
    }

    /// @inheritdoc IAdjudicator
    function challenge(State calldata state, bytes calldata deviceSig, bytes calldata hubSig) external nonReentrant {
        bytes32 channelId = state.channelId;
        Channel storage c = _channels[channelId];
        Status status = c.meta.status;
        if (status != Status.Closing) revert ChannelNotClosing(channelId, status);
        Registered memory reg = c.reg;
        if (block.timestamp >= reg.deadline) revert ChallengePeriodOver(channelId, reg.deadline);
        if (state.version <= reg.version) revert StaleVersion(channelId, reg.version, state.version);
        if (_hasLocks(state)) revert LocksPending(channelId);
        Party memory device = c.device;
        Party memory hub = c.hub;
        _verify(channelId, state, deviceSig, hubSig, device.account, hub.account);
        (uint256 payoutDevice,) = _payouts(channelId, state, device.deposit, hub.deposit);

        c.reg = Registered({version: state.version, deadline: reg.deadline, payoutDevice: uint128(payoutDevice)});
        emit Challenged(channelId, state.version, reg.deadline);
    }

    /// @inheritdoc IAdjudicator
    function settle(bytes32 channelId) external nonReentrant {
        _settle(channelId, true);
    }

    /// @inheritdoc IAdjudicator
    function settleMany(bytes32[] calldata channelIds) external nonReentrant returns (uint256 settled) {
        for (uint256 i = 0; i < channelIds.length; ++i) {
            if (_settle(channelIds[i], false)) ++settled;
        }
    }

    /// @dev Settles `channelId`; when it is not settleable, reverts if `strict`, else returns false.
    function _settle(bytes32 channelId, bool strict) private returns (bool) {
        Channel storage c = _channels[channelId];
        Meta memory meta = c.meta;
        if (meta.status != Status.Closing) {
            if (strict) revert ChannelNotClosing(channelId, meta.status);
            return false;
        }
        Registered memory reg = c.reg;
        if (block.timestamp < reg.deadline) {
            if (strict) revert ChallengePeriodNotOver(channelId, reg.deadline);
            return false;
        }
        address device = c.device.account;
        address hub = c.hub.account;
        uint256 payoutDevice = reg.payoutDevice;
        uint256 payoutHub = uint256(c.device.deposit) + c.hub.deposit - payoutDevice;

        _clear(c, true);
        emit Closed(channelId, reg.version, payoutDevice, payoutHub);
        _push(channelId, meta.token, device, payoutDevice);
        _push(channelId, meta.token, hub, payoutHub);
        return true;
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
        Meta memory meta = c.meta;
        info.status = meta.status;
        info.token = meta.token;
        info.challengeDuration = meta.challengeDuration;
        info.device = c.device.account;
        info.depositDevice = c.device.deposit;
        info.hub = c.hub.account;
        info.depositHub = c.hub.deposit;
        if (meta.status == Status.Closing) {
            Registered memory reg = c.reg;
            info.version = reg.version;
            info.deadline = reg.deadline;
            info.payoutDevice = reg.payoutDevice;
            info.payoutHub = info.depositDevice + info.depositHub - reg.payoutDevice;
        }
    }

    /// @inheritdoc IAdjudicator
    function stateDigest(State calldata state) external view returns (bytes32) {
        return _hashTypedDataV4(_hashState(state));
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

    /// @dev EIP-712 hashStruct: every member is a static type, so abi.encode is one word per member.
    function _hashState(State calldata state) private pure returns (bytes32) {
        return keccak256(abi.encode(STATE_TYPEHASH, state));
    }

    /// @dev Whether a state commits to any pending lock.
    function _hasLocks(State calldata state) private pure returns (bool) {
        return state.locksRoot != 0 || state.lockedByDevice != 0 || state.lockedByHub != 0;
    }

    /// @dev Both signatures over the state's digest. ECDSA rejects malformed, high-s, bad-v and zero recoveries.
    function _verify(
        bytes32 channelId,
        State calldata state,
        bytes calldata deviceSig,
        bytes calldata hubSig,
        address device,
        address hub
    ) private view {
        bytes32 digest = _hashTypedDataV4(_hashState(state));
        address signer = ECDSA.recoverCalldata(digest, deviceSig);
        if (signer != device) revert WrongSigner(channelId, device, signer);
        signer = ECDSA.recoverCalldata(digest, hubSig);
        if (signer != hub) revert WrongSigner(channelId, hub, signer);
    }

    /// @dev Payouts of `state` against the deposits; reverts if either would be negative. They sum to the deposits.
    function _payouts(bytes32 channelId, State calldata state, uint256 depositDevice, uint256 depositHub)
        private
        pure
        returns (uint256 payoutDevice, uint256 payoutHub)
    {
        uint256 byDevice = state.paidByDevice;
        uint256 byHub = state.paidByHub;
        unchecked {
            if (byHub >= byDevice) {
                uint256 net = byHub - byDevice;
                if (net > depositHub) {
                    revert StateExceedsDeposits(channelId, byDevice, byHub, depositDevice, depositHub);
                }
                // Both deposits are below 2^96: no overflow.
                return (depositDevice + net, depositHub - net);
            } else {
                uint256 net = byDevice - byHub;
                if (net > depositDevice) {
                    revert StateExceedsDeposits(channelId, byDevice, byHub, depositDevice, depositHub);
                }
                return (depositDevice - net, depositHub + net);
            }
        }
    }

    /// @dev Clears a channel's storage (refunds) and marks it Closed forever.
    function _clear(Channel storage c, bool registered) private {
        delete c.device;
        delete c.hub;
        c.meta = Meta({token: address(0), challengeDuration: 0, status: Status.Closed});
        if (registered) delete c.reg;
    }

    /// @dev Takes a deposit in: ETH must arrive as msg.value; tokens are credited by the balance delta.
    function _pullIn(address token, uint256 amount) private returns (uint256 credited) {
        if (token == address(0)) {
            if (msg.value != amount) revert ValueMismatch(amount, msg.value);
            return amount;
        }
        if (msg.value != 0) revert ValueMismatch(0, msg.value);
        if (amount == 0) return 0;
        uint256 before = IERC20(token).balanceOf(address(this));
        IERC20(token).safeTransferFrom(msg.sender, address(this), amount);
        return IERC20(token).balanceOf(address(this)) - before;
    }

    /// @dev Pushes a payout; if the transfer fails, credits it to `owed` for a later `withdraw`.
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
            ok = IERC20(token).trySafeTransfer(to, amount);
        }
        if (!ok) {
            owed[token][to] += amount;
            emit PayoutDeferred(channelId, token, to, amount);
        }
    }
}
