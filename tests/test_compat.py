"""Library shims (operatorapi/compat) refuse a release line they were not written for, at start-up."""
import pytest
from django.core.exceptions import ImproperlyConfigured

from operatorapi import compat


def test_a_shim_accepts_its_release_line_and_refuses_another():
    import django

    assert compat.require("Django", "5.2") == django.__version__
    with pytest.raises(ImproperlyConfigured, match="Django .* written for 5.1.x"):
        compat.require("Django", "5.1")
    with pytest.raises(ImproperlyConfigured):
        compat.require("Django", "5.21")  # matched at a dot boundary: 5.2.19 is not of line 5.21


def test_autobahn_formats_its_connection_debug_line_only_when_it_is_written():
    import pprint

    from autobahn.websocket import protocol

    from operatorapi.compat import autobahn_debug

    autobahn_debug.install()
    options = [("openHandshakeTimeout", 5, "Factory"), ("autoPingInterval", 0, "Factory")]
    line = protocol.pformat(options)  # what _connectionMade hands log.debug
    assert not isinstance(line, str)  # nothing formatted yet
    assert "\n{attrs}".format(attrs=line) == "\n" + pprint.pformat(options)  # the same text, if it is written
    assert str(protocol.Timings()) == "{}"  # the module's other uses still get a string
    assert protocol.pformat({"a": 1}) == "{'a': 1}"


def test_every_shim_is_checked_when_django_starts():
    import sys

    for name in compat.SHIMS:
        assert name in sys.modules, f"{name} was not imported (so not checked) at start-up"
