// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {TestToken} from "./TestToken.sol";

/// @notice TEST ONLY: a TestToken that burns a fee of `feeBasisPoints` of every transfer (not of mints), so the
/// receiver gets less than was asked, as fee-on-transfer tokens do.
contract FeeToken is TestToken {
    uint256 public immutable feeBasisPoints;

    constructor(string memory name_, string memory symbol_, uint8 decimals_, uint256 feeBasisPoints_)
        TestToken(name_, symbol_, decimals_)
    {
        require(feeBasisPoints_ <= 10_000, "FeeToken: fee above 100%");
        feeBasisPoints = feeBasisPoints_;
    }

    function _update(address from, address to, uint256 value) internal override {
        if (from == address(0) || to == address(0)) {
            super._update(from, to, value);
            return;
        }
        uint256 fee = (value * feeBasisPoints) / 10_000;
        super._update(from, address(0), fee);
        super._update(from, to, value - fee);
    }
}
