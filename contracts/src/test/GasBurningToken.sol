// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/**
 * @title GasBurningToken
 * @notice TEST ONLY. A standard ERC-20 that, for transfers to one configured `victim`, burns every unit of gas it is
 * given (a loop until out of gas) instead of transferring. Anyone can mint and change the victim.
 */
contract GasBurningToken is ERC20 {
    address public victim;

    constructor() ERC20("Gas Burning Token", "BURN") {}

    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    function setVictim(address victim_) external {
        victim = victim_;
    }

    function _update(address from, address to, uint256 value) internal override {
        if (to == victim && to != address(0)) {
            uint256 x;
            while (true) {
                unchecked {
                    ++x;
                }
            }
        }
        super._update(from, to, value);
    }
}
