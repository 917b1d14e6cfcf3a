"""Named places where a test may make the payment worker die on the spot, as a crash or SIGKILL would.

``FAILPOINTS`` (environment, comma-separated names, empty in production) lists the armed ones; reaching an armed
one ends the process at once with ``os._exit`` (no cleanup, no lease release), so the end-to-end tests can kill a
worker exactly between "transaction sent" and "receipt recorded" and check that a restarted one repeats nothing.
"""
import logging
import os

from django.conf import settings

logger = logging.getLogger(__name__)
EXIT_CODE = 137  # what a SIGKILLed process reports


def reached(name: str) -> None:
    if name in settings.FAILPOINTS:
        logger.warning("failpoint %s reached: exiting now", name)
        logging.shutdown()
        os._exit(EXIT_CODE)
