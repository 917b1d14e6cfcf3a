"""Loaded by pytest before anything else (pyproject: ``-p tests.dev_keys``): the suite runs as development.

pytest-django imports the settings while pytest loads its first plugins, before any conftest.py, so the switch
must be in the environment by then. ``OPERATOR_DEV_KEYS=true`` lets the test process and every server or command
it starts (they inherit os.environ) generate missing keys into their VAR_DIR; tests/test_production_keys.py
unsets it for the production case.
"""
import os

os.environ.setdefault("OPERATOR_DEV_KEYS", "true")
# The back office's second factor is off for the suite (and the servers and commands it starts): the admin tests
# sign in with force_login. tests/test_backoffice_security.py turns it on where it proves it.
os.environ.setdefault("BACKOFFICE_2FA", "off")
