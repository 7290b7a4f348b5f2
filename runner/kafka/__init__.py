"""The Kafka clients and their workarounds: admin, producer, the group assignor, fixes.

Thin layers over kafka-python that know nothing of agents or tables beyond
the names and partition counts they are given.
"""

