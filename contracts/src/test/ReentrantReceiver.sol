// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {IAdjudicator} from "../IAdjudicator.sol";

/**
 * @title ReentrantReceiver
 * @notice TEST ONLY. A smart-contract participant of ETH channels: it opens, deposits and closes as `msg.sender`
 * through `act` (as the submitter it may leave its own signature out, so the counterparty's is all a state needs).
 * Once armed, its `receive` tries to re-enter the adjudicator when a payout arrives, within the push's gas (the
 * attempt and its outcome are events, not storage writes, so they fit): `Mode.Withdraw` pulls what it is owed,
 * `Mode.ForceClose` force-closes the channel `other` (another channel of this contract's) with its zero state, which
 * needs no signature. The outcome is swallowed: the payout itself is accepted.
 */
contract ReentrantReceiver {
    enum Mode {
        None,
        Withdraw,
        ForceClose
    }

    IAdjudicator public immutable adjudicator;
    Mode public mode;
    bytes32 public other;

    event Received(uint256 amount);
    event Reentered(bool ok, bytes returnData);

    constructor(IAdjudicator adjudicator_) {
        adjudicator = adjudicator_;
    }

    /// @notice Set what `receive` tries (`Mode.None`: nothing).
    function arm(Mode mode_, bytes32 other_) external {
        mode = mode_;
        other = other_;
    }

    /// @notice Call the adjudicator as this contract, forwarding `msg.value`; bubbles a revert.
    function act(bytes calldata data) external payable returns (bytes memory ret) {
        bool ok;
        (ok, ret) = address(adjudicator).call{value: msg.value}(data);
        if (!ok) {
            assembly ("memory-safe") {
                revert(add(ret, 0x20), mload(ret))
            }
        }
    }

    receive() external payable {
        emit Received(msg.value);
        Mode m = mode;
        if (m == Mode.None) return;
        bytes memory data;
        if (m == Mode.Withdraw) {
            data = abi.encodeCall(IAdjudicator.withdraw, (address(0), address(this)));
        } else {
            IAdjudicator.State memory zero;
            zero.channelId = other;
            data = abi.encodeCall(IAdjudicator.forceClose, (zero, bytes32(0), bytes32(0)));
        }
        (bool ok, bytes memory ret) = address(adjudicator).call(data);
        emit Reentered(ok, ret);
    }
}
