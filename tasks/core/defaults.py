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

#: Where ``distloop up`` writes the full broker URL of its standing cluster (mode 600), and
#: where ``distloop run`` and the facades look for one when no broker is configured.
UP_ENV_FILE = "~/.distloop/up.env"

#: Seconds a producer gives a standing cluster's Redis to answer PING before it starts
#: an embedded cluster instead: it is on this host, so it answers in a millisecond or not at all.
STANDING_PING_TIMEOUT = 0.5

#: Seconds to wait for the embedded cluster (redis-server and workers) to be ready.
STARTUP_TIMEOUT = 30.0

#: Seconds a stopping process gets before it is killed.
STOP_GRACE_SECONDS = 5.0

#: Chunks whose thread used less CPU time than this share of their wall time are
#: waiting work (I/O, sleeps): threads or awaited items, not cores, keep them busy.
WAITING_CPU_SHARE = 0.5

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

#: Calls per message at most when ``imap`` reads an input of unknown length (a
#: generator): enough that short calls are not dominated by the broker, few enough
#: that results come back as the input is read.
MAX_STREAM_CHUNK = 10_000

#: Worker processes (or threads) one machine may be asked for: this many per CPU,
#: and never more than MAX_WORKERS. A count far above the cores gains nothing, and
#: an unchecked one (``--workers 100000``) forks until the machine stalls.
WORKERS_PER_CPU = 16
MAX_WORKERS = 1024

#: Largest ``--chunk-size``: a chunk of more items cannot finish within the hard
#: time limit (3000 s) unless each item takes under 3 ns, far less than any Python call.
MAX_CHUNK_SIZE = 10**12

#: Largest ``bench --repeat``: the medians of 100 rounds are as steady as they get.
MAX_REPEAT = 100

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

#: Items of an ``async def`` target awaited at once by one worker process (its event
#: loop), ``--io-concurrency`` / DISTLOOP_IO_CONCURRENCY. 100 keeps a process's sockets
#: and file descriptors well under the usual limit of 1024 while hiding a 20-100 ms
#: wait behind 100 others; a job asks for more or less with the flag.
IO_CONCURRENCY = 100

#: The most a job may ask for: each pending item may hold a socket, and a process has
#: 1024 file descriptors by default.
MAX_IO_CONCURRENCY = 1000

#: Threads of the thread backend when ``--workers`` is not given. Threads only pay off
#: for waiting work (the GIL runs Python code one thread at a time), and a waiting item
#: costs a thread almost nothing: 64, as ``ThreadPoolExecutor``'s users pick for I/O.
#: The pool grows to it only as chunks wait (``ThreadPoolExecutor`` starts threads on
#: demand), so a CPU-bound loop keeps about one thread per chunk in flight.
THREAD_WORKERS = 64

#: ``--reduce`` ops (the kernel's :data:`~distloop.tasks.kernel.REDUCERS` folds them).
REDUCE_OPS = ("sum", "min", "max", "count")

#: ``--on-error``: stop at the first failing item, or run them all and collect the errors.
ON_ERROR = ("raise", "collect")

#: Pools a worker can run (``distloop worker --pool``). ``prefork``: one process per
#: core, for CPU-bound work; ``threads`` (and ``gevent`` where it is installed): many
#: waiting items per process, for blocking I/O. Each kind serves its own queue.
POOLS = ("prefork", "threads", "gevent")

#: The most threads or greenlets one ``threads``/``gevent`` worker runs.
MAX_POOL_CONCURRENCY = 1000

#: On a threads or gevent pool, a blocking function's chunk runs this many of its items
#: at once (on threads of the worker process), and the producer sends one chunk per this
#: many of the pool's threads: the same items waiting at once, an eighth of the messages
#: (each costs the worker's one consumer thread about 1-2.5 ms, which the GIL serialises).
THREAD_FAN_OUT = 8


def queue_for(pool: str) -> str:
    """The queue a pool kind's workers serve: :data:`QUEUE` for prefork, ``distloop.<pool>`` else.

    CPU-bound and I/O-bound jobs share one Redis: each goes to workers of its kind.
    """
    return QUEUE if pool == "prefork" else f"{QUEUE}.{pool}"
