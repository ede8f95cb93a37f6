// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/**
 * @title FeeOnTransferToken
 * @notice TEST ONLY. Burns `feeBps` basis points of every transfer (mints are free), so the recipient gets less
 * than the amount sent. Anyone can mint.
 */
contract FeeOnTransferToken is ERC20 {
    uint256 public immutable feeBps;

    error FeeTooHigh(uint256 feeBps);

    constructor(uint256 feeBps_) ERC20("Fee-on-transfer Token", "FOT") {
        if (feeBps_ > 10_000) revert FeeTooHigh(feeBps_);
        feeBps = feeBps_;
    }

    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    function _update(address from, address to, uint256 value) internal override {
        if (from == address(0) || to == address(0)) {
            super._update(from, to, value);
            return;
        }
        uint256 fee = (value * feeBps) / 10_000;
        super._update(from, to, value - fee);
        if (fee != 0) super._update(from, address(0), fee);
    }
}
