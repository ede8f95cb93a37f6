// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/**
 * @title LyingBalanceToken
 * @notice TEST ONLY. A standard ERC-20 whose `balanceOf` misreports one account (`liar`): it adds `offset`, and
 * every transfer into that account moves the offset by `bonus` (so a deposit seems to bring in more, or less, than
 * it did).
 * Anyone can mint and set the lie.
 */
contract LyingBalanceToken is ERC20 {
    address public liar;
    int256 public offset;
    int256 public bonus;

    constructor() ERC20("Lying Balance Token", "LIE") {}

    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    function setLie(address liar_, int256 offset_, int256 bonus_) external {
        liar = liar_;
        offset = offset_;
        bonus = bonus_;
    }

    function balanceOf(address account) public view override returns (uint256) {
        uint256 real = super.balanceOf(account);
        if (account != liar) return real;
        int256 reported = int256(real) + offset;
        return reported < 0 ? 0 : uint256(reported);
    }

    function _update(address from, address to, uint256 value) internal override {
        super._update(from, to, value);
        if (to == liar && to != address(0)) offset += bonus;
    }
}
