"""Validate every server frame the tests see against docs/spec/asyncapi.yaml (the project's copy of the published
contract, docs/spec/README.md).

A frame must match one of the spec's SUB (server -> client) messages with the same ``event``; the error names
the frame and every schema it failed. Replies of the project's extensions (docs/protocol.md section 8), which the
spec does not define, are checked against docs/extensions.yaml instead.
"""
from functools import lru_cache
from pathlib import Path

import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC_PATH = Path(__file__).resolve().parents[1] / "docs" / "spec" / "asyncapi.yaml"
SPEC_URI = "urn:operator-api:asyncapi"
EXTENSIONS_PATH = Path(__file__).resolve().parents[1] / "docs" / "extensions.yaml"
EXTENSIONS_URI = "urn:operator-api:extensions"


@lru_cache(maxsize=1)
def _validators_by_event() -> dict[str, list[tuple[str, Draft202012Validator]]]:
    spec = yaml.safe_load(SPEC_PATH.read_text())
    registry = Registry().with_resource(SPEC_URI, Resource(contents=spec, specification=DRAFT202012))
    messages = spec["components"]["messages"]
    by_event: dict[str, list] = {}
    for ref in spec["channels"]["/"]["subscribe"]["message"]["oneOf"]:
        name = ref["$ref"].rsplit("/", 1)[1]
        payload_ref = messages[name]["payload"]["$ref"]
        payload = spec["components"]["schemas"][payload_ref.rsplit("/", 1)[1]]
        event = payload["properties"]["event"]["const"]
        validator = Draft202012Validator({"$ref": SPEC_URI + payload_ref}, registry=registry)
        by_event.setdefault(event, []).append((name, validator))
    extensions = yaml.safe_load(EXTENSIONS_PATH.read_text())
    registry = registry.with_resource(EXTENSIONS_URI, Resource(contents=extensions, specification=DRAFT202012))
    for event in extensions["events"]:
        assert event not in by_event, f"{event} is in the spec: it is no extension"
        validator = Draft202012Validator({"$ref": f"{EXTENSIONS_URI}#/events/{event}"}, registry=registry)
        by_event[event] = [(f"extension {event}", validator)]
    return by_event


def assert_server_frame(frame: dict) -> None:
    """Raise AssertionError unless ``frame`` is a valid server message of the spec."""
    assert isinstance(frame, dict), f"server frame is not an object: {frame!r}"
    candidates = _validators_by_event().get(frame.get("event"))
    assert candidates, f"server sent an event the spec does not define: {frame!r}"
    failures = []
    for name, validator in candidates:
        errors = list(validator.iter_errors(frame))
        if not errors:
            break
        failures.append(f"{name}: " + "; ".join(e.message for e in errors))
    else:
        raise AssertionError(f"server frame violates the spec: {frame!r}\n" + "\n".join(failures))
    # The spec allows additional fields; docs/extensions.yaml gives the shape of the ones this operator adds.
    data = frame.get("data") or {}
    if frame.get("event") == "stream_notification":
        for field in ("initiator_margin_zone", "follower_margin_zone"):
            assert field in data, f"stream_notification without {field}: {frame!r}"
            _assert_extension("marginZone", data[field], frame)
    if frame.get("event") == "settlement_notification":
        if data.get("escrow") is not None:
            _assert_extension("escrow", data["escrow"], frame)
        for line in data.get("ledger") or ():
            assert "shortfall" in line, f"settlement_notification ledger line without shortfall: {frame!r}"
            _assert_extension("decimal", line["shortfall"], frame)


def _assert_extension(definition: str, value, frame: dict) -> None:
    errors = [e.message for e in _extension_validator(definition).iter_errors(value)]
    assert not errors, f"{definition} violates docs/extensions.yaml in {frame!r}\n{errors}"


@lru_cache(maxsize=None)
def _extension_validator(definition: str) -> Draft202012Validator:
    extensions = yaml.safe_load(EXTENSIONS_PATH.read_text())
    registry = Registry().with_resource(EXTENSIONS_URI, Resource(contents=extensions, specification=DRAFT202012))
    return Draft202012Validator({"$ref": f"{EXTENSIONS_URI}#/$defs/{definition}"}, registry=registry)
