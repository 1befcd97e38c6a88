"""Drop-in facades for code written against the standard library or joblib.

:mod:`.executor` (``concurrent.futures``), :mod:`.pool` (``multiprocessing.Pool``,
its results in :mod:`.pool_results`) and :mod:`.joblib_backend` all send explicit
calls through one engine, :mod:`.calls` (errors and naming in :mod:`.call_errors`).
"""
