// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";

/// @title SettlementEscrow: delivery versus payment of a channel's settlement in ERC-20 tokens.
/// @notice The operator opens an escrow of legs (token, from, to, amount). Each debtor (`from`) pays its legs in with
/// `fund` (after approving this contract). Once every leg is funded anyone may `execute`, which pays every leg to its
/// `to`, all at once. If the legs are not all funded by the deadline, anyone may `refund`, which returns each funded
/// leg to its `from`. The operator can open escrows and nothing else: it never holds, takes or redirects tokens.
/// See docs/escrow.md of Operator API.
contract SettlementEscrow is ReentrancyGuard {
    using SafeERC20 for IERC20;

    struct Leg {
        address token;
        address from;
        address to;
        uint256 amount; // in token units
    }

    enum Status {
        None,
        Open,
        Executed,
        Refunded
    }

    struct Escrow {
        Status status;
        uint64 deadline;
        uint8 fundedCount;
        uint16 fundedMask; // bit i: leg i funded
        bytes32 channelId;
        Leg[] legs;
    }

    uint256 internal constant MAX_LEGS = 16;

    address private immutable _operator;

    mapping(bytes32 escrowId => Escrow) private _escrows;

    event Opened(bytes32 indexed escrowId, bytes32 indexed channelId, uint256 settlementId, uint64 deadline);
    event Funded(bytes32 indexed escrowId, address indexed payer);
    event Executed(bytes32 indexed escrowId);
    event Refunded(bytes32 indexed escrowId);

    /// The operator must not be the zero address.
    error ZeroOperator();
    /// Only the operator may open an escrow.
    error NotOperator(address caller);
    /// An escrow id opens once (whatever became of it).
    error AlreadyOpened(bytes32 escrowId);
    /// An escrow has 1 to MAX_LEGS legs.
    error BadLegCount(uint256 count);
    /// A leg's token, from and to must not be the zero address.
    error ZeroAddress(uint256 leg);
    /// A leg's token must be a contract.
    error TokenNotAContract(uint256 leg, address token);
    /// A leg's amount must be more than zero.
    error ZeroAmount(uint256 leg);
    /// A leg must not pay an account to itself.
    error SelfTransfer(uint256 leg);
    /// The deadline must be later than the current block's time.
    error DeadlineNotInFuture(uint64 deadline, uint256 blockTime);
    /// The escrow is not Open (never opened, executed or refunded).
    error NotOpen(bytes32 escrowId, Status status);
    /// Funding is possible only while block.timestamp <= deadline.
    error DeadlinePassed(uint64 deadline, uint256 blockTime);
    /// The caller has no unfunded leg in this escrow.
    error NothingToFund(bytes32 escrowId, address payer);
    /// The token delivered less than the leg's amount (fee-on-transfer or similar tokens are refused).
    error ShortDelivery(uint256 leg, address token, uint256 expected, uint256 received);
    /// Execute needs every leg funded.
    error NotFullyFunded(bytes32 escrowId, uint256 fundedCount, uint256 legCount);
    /// Refund is possible only once block.timestamp > deadline.
    error DeadlineNotPassed(uint64 deadline, uint256 blockTime);
    /// A fully funded escrow is never refunded: it can only be executed.
    error FullyFunded(bytes32 escrowId);

    constructor(address operator_) {
        if (operator_ == address(0)) revert ZeroOperator();
        _operator = operator_;
    }

    /// @notice The only account that may `open` an escrow.
    function operator() external view returns (address) {
        return _operator;
    }

    /// @notice The escrow id of a settlement: keccak256(abi.encode(channelId, settlementId)).
    function escrowIdOf(bytes32 channelId, uint256 settlementId) public pure returns (bytes32) {
        return keccak256(abi.encode(channelId, settlementId));
    }

    /// @notice Opens the escrow of settlement `settlementId` of channel `channelId` (operator only).
    function open(bytes32 channelId, uint256 settlementId, Leg[] calldata legs, uint64 deadline)
        external
        nonReentrant
    {
        if (msg.sender != _operator) revert NotOperator(msg.sender);
        bytes32 escrowId = escrowIdOf(channelId, settlementId);
        Escrow storage escrow = _escrows[escrowId];
        if (escrow.status != Status.None) revert AlreadyOpened(escrowId);
        if (legs.length == 0 || legs.length > MAX_LEGS) revert BadLegCount(legs.length);
        if (deadline <= block.timestamp) revert DeadlineNotInFuture(deadline, block.timestamp);
        for (uint256 i = 0; i < legs.length; ++i) {
            Leg calldata leg = legs[i];
            if (leg.token == address(0) || leg.from == address(0) || leg.to == address(0)) revert ZeroAddress(i);
            if (leg.token.code.length == 0) revert TokenNotAContract(i, leg.token);
            if (leg.amount == 0) revert ZeroAmount(i);
            if (leg.from == leg.to) revert SelfTransfer(i);
        }

        escrow.status = Status.Open;
        escrow.deadline = deadline;
        escrow.channelId = channelId;
        for (uint256 i = 0; i < legs.length; ++i) {
            escrow.legs.push(legs[i]);
        }
        emit Opened(escrowId, channelId, settlementId, deadline);
    }

    /// @notice Pays in every unfunded leg of the escrow whose `from` is the caller (approve this contract first).
    function fund(bytes32 escrowId) external nonReentrant {
        Escrow storage escrow = _escrows[escrowId];
        if (escrow.status != Status.Open) revert NotOpen(escrowId, escrow.status);
        if (block.timestamp > escrow.deadline) revert DeadlinePassed(escrow.deadline, block.timestamp);

        uint256 legCount = escrow.legs.length;
        uint16 mask = escrow.fundedMask;
        uint16 paying;
        uint8 count = escrow.fundedCount;
        for (uint256 i = 0; i < legCount; ++i) {
            if (mask & _bit(i) == 0 && escrow.legs[i].from == msg.sender) {
                paying |= _bit(i);
                ++count;
            }
        }
        if (paying == 0) revert NothingToFund(escrowId, msg.sender);

        escrow.fundedMask = mask | paying;
        escrow.fundedCount = count;
        emit Funded(escrowId, msg.sender);

        for (uint256 i = 0; i < legCount; ++i) {
            if (paying & _bit(i) != 0) {
                Leg storage leg = escrow.legs[i];
                IERC20 token = IERC20(leg.token);
                uint256 amount = leg.amount;
                uint256 before = token.balanceOf(address(this));
                token.safeTransferFrom(msg.sender, address(this), amount);
                uint256 after_ = token.balanceOf(address(this));
                if (after_ < before || after_ - before < amount) {
                    revert ShortDelivery(i, address(token), amount, after_ < before ? 0 : after_ - before);
                }
            }
        }
    }

    /// @notice Once every leg is funded (at any time, even after the deadline), pays every leg to its `to`.
    function execute(bytes32 escrowId) external nonReentrant {
        Escrow storage escrow = _escrows[escrowId];
        if (escrow.status != Status.Open) revert NotOpen(escrowId, escrow.status);
        uint256 legCount = escrow.legs.length;
        if (escrow.fundedCount != legCount) revert NotFullyFunded(escrowId, escrow.fundedCount, legCount);

        escrow.status = Status.Executed;
        emit Executed(escrowId);

        for (uint256 i = 0; i < legCount; ++i) {
            Leg storage leg = escrow.legs[i];
            IERC20(leg.token).safeTransfer(leg.to, leg.amount);
        }
    }

    /// @notice After the deadline, when not every leg was funded, returns each funded leg to its `from`.
    function refund(bytes32 escrowId) external nonReentrant {
        Escrow storage escrow = _escrows[escrowId];
        if (escrow.status != Status.Open) revert NotOpen(escrowId, escrow.status);
        if (block.timestamp <= escrow.deadline) revert DeadlineNotPassed(escrow.deadline, block.timestamp);
        uint256 legCount = escrow.legs.length;
        if (escrow.fundedCount == legCount) revert FullyFunded(escrowId);

        escrow.status = Status.Refunded;
        emit Refunded(escrowId);

        uint16 mask = escrow.fundedMask;
        for (uint256 i = 0; i < legCount; ++i) {
            if (mask & _bit(i) != 0) {
                Leg storage leg = escrow.legs[i];
                IERC20(leg.token).safeTransfer(leg.from, leg.amount);
            }
        }
    }

    function _bit(uint256 leg) private pure returns (uint16) {
        return uint16(1 << leg); // leg < MAX_LEGS = 16
    }

    /// @notice The escrow's state (all zero for an escrow never opened).
    function getEscrow(bytes32 escrowId)
        external
        view
        nonReentrantView
        returns (Status status, bytes32 channelId, uint64 deadline, uint256 legCount, uint256 fundedCount)
    {
        Escrow storage escrow = _escrows[escrowId];
        return (escrow.status, escrow.channelId, escrow.deadline, escrow.legs.length, escrow.fundedCount);
    }

    /// @notice The escrow's legs, in the order `open` received them, and which of them are funded.
    function getLegs(bytes32 escrowId)
        external
        view
        nonReentrantView
        returns (Leg[] memory legs, bool[] memory funded)
    {
        Escrow storage escrow = _escrows[escrowId];
        legs = escrow.legs;
        funded = new bool[](legs.length);
        for (uint256 i = 0; i < legs.length; ++i) {
            funded[i] = escrow.fundedMask & _bit(i) != 0;
        }
    }
}
