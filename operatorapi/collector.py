"""The server process's garbage collector, set for a long-lived process that allocates a lot per request.

CPython collects its youngest generation every 700 container allocations. A batch of 100 trades allocates tens of
thousands (validated items, decimals, books, records), so the collector ran dozens of times a batch and, every tenth
and hundredth time, walked the older generations: the modules, settings and caches that a server holds for its
whole life. Measured on the bench (bench/RESULTS.md), that was a third of the Daphne process's CPU under batches.

``tune`` is called once the application is built (``operatorapi.asgi``): everything alive then is frozen (moved to
a generation the collector never scans again; it is not garbage, and is never freed), and the youngest generation
is collected every ``GC_GEN0_THRESHOLD`` allocations. Only cycles wait for the collector; everything else is freed
by reference counting at once, so the higher threshold bounds how much cyclic garbage waits, not how much memory
the process holds. ``GC_GEN0_THRESHOLD=0`` leaves Python's defaults (and freezes nothing).
"""
import gc

from django.conf import settings

OLDER_GENERATIONS = (20, 100)  # collections of the generation below that trigger one of the next


def tune() -> None:
    threshold = settings.GC_GEN0_THRESHOLD
    if not threshold:
        return
    gc.collect()  # what start-up left as garbage is freed, not frozen
    gc.freeze()
    gc.set_threshold(threshold, *OLDER_GENERATIONS)
