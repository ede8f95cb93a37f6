// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/**
 * @title FalseReturningToken
 * @notice TEST ONLY. An ERC-20 in the style of early tokens that report failure by returning `false` instead of
 * reverting: while `refusing` is set, `transfer` and `transferFrom` that touch `refused` (as sender or recipient) move
 * nothing and return false. Anyone can mint and change `refused` / `refusing`.
 */
contract FalseReturningToken is ERC20 {
    address public refused;
    bool public refusing;

    constructor() ERC20("False Returning Token", "FLS") {}

    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    /// @notice Make transfers from or to `refused_` return false (`refusing_`), or behave again.
    function setRefused(address refused_, bool refusing_) external {
        refused = refused_;
        refusing = refusing_;
    }

    function transfer(address to, uint256 value) public override returns (bool) {
        if (refusing && (to == refused || msg.sender == refused)) return false;
        return super.transfer(to, value);
    }

    function transferFrom(address from, address to, uint256 value) public override returns (bool) {
        if (refusing && (to == refused || from == refused)) return false;
        return super.transferFrom(from, to, value);
    }
}
