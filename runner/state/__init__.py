"""Table state of a slot: the checkpoint, LevelDB stores, live table partitions, recovery,
and the global tables every slot holds whole.

The checkpoint (:mod:`runner.state.checkpoint`) is the one place that orders a
commit.  State is kept per changelog topic-partition.  Nothing here knows
about threads other than through the guards it is given, nor about queues or
the consumer loop.
"""
