"""A slot's runtime: the consumer thread, per-partition queues, tasks, agent threads, web.

Data flows one way: Kafka → consumer thread → per-partition queues → agent
threads → checkpoint.  Everything here is created in the slot, after the fork.
"""
