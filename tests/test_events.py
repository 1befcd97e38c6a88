"""Task and worker events give up on a broker that is gone (``distloop.tasks.events``).

Celery's worker heartbeat publishes with ``retry=True`` and no policy; once its
connection was lost, kombu retried the reconnection for ever under the event
dispatcher's lock, and the worker's shutdown, which sends ``worker-offline`` under
the same lock, hung with it (seen: an embedded worker outliving its killed owner and
its Redis, stuck in ``EventDispatcher.send``).
"""

from __future__ import annotations

import signal
import threading
import time

import pytest

from distloop.tasks.app import make_app
from distloop.tasks.core.settings import Settings
from distloop.worker.redis_server import RedisServer

pytestmark = pytest.mark.integration


def test_an_event_sent_with_retries_gives_up_once_its_broker_is_gone_and_waits_in_the_buffer(
    redis_server: RedisServer,
) -> None:
    app = make_app(Settings(broker_url=redis_server.url))
    with app.connection_for_write() as connection:
        dispatcher = app.events.Dispatcher(connection, hostname="t@h", enabled=True, buffer_while_offline=True)
        dispatcher.send("worker-online", retry=True)  # connected, as a running worker is
        assert not dispatcher._outbound_buffer
        redis_server.process.stop(signal.SIGKILL)
        # As Celery's worker heartbeat sends it: retry=True, no retry policy.
        sent = threading.Thread(target=dispatcher.send, args=("worker-heartbeat",), kwargs={"retry": True})
        sent.daemon = True
        started = time.monotonic()
        sent.start()
        sent.join(30)
        assert not sent.is_alive(), "the event still retries 30 s after its broker went"
        assert time.monotonic() - started < 10
        assert [event["type"] for event, _ in dispatcher._outbound_buffer] == ["worker-heartbeat"]
