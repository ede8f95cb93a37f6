// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/**
 * @title ReentrantToken
 * @notice TEST ONLY. A standard ERC-20 that, once armed, calls `target` with `payload` in the middle of every
 * transfer (after balances moved), trying to re-enter the adjudicator. The outcome of the last attempt is recorded
 * and, unless `bubble` is set, swallowed so the outer transfer completes. Anyone can mint and arm.
 */
contract ReentrantToken is ERC20 {
    address public target;
    bytes public payload;
    bool public bubble;
    uint256 public attempts;
    bool public lastSucceeded;
    bytes public lastReturnData;
    bool private _inside;

    constructor() ERC20("Reentrant Token", "REE") {}

    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    /// @notice Arm (or disarm with `target_ == address(0)`) the re-entry attempt.
    function arm(address target_, bytes calldata payload_, bool bubble_) external {
        target = target_;
        payload = payload_;
        bubble = bubble_;
    }

    function _update(address from, address to, uint256 value) internal override {
        super._update(from, to, value);
        if (target == address(0) || _inside || from == address(0) || to == address(0)) return;
        _inside = true;
        ++attempts;
        (bool ok, bytes memory ret) = target.call(payload);
        lastSucceeded = ok;
        lastReturnData = ret;
        _inside = false;
        if (!ok && bubble) {
            assembly ("memory-safe") {
                revert(add(ret, 0x20), mload(ret))
            }
        }
    }
}
