"""The Kafka clients and their workarounds: admin, producer, the group assignor, fixes.

Thin layers over kafka-python that know nothing of agents or tables beyond
the names and partition counts they are given.
"""

#: The longest pause between two attempts to reconnect to a broker (kafka-python's default,
#: 30 s, would keep a slot idle that long after an outage ends).
RECONNECT_BACKOFF_MAX_MS = 1000
