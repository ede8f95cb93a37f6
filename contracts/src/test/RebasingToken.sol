// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

/**
 * @title RebasingToken
 * @notice TEST ONLY. An 18-decimal token whose balances are shares times a global `index` (1e18 = 1.0): `rebase`
 * changes every holder's balance at once, as elastic-supply and interest-bearing tokens do, without a transfer.
 * Anyone can mint and rebase.
 */
contract RebasingToken {
    string public constant name = "Rebasing Token";
    string public constant symbol = "REB";
    uint8 public constant decimals = 18;
    uint256 public index = 1e18;
    mapping(address => uint256) public sharesOf;
    mapping(address => mapping(address => uint256)) public allowance;

    event Transfer(address indexed from, address indexed to, uint256 value);
    event Approval(address indexed owner, address indexed spender, uint256 value);

    error InsufficientBalance(address account, uint256 balance, uint256 needed);
    error InsufficientAllowance(address spender, uint256 allowance, uint256 needed);

    function balanceOf(address account) public view returns (uint256) {
        return sharesOf[account] * index / 1e18;
    }

    function mint(address to, uint256 amount) external {
        sharesOf[to] += amount * 1e18 / index;
        emit Transfer(address(0), to, amount);
    }

    /// @notice Set the index: every balance becomes shares × index / 1e18.
    function rebase(uint256 index_) external {
        index = index_;
    }

    function approve(address spender, uint256 amount) external returns (bool) {
        allowance[msg.sender][spender] = amount;
        emit Approval(msg.sender, spender, amount);
        return true;
    }

    function transfer(address to, uint256 amount) external returns (bool) {
        _move(msg.sender, to, amount);
        return true;
    }

    function transferFrom(address from, address to, uint256 amount) external returns (bool) {
        uint256 allowed = allowance[from][msg.sender];
        if (allowed != type(uint256).max) {
            if (allowed < amount) revert InsufficientAllowance(msg.sender, allowed, amount);
            allowance[from][msg.sender] = allowed - amount;
        }
        _move(from, to, amount);
        return true;
    }

    function _move(address from, address to, uint256 amount) private {
        uint256 shares = amount * 1e18 / index;
        uint256 have = sharesOf[from];
        if (have < shares) revert InsufficientBalance(from, balanceOf(from), amount);
        sharesOf[from] = have - shares;
        sharesOf[to] += shares;
        emit Transfer(from, to, amount);
    }
}
