"""The main process: forks and supervises the slots, rolls restarts, talks to systemd.

It imports nothing of the app, the runtime, the state or Kafka: it works from
the command line and the config file alone, and each slot imports the app
after the fork.  ``tests/unit/test_layout.py`` keeps it that way.
"""
