"""Chunks a worker refused, handed to a worker that has not refused them.

Workers differ while a deploy rolls through them: one may lack the job's function
(older or newer code) or not allow its module. Its refusal, a fatal result of a kind
in :data:`~distloop.tasks.kernel.REFUSALS` that names its host, is not the job's
failure while another live worker may run the chunk: the chunk goes again, straight
to that worker's own queue. The job fails only once every live worker has refused
the chunk, with one error that names each host and its reason.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable
from typing import Any

from distloop.tasks.kernel import REFUSALS, ChunkResult, ChunkSpec


def is_refusal(result: ChunkResult) -> bool:
    """Whether ``result`` is a worker saying it cannot run the chunk (not the chunk failing)."""
    return bool(result.fatal and result.fatal.get("kind") in REFUSALS and result.host)


class Refusals:
    """For one job: its chunks in flight, which hosts refused which, and where each goes next."""

    def __init__(self, target: str) -> None:
        self.target = target
        # Sent and unanswered, to send again: bounded by the dispatcher's window.
        self._specs: dict[int, ChunkSpec] = {}
        self._refused: dict[int, dict[str, dict[str, Any]]] = {}  # index -> host -> its fatal result
        self._handed: Counter[str] = Counter()  # chunks handed to each host, to spread them
        # Every chunk of a job names the same function: a host that ran one can run the
        # others, and one that refused one likely refuses them. Hand-overs go to the
        # former first, to the latter last (a refusal may have been passing).
        self._refusers: set[str] = set()
        self._served: set[str] = set()
        #: Refusals read from the ledger and not yet handed over (kept if Redis was away).
        self.backlog: list[ChunkResult] = []

    @property
    def hosts(self) -> set[str]:
        """Hosts whose own queue may hold chunks of this job."""
        return set(self._handed)

    def sent(self, chunks: Iterable[ChunkSpec]) -> None:
        """``chunks`` are in flight."""
        self._specs.update((c.index, c) for c in chunks)

    def sort(self, results: Iterable[ChunkResult]) -> list[ChunkResult]:
        """The results the dispatcher gets; refusals wait in :attr:`backlog` for :meth:`hand_over`."""
        answers = []
        for result in results:
            if is_refusal(result):
                self.backlog.append(result)
            else:
                self._specs.pop(result.index, None)
                self._refused.pop(result.index, None)
                if result.host and not result.fatal:
                    self._served.add(result.host)
                answers.append(result)
        return answers

    def hand_over(self, live: Collection[str]) -> tuple[list[ChunkResult], dict[str | None, list[ChunkSpec]]]:
        """Where each refused chunk in the backlog goes, given the live workers' hostnames.

        Returns the results for the dispatcher (one fatal result per chunk every live
        worker refused), and the chunks to send again by hostname; None stands for the
        shared queue, used when no worker is alive to choose (the watchdog decides
        how long that may last).
        """
        failed: list[ChunkResult] = []
        resend: dict[str | None, list[ChunkSpec]] = {}
        backlog, self.backlog = self.backlog, []
        for result in backlog:
            spec = self._specs.get(result.index)
            if spec is None:
                continue  # another delivery of the chunk answered already
            refused = self._refused.setdefault(result.index, {})
            refused[result.host] = dict(result.fatal or {})
            self._refusers.add(result.host)
            willing = sorted(set(live) - set(refused))
            if willing:
                chosen = min(willing, key=lambda h: (h in self._refusers, h not in self._served, self._handed[h]))
                self._handed[chosen] += 1
                resend.setdefault(chosen, []).append(spec)
            elif not live:
                resend.setdefault(None, []).append(spec)
            else:
                failed.append(self._verdict(result.index))
        return failed, resend

    def _verdict(self, index: int) -> ChunkResult:
        """The fatal result for chunk ``index``, which no live worker can run: each host and its reason."""
        self._specs.pop(index, None)
        refused = self._refused.pop(index)
        reasons = "; ".join(f"{host}: {fatal.get('message', '')}" for host, fatal in sorted(refused.items()))
        kinds = {fatal.get("kind") for fatal in refused.values()}
        kind = "not_allowed" if kinds == {"not_allowed"} else "target"
        message = f"no live worker can run {self.target}: {reasons}"
        return ChunkResult(index=index, fatal={"kind": kind, "message": message})
