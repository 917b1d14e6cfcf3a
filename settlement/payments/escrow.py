"""The ``escrow`` method: delivery versus payment through ``SettlementEscrow`` on an EVM chain (docs/escrow.md).

Every step reads the chain first and adopts what it finds, so a worker killed anywhere repeats nothing:

- ``open``: the legs from the ledger (units from each token's ``decimals()``, rounded half-up, dust dropped); if
  ``getEscrow`` says it is open already, adopt it; else sign ``open`` locally, record its hash and raw bytes
  (committed), send, and come back for the receipt later. A raw transaction recorded but never seen by the node is
  sent again as it is (same nonce: it can be mined once at most), unless its nonce went to another transaction
  meanwhile: then it can never be mined, so it is forgotten (its hash too) and the step signed again. A recorded
  transaction is forgotten too once the chain shows its step done. The contract refusing ``execute`` or ``refund``
  at send time is not final (anyone may do them first; a token may refuse for now): retried, the settlement stays.
- ``funding``: the legs' funded flags and ``Funded`` events as of ``ESCROW_CONFIRMATIONS`` blocks ago; every leg
  funded, or the deadline passed on chain time.
- ``refund`` / ``execute``: like ``open``, after ``getEscrow`` shows it is not done already.
- ``confirm``: ``Executed`` is ``ESCROW_CONFIRMATIONS`` blocks deep.

No call here runs inside a database transaction; ``record`` commits what brokers must see before any waiting.
"""
import functools
import logging
import time
from decimal import ROUND_HALF_UP, Decimal

from django.conf import settings
from eth_abi import encode
from eth_utils import keccak, to_checksum_address
from web3.exceptions import ContractLogicError, TransactionNotFound

from channels_app.errors import Code, DomainError
from channels_app.identity import operator_keys
from channels_app.money import MONEY
from settlement import failpoints
from settlement.chain import reverts
from settlement.chain.deploy import ChainError, connect, contract
from settlement.ledger import quote_asset
from settlement.payments.base import Funding, PaymentBackend, PaymentError

logger = logging.getLogger(__name__)
NONE, OPEN, EXECUTED, REFUNDED = range(4)  # SettlementEscrow.Status


def escrow_id_of(channel_id: str, settlement_id: int) -> str:
    """keccak256(abi.encode(bytes32 channelId, uint256 settlementId)), as the contract's ``escrowIdOf``."""
    return "0x" + keccak(encode(["bytes32", "uint256"], [bytes.fromhex(channel_id[2:]), settlement_id])).hex()


