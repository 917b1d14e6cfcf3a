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


def test_every_shim_is_checked_when_django_starts():
    import sys

    for name in compat.SHIMS:
        assert name in sys.modules, f"{name} was not imported (so not checked) at start-up"
