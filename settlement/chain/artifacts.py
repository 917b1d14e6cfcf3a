"""The committed build of ``contracts/`` (``scripts/build-contracts``): one JSON file per contract.

    artifact("SettlementEscrow").abi / .bytecode

Each file holds the ABI, the creation and runtime bytecode, the solc version and settings, and the sha256 of the
source inputs it was compiled from; tests/test_contract_artifacts.py fails when the sources and these differ.
"""
import functools
import json
from dataclasses import dataclass
from pathlib import Path

ARTIFACTS_DIR = Path(__file__).resolve().parent / "artifacts"
NAMES = ("SettlementEscrow", "TestToken", "ReentrantToken", "FeeToken")


@dataclass(frozen=True)
class Artifact:
    name: str
    abi: list
    bytecode: str  # 0x-prefixed creation code (constructor arguments are appended to it)
    deployed_bytecode: str  # 0x-prefixed runtime code, what eth_getCode returns once deployed
    compiler_version: str
    sources_sha256: str


@functools.cache
def artifact(name: str) -> Artifact:
    """The named contract's artifact, read once. ``KeyError`` for a name that is not built."""
    if name not in NAMES:
        raise KeyError(f"no contract artifact {name!r} (there are: {', '.join(NAMES)})")
    data = json.loads((ARTIFACTS_DIR / f"{name}.json").read_text())
    return Artifact(
        name=data["contractName"],
        abi=data["abi"],
        bytecode=data["bytecode"],
        deployed_bytecode=data["deployedBytecode"],
        compiler_version=data["compiler"]["version"],
        sources_sha256=data["sourcesSha256"],
    )


def abi(name: str) -> list:
    return artifact(name).abi


def bytecode(name: str) -> str:
    return artifact(name).bytecode
