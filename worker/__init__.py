"""Starting workers: one host's worker, the embedded cluster, the Flower launcher.

Every process started here is stopped by its own process id (and its process
group, which it leads), never by name.
"""
