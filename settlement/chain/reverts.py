"""Reverts as people read them: a custom error of the compiled contracts decoded to ``Name(arg, ...)``."""
import functools

from eth_abi import decode
from web3 import Web3
from web3.exceptions import ContractCustomError, ContractLogicError

from settlement.chain.artifacts import NAMES, abi


@functools.cache
def _errors() -> dict[str, tuple[str, list[str]]]:
    """0x selector -> (error name, input types), over every compiled contract (OpenZeppelin's errors included)."""
    found = {}
    for name in NAMES:
        for entry in abi(name):
            if entry["type"] == "error":
                types = [i["type"] for i in entry["inputs"]]
                found[Web3.keccak(text=f"{entry['name']}({','.join(types)})")[:4].to_0x_hex()] = (entry["name"], types)
    return found


def decode_error(data: str | bytes) -> str | None:
    """``BadLegCount(17)`` for revert data of a known custom error (hex string or bytes), else None."""
    data = data if isinstance(data, str) else "0x" + bytes(data).hex()
    known = _errors().get(data[:10].lower())
    if known is None:
        return None
    name, types = known
    try:
        values = decode(types, bytes.fromhex(data[10:]))
    except Exception:  # noqa: BLE001 - malformed arguments: the name alone still says why
        return name
    return f"{name}({', '.join(str(v.hex() if isinstance(v, bytes) else v) for v in values)})"


def describe(exc: ContractLogicError) -> str:
    """``BadLegCount(17)`` for a custom error; the node's message for a revert string or a panic."""
    if isinstance(exc, ContractCustomError) and isinstance(exc.data, str):
        decoded = decode_error(exc.data)
        if decoded:
            return decoded
    return str(exc.message if getattr(exc, "message", None) else exc)
