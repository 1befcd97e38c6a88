"""Every default distloop uses, named once, each with the reason for its value."""

#: Worker-side broker when nothing is configured: the conventional local Redis,
#: so that ``celery -A distloop.tasks worker`` behaves as in Celery's first-steps guide.
#: The producer never falls back to it: with no broker configured it starts the
#: embedded cluster instead.
WORKER_BROKER_URL = "redis://127.0.0.1:6379/0"

#: Modules whose functions every worker may run. The demo workloads are safe.
ALWAYS_ALLOWED = ("distloop.tasks.demo",)

#: Celery queue that carries chunk tasks; a name of our own keeps distloop's
#: work apart from other Celery apps sharing the same Redis.
QUEUE = "distloop"

#: Task name shown in Flower and in worker logs.
CHUNK_TASK = "distloop.chunk"

#: One-item-per-task baseline (plain Celery), for the dispatch benchmark.
ITEM_TASK = "distloop.item"

#: Flower's port when none is given (Flower's own default); 0 picks a free one.
FLOWER_PORT = 5555

#: User name of Flower's generated basic-auth credentials.
FLOWER_USER = "distloop"

#: Tasks Flower keeps in memory. Flower's default (100,000) lets a long run of
#: small chunks grow it to hundreds of MB; the newest 10,000 chunks are plenty to watch.
FLOWER_MAX_TASKS = 10_000

#: Hard and soft per-chunk time limits (seconds). Automatic chunk sizing aims
#: for chunks well under a second, so these only catch runaway chunks; they stay
#: below the visibility timeout so a running chunk is never handed to a second
#: worker while the first still works on it.
CHUNK_TIME_LIMIT = 3000.0
CHUNK_SOFT_TIME_LIMIT = 2940.0

#: Redis redelivers an unacknowledged message after this many seconds. Must be
#: longer than the longest chunk (the hard time limit).
VISIBILITY_TIMEOUT = 3600

#: Seconds a finished job's keys stay in Redis (results, ledger) for ``resume``
#: and ``status``; then Redis drops them by itself.
RESULT_EXPIRES = 86400

#: Socket timeouts (seconds) on broker and result connections, so that a dead
#: Redis surfaces as an error instead of a hang.
SOCKET_TIMEOUT = 10.0
SOCKET_CONNECT_TIMEOUT = 5.0

#: Seconds between health checks of idle Redis connections.
HEALTH_CHECK_INTERVAL = 25

#: Automatic chunk sizing: a chunk should run about this long (seconds). Between
#: two chunks a prefork process waits 3-4 ms (measured: the result goes back to
#: the worker's main process, which acks it and hands over the next message), so
#: half a second of work keeps that wait under 1%.
TARGET_CHUNK_SECONDS = 0.5

#: ...while there are still at least this many chunks per worker process, to
#: balance uneven items and show progress.
MIN_CHUNKS_PER_WORKER = 4

#: Items in the probe chunks, one per worker process, sent before any chunk has
#: come back: their timing sizes the rest (the function is never run in the producer itself).
PROBE_CHUNK_ITEMS = 16

#: Chunks in flight when chunks are tiny (a forced --chunk-size 1): enough that
#: workers never wait for the producer, bounded so memory stays flat.
MAX_WINDOW = 1024

#: Seconds between plain progress lines when stderr is not a terminal (logs, CI).
PROGRESS_INTERVAL = 10.0

#: Seconds to wait for the embedded cluster (redis-server and workers) to be ready.
STARTUP_TIMEOUT = 30.0

#: Seconds a stopping process gets before it is killed.
STOP_GRACE_SECONDS = 5.0

#: Guided sizing never makes a chunk shorter than this (seconds of work), so the
#: shrinking tail does not drown in the 3-4 ms wait between chunks.
MIN_CHUNK_SECONDS = 0.05


#: Times a chunk is sent again after the process running it died (SIGKILL, OOM,
#: segfault). Then it is reported failed: a function that kills its own process
#: must not be redelivered forever.
WORKER_LOST_RETRIES = 2

#: Seconds between the producer's checks for chunks lost with a dead worker or
#: a restarted Redis (the heartbeat TTL adds up to 4 s to notice a dead worker).
RECOVERY_INTERVAL = 2.0

#: Seconds between looks for straggling chunks once a job's last chunks run and
#: workers go idle (a look reads the ledger's running chunks and the heartbeats).
STRAGGLER_INTERVAL = 0.25

#: Seconds the producer waits for an unreachable Redis to come back before it
#: fails the job (exit code 3) instead of waiting forever.
BROKER_OUTAGE_SECONDS = 30.0

#: Extra seconds past ``--timeout`` before a chunk that ignores the soft limit
#: (stuck in C code) is killed by the hard limit.
TIMEOUT_GRACE_SECONDS = 5.0

#: Forwarded output (what ``f`` prints or logs on a worker, shown by the producer): at
#: most this many lines and bytes per chunk (then one marker line counts what was
#: dropped) and per job (then one marker, and nothing more), so that a runaway print
#: loop cannot fill Redis or the terminal. A line longer than OUTPUT_LINE_CHARS is cut.
OUTPUT_LINES_PER_CHUNK = 10_000
OUTPUT_BYTES_PER_CHUNK = 1_000_000
OUTPUT_LINES_PER_JOB = 100_000
OUTPUT_BYTES_PER_JOB = 10_000_000
OUTPUT_LINE_CHARS = 4_000

#: A chunk that prints pushes its lines at least this often (seconds), so that a
#: long chunk's output shows while it runs, not only at its end.
OUTPUT_FLUSH_SECONDS = 0.5
