"""The committed contract artifacts (settlement/chain/artifacts/, what the server loads) are the build of the
committed sources: scripts/build-contracts recompiles contracts/ into a temporary directory (``npm ci`` first when
contracts/node_modules is missing) and every file must come out byte for byte the same. When this fails, run
scripts/build-contracts and commit the artifacts with the sources."""
import json
import subprocess
from pathlib import Path

from settlement.chain.artifacts import ARTIFACTS_DIR, NAMES, artifact

ROOT = Path(__file__).resolve().parents[1]


def test_the_committed_artifacts_are_the_build_of_the_committed_sources(tmp_path):
    result = subprocess.run([str(ROOT / "scripts" / "build-contracts"), str(tmp_path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    built = sorted(path.name for path in tmp_path.glob("*.json"))
    assert built == sorted(f"{name}.json" for name in NAMES)
    committed = sorted(path.name for path in ARTIFACTS_DIR.glob("*.json"))
    assert committed == built, "artifacts committed for contracts that are not built (or the other way round)"
    stale = [name for name in built if (tmp_path / name).read_bytes() != (ARTIFACTS_DIR / name).read_bytes()]
    assert not stale, f"{', '.join(stale)} differ from a fresh build: run scripts/build-contracts and commit them"


def test_the_artifacts_name_their_compiler_and_sources():
    versions = set()
    for name in NAMES:
        loaded = artifact(name)
        data = json.loads((ARTIFACTS_DIR / f"{name}.json").read_text())
        assert loaded.name == name and loaded.bytecode.startswith("0x60") and len(loaded.sources_sha256) == 64
        assert data["compiler"]["settings"]["optimizer"] == {"enabled": True, "runs": 200}
        versions.add(loaded.compiler_version)
    pinned = json.loads((ROOT / "contracts" / "package.json").read_text())["dependencies"]["solc"]
    assert [version.split("+")[0] for version in versions] == [pinned]
    pragma = f"pragma solidity {pinned};"
    for source in ("SettlementEscrow.sol", "test/TestToken.sol", "test/ReentrantToken.sol", "test/FeeToken.sol"):
        assert pragma in (ROOT / "contracts" / source).read_text(), f"{source}: pragma not pinned to solc {pinned}"
