// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {TestToken} from "./TestToken.sol";

/// @notice TEST ONLY: a TestToken that, once armed, calls back into the escrow (fund, execute or refund of an escrow
/// id) in the middle of a transfer or transferFrom made by the escrow, before the balances move. The call back is
/// made once per arming; whether it succeeded and what it reverted with are recorded (the outer transfer goes on).
contract ReentrantToken is TestToken {
    enum Action {
        None,
        Fund,
        Execute,
        Refund
    }

    address public target;
    Action public action;
    bytes32 public escrowId;

    uint256 public attempts;
    bool public lastSucceeded;
    bytes public lastRevertData;

    constructor(string memory name_, string memory symbol_, uint8 decimals_) TestToken(name_, symbol_, decimals_) {}

    /// Calls `action` on `target` for `escrowId_` during the next transfer the target makes.
    function arm(address target_, Action action_, bytes32 escrowId_) external {
        target = target_;
        action = action_;
        escrowId = escrowId_;
    }

    function _update(address from, address to, uint256 value) internal override {
        if (action != Action.None && msg.sender == target) {
            Action current = action;
            action = Action.None;
            ++attempts;
            bytes memory data;
            if (current == Action.Fund) {
                data = abi.encodeWithSignature("fund(bytes32)", escrowId);
            } else if (current == Action.Execute) {
                data = abi.encodeWithSignature("execute(bytes32)", escrowId);
            } else {
                data = abi.encodeWithSignature("refund(bytes32)", escrowId);
            }
            (bool ok, bytes memory result) = target.call(data);
            lastSucceeded = ok;
            lastRevertData = ok ? bytes("") : result;
        }
        super._update(from, to, value);
    }
}
