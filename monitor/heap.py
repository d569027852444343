"""The cyclic garbage collector, held off while a large structure is built, and through
a `monitor` process's start-up.

Building a config or a matcher for 50,000 entities makes about a million objects that
all live on. The collector runs each time enough new objects have piled up, and every
run that reaches the oldest generation walks everything built so far: most of a large
build's time (a 50,000-entity config loaded in 6.5 s with it, 2.3 s without). What these
builds make holds no reference cycle that must be freed before the build ends; any that
does is freed at the collector's next run after it.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[None]:
    """The collector off inside, back as it was after (so these nest)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


# A `monitor` process's start-up (cli.run: to "service ready", or to the config loaded
# for other commands) imports SQLAlchemy, pydantic, httpx and the models and builds the
# config and the service: some 85,000 objects the collector tracks, nearly all of which
# live as long as the process. Its runs among them (one reaching the oldest generation)
# freed next to nothing yet took a fifteenth of a poll with nothing new (docs/speed.md),
# so the process holds it off until start-up is over, then freezes what start-up made
# (the collector never walks it again) and lets it run. The few thousand objects that
# start-up left in unreachable cycles are kept, not freed: a run to free them costs what
# the pause saves.
_start_up = False  # whether start_up() paused the collector and started() has not yet run


def start_up() -> None:
    """The collector off from here (the top of a `monitor` process) until `started`."""
    global _start_up
    _start_up = gc.isenabled()
    gc.disable()


def started() -> None:
    """Start-up is over: what it made is frozen and the collector runs again. Nothing
    unless `start_up` paused it: an in-process caller of cli.main (the tests) keeps its
    collector, and its heap, as they were."""
    global _start_up
    if _start_up:
        _start_up = False
        gc.freeze()
        gc.enable()
