from __future__ import annotations

import gc

from monitor import heap
from monitor.heap import collector_paused


def test_the_collector_is_back_as_it_was_after_a_pause() -> None:
    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the inner pause leaves the outer one paused
    assert gc.isenabled()
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()  # off before, off after
    finally:
        gc.enable()


def test_start_up_holds_the_collector_off_until_started_then_freezes_what_it_made() -> None:
    assert gc.isenabled()
    before = gc.get_freeze_count()
    heap.started()  # no start-up paused it (cli.main called in-process): nothing
    assert gc.isenabled() and gc.get_freeze_count() == before
    heap.start_up()
    try:
        assert not gc.isenabled()
        made = [[n] for n in range(1000)]
        heap.started()
        assert gc.isenabled()
        assert gc.get_freeze_count() >= before + len(made)
        gc.disable()
        heap.started()  # once: a second call leaves the collector as it finds it
        assert not gc.isenabled()
    finally:
        gc.unfreeze()
        gc.enable()
