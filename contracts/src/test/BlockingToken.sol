// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/**
 * @title BlockingToken
 * @notice TEST ONLY. A standard ERC-20 that reverts every transfer to one configured recipient (as a blocklisting
 * stablecoin would). Anyone can mint and anyone can change the blocked address.
 */
contract BlockingToken is ERC20 {
    address public blocked;

    error RecipientBlocked(address recipient);

    constructor(address blocked_) ERC20("Blocking Token", "BLK") {
        blocked = blocked_;
    }

    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    function setBlocked(address blocked_) external {
        blocked = blocked_;
    }

    function _update(address from, address to, uint256 value) internal override {
        if (to == blocked && to != address(0)) revert RecipientBlocked(to);
        super._update(from, to, value);
    }
}
