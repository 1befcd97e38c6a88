"""A Pool's or Executor's ``initializer``: run once in each worker process, before its first call.

As in ``multiprocessing.Pool(initializer=f, initargs=...)`` and
``ProcessPoolExecutor(initializer=...)``. The initializer travels by name in every
chunk the pool sends (``{"target": "module:function", "args": [...], "pool": id}``),
is resolved against the allow-list like a loop's function, and runs the first time
this process meets a chunk of that pool. A process started later (the worker's
``--max-tasks-per-child``, a replaced crashed process) runs it again, as a new
process of a ``multiprocessing.Pool`` would.
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Sequence
from typing import Any

from distloop.tasks.core import codec
from distloop.tasks.targets import resolve

_ran: set[str] = set()  # pool ids whose initializer ran in this process
_lock = threading.Lock()  # the thread backend runs chunks of one pool side by side


def initialize(init: dict[str, Any] | None, allow: Sequence[str] | None) -> dict[str, Any] | None:
    """Run ``init``'s initializer unless this process already did; a fatal result if it raised.

    A name refused by the allow-list or not importable raises
    :class:`~distloop.tasks.core.errors.TargetError` (the chunk is a refusal, another
    worker may run it); an initializer that raises fails the chunk, and runs again
    with the process's next chunk of that pool.
    """
    if init is None or init["pool"] in _ran:
        return None
    with _lock:
        if init["pool"] in _ran:
            return None
        fn = resolve(init["target"], allow)
        try:
            fn(*codec.decode(init["args"]))
        except Exception as exc:
            return {
                "kind": "initializer",
                "type": type(exc).__name__,
                "message": f"the initializer {init['target']} raised {type(exc).__name__}: {exc}",
                "traceback": "".join(traceback.format_exception(exc)),
            }
        _ran.add(init["pool"])
    return None
