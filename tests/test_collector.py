"""The server process's garbage collector (operatorapi/collector.py): set once the application is built."""
import gc
import weakref

import pytest

from operatorapi import collector


@pytest.fixture
def restored_collector():
    thresholds, frozen = gc.get_threshold(), gc.get_freeze_count()
    yield
    gc.set_threshold(*thresholds)
    if not frozen:
        gc.unfreeze()


def test_the_application_tunes_the_collector_once_built(settings):
    from operatorapi.asgi import application  # noqa: F401  (what Daphne imports)

    assert gc.get_threshold() == (settings.GC_GEN0_THRESHOLD, *collector.OLDER_GENERATIONS)
    assert settings.GC_GEN0_THRESHOLD == 50_000  # the default
    assert gc.get_freeze_count() > 10_000  # the start-up heap (Django, the app, its libraries) is never rescanned


def test_zero_leaves_pythons_defaults(settings, restored_collector):
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    settings.GC_GEN0_THRESHOLD = 0
    collector.tune()
    assert gc.get_threshold() == (700, 10, 10)
    assert gc.get_freeze_count() == 0


def test_garbage_cycles_are_still_collected_without_asking(settings, restored_collector):
    """Only the threshold changes: past it the collector runs by itself and frees cycles."""
    settings.GC_GEN0_THRESHOLD = 1_000
    collector.tune()

    class Node:
        pass

    nodes = []
    for _ in range(5_000):  # cycles only the collector can free, past the threshold several times
        node = Node()
        node.self = node
        nodes.append(weakref.ref(node))
        del node
    assert sum(1 for ref in nodes if ref() is None) > 2_500
