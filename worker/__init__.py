"""Starting workers and what they need, on the producer's side or a worker host.

- :mod:`.processes`: child processes stopped by their own pid (and process group).
- :mod:`.redis_server`: a private redis-server on a free port.
- :mod:`.celery_worker`: ``celery -A distloop.tasks worker`` processes with distloop's settings.
- :mod:`.embedded`: the embedded cluster that ``distloop run`` uses when no broker is set.
- :mod:`.standing`: ``distloop up``'s standing cluster.
- :mod:`.flower`: the Flower launcher.

Every process started here is stopped by its own process id (and its process
group, which it leads), never by name.
"""