def to_units(amount: Decimal, decimals: int) -> int:
    """A ledger amount in token units, rounded half-up (docs/escrow.md section 2)."""
    return int(MONEY.multiply(amount, Decimal(10) ** decimals).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def parse_tokens(text: str) -> dict[str, str]:
    """``USD=0x…,USDT=0x…`` -> {asset: checksummed address}."""
    tokens = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        asset, _, address = item.partition("=")
        tokens[asset.strip()] = to_checksum_address(address.strip())
    return tokens


@functools.cache
def _connection(rpc_url: str, contract_address: str, timeout: float):
    """(Web3, the SettlementEscrow contract) for one configuration, made once per process."""
    w3 = connect(rpc_url, timeout=timeout)
    if hasattr(w3.provider, "exception_retry_configuration"):
        # No hidden retries (web3's HTTP default: 5 tries with back-off, so one call to a hung node takes
        # 5 x ESCROW_RPC_TIMEOUT_SECONDS + 1.9 s, longer than the worker's lease): the worker retries, and logs why.
        w3.provider.exception_retry_configuration = None
    return w3, contract(w3, "SettlementEscrow", contract_address)


class EscrowBackend(PaymentBackend):
    """Reads its configuration (ESCROW_*) when it acts, so one instance serves whatever is configured now."""

    name = "escrow"

    def __init__(self):
        self._decimals: dict[str, int] = {}  # token address -> decimals(): they never change
        self._verified: dict[tuple[str, str], int] = {}  # (rpc url, contract) -> chain id, once verify() passed
        self._last_error = ""

    # --- connection and the start-up check ------------------------------------------------------------------
    @property
    def rpc_url(self) -> str:
        return settings.ESCROW_RPC_URL

    @property
    def tokens(self) -> dict[str, str]:
        return parse_tokens(settings.ESCROW_TOKENS)

    @property
    def confirmations(self) -> int:
        return settings.ESCROW_CONFIRMATIONS

    @property
    def w3(self):
        return _connection(self.rpc_url, settings.ESCROW_CONTRACT, settings.ESCROW_RPC_TIMEOUT_SECONDS)[0]

    @property
    def escrow(self):
        return _connection(self.rpc_url, settings.ESCROW_CONTRACT, settings.ESCROW_RPC_TIMEOUT_SECONDS)[1]

    @property
    def account(self):
        return operator_keys().account

    def verify(self) -> int:
        """The start-up check: the chain answers, the contract is there and its ``operator()`` is this operator's
        identity. Returns the chain id; raises ChainError with a sentence that says what is wrong."""
        if not (self.rpc_url and settings.ESCROW_CONTRACT):
            raise ChainError("escrow is not configured (ESCROW_RPC_URL and ESCROW_CONTRACT)")
        if not self.w3.eth.get_code(to_checksum_address(settings.ESCROW_CONTRACT)):
            raise ChainError(f"no contract at ESCROW_CONTRACT {settings.ESCROW_CONTRACT}")
        operator = self.escrow.functions.operator().call()
        if operator != self.account.address:
            raise ChainError(f"the escrow at {settings.ESCROW_CONTRACT} belongs to operator {operator}, not to this "
                             f"operator's identity {self.account.address} (OPERATOR_PRIVATE_KEY)")
        chain_id = self._verified[self.rpc_url, settings.ESCROW_CONTRACT] = self.w3.eth.chain_id
        return chain_id

    def ensure_verified(self) -> bool:
        """verify() once per configuration, in the background (operatorapi.worker): never inside a request. A
        failure is logged once per distinct reason and tried again on the next call."""
        if not (self.rpc_url and settings.ESCROW_CONTRACT):
            return False
        if (self.rpc_url, settings.ESCROW_CONTRACT) in self._verified:
            return True
        try:
            self.verify()
        except Exception as exc:  # noqa: BLE001 - whatever the transport raises: try again later
            reason = f"{type(exc).__name__}: {exc}"
            if reason != self._last_error:
                logger.error("escrow: the start-up check failed, escrow stays unavailable: %s", reason)
            self._last_error = reason
            return False
        self._last_error = ""
        return True

    def operator_chain_id(self) -> int:
        served = self._verified.get((self.rpc_url, settings.ESCROW_CONTRACT))
        if served is None:  # never a network call here either: check_available says why
            self.check_available(chain_id=0, markets=[])
        return served

    def check_available(self, *, chain_id: int, markets: list[str]) -> None:
        if not self.rpc_url or not settings.ESCROW_CONTRACT:
            raise DomainError(Code.PAYMENT_METHOD_UNAVAILABLE, "escrow is not available: no chain is configured on "
                              "this operator (use payment_method \"mock\" for testing)")
        served = self._verified.get((self.rpc_url, settings.ESCROW_CONTRACT))
        if served is None:  # never a network call here: verify() runs in the background (and at a worker's start)
            raise DomainError(Code.PAYMENT_METHOD_UNAVAILABLE, "escrow is not available yet: the chain at "
                              f"{self.rpc_url} has not been reached and checked"
                              + (f" ({self._last_error})" if self._last_error else ""))
        if chain_id != served:
            raise DomainError(Code.PAYMENT_METHOD_UNAVAILABLE, f"escrow is available on chain {served} only, "
                              f"not on chain {chain_id}")
        missing = sorted({quote_asset(m) for m in markets} - set(self.tokens))
        if missing:
            raise DomainError(Code.PAYMENT_METHOD_UNAVAILABLE, f"escrow has no token for {', '.join(missing)} on "
                              f"chain {chain_id}")

    # --- what the escrow is ---------------------------------------------------------------------------------
    def decimals(self, token: str) -> int:
        if token not in self._decimals:
            self._decimals[token] = contract(self.w3, "TestToken", token).functions.decimals().call()
        return self._decimals[token]

    def legs(self, settlement) -> list[dict]:
        """The escrow's legs from the ledger, in ledger order (docs/escrow.md section 2)."""
        channel = settlement.channel
        initiator, responder = channel.initiator.address, channel.responder.address
        legs = []
        for line in settlement.ledger:
            token = self.tokens[line["asset"]]
            decimals = self.decimals(token)
            for owed, debtor, creditor in ((line["initiator_owes"], initiator, responder),
                                           (line["responder_owes"], responder, initiator)):
                units = to_units(Decimal(owed), decimals)
                if units > 0:
                    legs.append({"asset": line["asset"], "token": token, "decimals": decimals, "from": debtor,
                                 "to": creditor, "amount": owed, "units": str(units), "funded": False})
        return legs

    def _confirmed_block(self) -> int:
        return max(self.w3.eth.block_number - self.confirmations, 0)

    def _status(self, escrow_id: str, block="latest"):
        return self.escrow.functions.getEscrow(escrow_id).call(block_identifier=block)

    # --- sending, idempotently ------------------------------------------------------------------------------
    def _sent(self, settlement, step: str, call, record) -> bool:
        """Make sure ``step``'s transaction is on chain: True once it is mined (successfully), False while it is
        pending. Signs and records it first if none was recorded; re-sends the recorded raw bytes if the node has
        never seen them. A transaction that reverts is an error (the caller read the chain first)."""
        pending = (settlement.payment_state or {}).get("pending", {})
        if pending.get("step") != step:
            try:
                transaction = call.build_transaction({
                    "from": self.account.address, "chainId": self.w3.eth.chain_id,
                    "nonce": self.w3.eth.get_transaction_count(self.account.address, "pending"),
                })
            except ContractLogicError as exc:
                if step == "open":  # read as not opened just now, and only the operator opens: final
                    raise PaymentError(f"the escrow contract refuses open: {reverts.describe(exc)}") from None
                # execute / refund: not final. The chain moved since the caller read it (anyone may execute or
                # refund: the next round reads that and adopts it), or a token refuses a transfer for now. Retried
                # and logged; failing here would unfreeze the positions of an escrow that was, or may be, paid out.
                raise ChainError(f"the escrow contract refuses {step} now: {reverts.describe(exc)}") from None
            signed = self.account.sign_transaction(transaction)
            pending = {"step": step, "hash": signed.hash.to_0x_hex(), "raw": signed.raw_transaction.to_0x_hex(),
                       "nonce": transaction["nonce"]}
            record(payment_state={"pending": pending}, transaction_seen={"step": step, "hash": pending["hash"]})
            settlement.payment_state = {"pending": pending}
        try:
            receipt = self.w3.eth.get_transaction_receipt(pending["hash"])
        except TransactionNotFound:
            receipt = None
        if receipt is None:
            try:
                self.w3.eth.get_transaction(pending["hash"])  # known to the node: mined later
            except TransactionNotFound:
                if "nonce" in pending and self.w3.eth.get_transaction_count(
                        self.account.address, "latest") > pending["nonce"]:
                    # its nonce went to another transaction (its sending failed, then another step was sent): it
                    # can never be mined. Forget it and sign the step again (the caller read the chain first).
                    self._forget(settlement, record)
                    return self._sent(settlement, step, call, record)
                self.w3.eth.send_raw_transaction(pending["raw"])  # recorded, never sent (or dropped): send as is
                failpoints.reached(f"after-send:{step}")
            return False
        if receipt["status"] != 1:
            record(payment_state={})
            raise ChainError(f"{step} transaction {pending['hash']} reverted in block {receipt['blockNumber']}")
        record(payment_state={})
        return True

    def _forget(self, settlement, record) -> None:
        """The recorded transaction is not awaited any more (the chain shows its step done, or it can never be
        mined); one the node has never seen also leaves the escrow's transactions: brokers see only real hashes."""
        pending = (settlement.payment_state or {}).get("pending")
        if not pending:
            return
        try:
            self.w3.eth.get_transaction(pending["hash"])
            record(payment_state={})
        except TransactionNotFound:
            transactions = [t for t in settlement.escrow["transactions"] if t["hash"] != pending["hash"]]
            record(escrow={**settlement.escrow, "transactions": transactions}, payment_state={}, announce=False)
        settlement.refresh_from_db(fields=["escrow", "payment_state"])

    # --- the steps ------------------------------------------------------------------------------------------
    def open(self, settlement, *, record) -> bool:
        legs = self.legs(settlement)
        if not legs:  # nothing to move: every state at once, no transaction
            record(escrow={"chain_id": settlement.chain_id, "legs": [], "transactions": []})
            return True
        escrow_id = escrow_id_of(settlement.channel.channel_id, settlement.pk)
        status = self._status(escrow_id)
        if status[0] == NONE:
            if settlement.escrow is None or "deadline" not in settlement.escrow:
                latest = self.w3.eth.get_block("latest")["timestamp"]
                deadline = max(int(time.time()), latest) + settings.ESCROW_FUNDING_SECONDS
                try:  # the contract's own checks first: an escrow it refuses is never recorded nor announced
                    self._open_call(settlement, legs, deadline).call({"from": self.account.address})
                except ContractLogicError as exc:
                    raise PaymentError(f"the escrow contract refuses open: {reverts.describe(exc)}") from None
                record(escrow={"chain_id": settlement.chain_id, "contract": self.escrow.address,
                               "escrow_id": escrow_id, "deadline": deadline, "legs": legs, "transactions": []},
                       announce=False)
                settlement.refresh_from_db(fields=["escrow", "payment_state"])
            call = self._open_call(settlement, legs, settlement.escrow["deadline"])
            if not self._sent(settlement, "open", call, record):
                return False
            status = self._status(escrow_id)
        elif settlement.escrow is None or "deadline" not in settlement.escrow:  # opened, but never recorded here
            record(escrow={"chain_id": settlement.chain_id, "contract": self.escrow.address, "escrow_id": escrow_id,
                           "deadline": status[2], "legs": legs, "transactions": []}, announce=False)
        else:  # opened by the transaction recorded here, whose receipt a worker killed meanwhile never saw
            self._forget(settlement, record)
        # it counts once it is ESCROW_CONFIRMATIONS deep
        return self._status(escrow_id, self._confirmed_block())[0] != NONE

    def _open_call(self, settlement, legs: list[dict], deadline: int):
        return self.escrow.functions.open(
            settlement.channel.channel_id, settlement.pk,
            [(leg["token"], leg["from"], leg["to"], int(leg["units"])) for leg in legs], deadline)

    def funding(self, settlement, *, record) -> Funding:
        escrow = settlement.escrow
        if not escrow["legs"]:
            return Funding.FUNDED
        block = self._confirmed_block()
        status, _, deadline, leg_count, funded_count = self._status(escrow["escrow_id"], block)
        _, funded = self.escrow.functions.getLegs(escrow["escrow_id"]).call(block_identifier=block)
        payments = self.escrow.events.Funded().get_logs(
            argument_filters={"escrowId": escrow["escrow_id"]}, from_block=0, to_block=block)
        for log in payments:  # each broker's payment, as it lands
            record(transaction_seen={"step": "fund", "hash": log["transactionHash"].to_0x_hex(),
                                     "from": log["args"]["payer"]}, announce=False)
        record(funded=list(funded))
        if status in (EXECUTED,) or funded_count == leg_count:
            return Funding.FUNDED
        if self.w3.eth.get_block(block)["timestamp"] > deadline:
            return Funding.EXPIRED
        return Funding.WAITING

    def refund(self, settlement, *, record) -> bool:
        escrow = settlement.escrow
        status, _, _, _, funded_count = self._status(escrow["escrow_id"])
        if status == REFUNDED or (status == OPEN and funded_count == 0):
            self._forget(settlement, record)
            return True  # nothing was paid in (or the refund is done): nothing to send
        if status == OPEN and not self._sent(settlement, "refund", self.escrow.functions.refund(escrow["escrow_id"]),
                                             record):
            return False
        return self._status(escrow["escrow_id"], self._confirmed_block())[0] == REFUNDED

    def execute(self, settlement, *, record) -> bool:
        escrow = settlement.escrow
        if not escrow["legs"]:
            return True
        status = self._status(escrow["escrow_id"])[0]
        if status == OPEN:
            if not self._sent(settlement, "execute", self.escrow.functions.execute(escrow["escrow_id"]), record):
                return False
        elif status == EXECUTED:
            self._forget(settlement, record)
            if not any(t["step"] == "execute" for t in settlement.escrow["transactions"]):
                logs = self.escrow.events.Executed().get_logs(argument_filters={"escrowId": escrow["escrow_id"]},
                                                               from_block=0)
                for log in logs:  # executed by someone else (anyone may): adopt it
                    record(transaction_seen={"step": "execute", "hash": log["transactionHash"].to_0x_hex()})
        else:
            raise PaymentError(f"the escrow is {status} on chain; it cannot be executed")
        return True

    def confirm(self, settlement, *, record) -> bool:
        escrow = settlement.escrow
        if not escrow["legs"]:
            return True
        return self._status(escrow["escrow_id"], self._confirmed_block())[0] == EXECUTED
