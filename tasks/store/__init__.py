"""What distloop keeps in Redis.

Job ledgers (:mod:`.jobs`), worker heartbeats (:mod:`.workers`), and reaching it (:mod:`.connect`).
"""
