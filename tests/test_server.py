"""serve's heap settling: startup's objects frozen, the youngest generation collected less
often, and garbage with cycles still collected."""

import gc
import weakref
from collections.abc import Iterator

import pytest

from gateway.server import GC_YOUNG_THRESHOLD, _settle_heap


@pytest.fixture
def restored_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def test_settling_freezes_startup_objects_and_raises_the_young_threshold(
    restored_gc: None,
) -> None:
    kept = _Node()  # alive at startup: it moves to the permanent generation
    _, middle, oldest = gc.get_threshold()
    _settle_heap()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, middle, oldest)
    assert not any(o is kept for o in gc.get_objects())  # no longer scanned


def test_cycles_made_after_settling_are_still_collected(restored_gc: None) -> None:
    _settle_heap()
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    gone = weakref.ref(a)
    del a, b
    for _ in range(3):  # threshold or not, a collection of every generation finds them
        gc.collect()
    assert gone() is None


def test_settling_again_collects_cycles_frozen_by_the_last_settling(restored_gc: None) -> None:
    # a reload replaces a config that was frozen at startup: its cycles must not live forever
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    gone = weakref.ref(a)
    _settle_heap()
    del a, b
    gc.collect()
    assert gone() is not None  # frozen: no collection sees it
    _settle_heap()
    assert gone() is None
