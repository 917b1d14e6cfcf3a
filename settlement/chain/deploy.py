"""Deploying the compiled contracts (``settlement.chain.artifacts``) with a locally held key, on any EVM chain.

Used by ``manage.py deploy_escrow`` (production) and ``settlement.chain.devchain`` (the development chain, tests).
Transactions are signed here with the given ``eth_account`` account and sent raw, so it works against any node
(none of them has to hold the key); each one is waited for, and a reverted one is an error.
"""
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.exceptions import ContractLogicError, TimeExhausted, Web3Exception

from settlement.chain.artifacts import artifact


class ChainError(Exception):
    """The chain could not be reached, or a transaction was refused, reverted or not mined in time."""


def connect(rpc_url: str, *, timeout: float = 10) -> Web3:
    """A Web3 on ``rpc_url`` (http, https, ws or wss) that has answered ``eth_chainId``; ChainError otherwise."""
    cache = {"cache_allowed_requests": True, "cacheable_requests": {"eth_chainId"}}  # asked before every call
    if rpc_url.startswith(("ws://", "wss://")):
        provider = Web3.LegacyWebSocketProvider(rpc_url, websocket_timeout=timeout, **cache)
    elif rpc_url.startswith(("http://", "https://")):
        provider = Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": timeout}, **cache)
    else:
        raise ChainError(f"{rpc_url!r} is not a JSON-RPC URL (http, https, ws or wss)")
    w3 = Web3(provider)
    try:
        w3.eth.chain_id
    except Exception as exc:  # noqa: BLE001 - whatever the transport raises, the node is unreachable
        raise ChainError(f"the chain at {rpc_url} does not answer: {exc}") from None
    return w3


def send(w3: Web3, account: LocalAccount, transaction: dict, *, timeout: float = 120) -> dict:
    """Fill in (chain id, nonce, gas, fees), sign with ``account``, send, and wait for the receipt.

    ``transaction`` is what a contract function's or constructor's ``build_transaction`` takes; it is filled in by
    web3 (gas estimated, so a transaction that would revert is refused before it is sent). Returns the receipt.
    """
    try:
        filled = {"from": account.address, "nonce": w3.eth.get_transaction_count(account.address, "pending"),
                  "chainId": w3.eth.chain_id, **transaction}
        signed = account.sign_transaction(filled)
        tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
    except ContractLogicError as exc:
        raise ChainError(f"the transaction would revert: {exc}") from None
    except (Web3Exception, ValueError, OSError) as exc:  # the node's error (insufficient funds, ...), or the network
        raise ChainError(f"the node refused the transaction: {exc}") from None
    try:
        receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=timeout, poll_latency=0.05)
    except TimeExhausted:
        raise ChainError(f"transaction {tx_hash.to_0x_hex()} not mined within {timeout:g} s") from None
    except (Web3Exception, ValueError, OSError) as exc:
        raise ChainError(f"waiting for transaction {tx_hash.to_0x_hex()}: {exc}") from None
    if receipt["status"] != 1:
        raise ChainError(f"transaction {tx_hash.to_0x_hex()} reverted (block {receipt['blockNumber']})")
    return receipt


def deploy(w3: Web3, account: LocalAccount, name: str, *args, timeout: float = 120) -> tuple[str, dict]:
    """Deploy the artifact ``name`` with constructor ``args`` from ``account``: (checksummed address, receipt)."""
    compiled = artifact(name)
    factory = w3.eth.contract(abi=compiled.abi, bytecode=compiled.bytecode)
    try:
        transaction = factory.constructor(*args).build_transaction(
            {"from": account.address, "nonce": w3.eth.get_transaction_count(account.address, "pending")})
    except ContractLogicError as exc:
        raise ChainError(f"deploying {name} would revert: {exc}") from None
    except (Web3Exception, ValueError, OSError) as exc:  # insufficient funds, or the network
        raise ChainError(f"the node refused to deploy {name}: {exc}") from None
    receipt = send(w3, account, transaction, timeout=timeout)
    address = receipt["contractAddress"]
    if not address or not w3.eth.get_code(address):
        raise ChainError(f"deploying {name}: no code at {address} after transaction "
                         f"{receipt['transactionHash'].to_0x_hex()}")
    return Web3.to_checksum_address(address), receipt


def contract(w3: Web3, name: str, address: str):
    """The deployed contract ``name`` at ``address``, with its artifact's ABI."""
    return w3.eth.contract(address=Web3.to_checksum_address(address), abi=artifact(name).abi)
