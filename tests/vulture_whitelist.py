"""Names in ``runner/`` that vulture reports unused but that are used where it cannot see.

Read by vulture only (``[tool.vulture]`` in pyproject.toml), never imported: ``_.name`` marks
``name`` used.  Each line says who uses it; tests/unit/test_no_dead_code.py checks that every
name here is still defined in ``runner/``, so an entry cannot outlive its code.
"""
from types import SimpleNamespace

_ = SimpleNamespace()

# Public API, read by apps, documented in the manual (docs/).
_.events                    # runtime/stream.py: Stream.events, GroupedStream.events
_.group_by                  # runtime/stream.py: Stream.group_by
_.outputs                   # testing/__init__.py: AppDriver.outputs
_.EXIT_CODES                # errors.py: read by docs/_ext/runner_tables.py and the tests
_.__getattr__               # runner/__init__.py: the module's lazy attributes (PEP 562)
_.app_run                   # testing/pytest_plugin.py: a pytest fixture
_.crontab                   # app/app.py: App.crontab, the @app.crontab decorator

# Called by name: getattr(self, f'_on_{event}') and getattr(self, f'_{command}').
_._on_term                  # main/supervisor.py: signal handlers
_._on_int
_._on_quit
_._on_usr1
_._on_hup
_._on_ttin
_._on_ttou
_._on_chld
_._recover                  # state/recovery.py: commands of the recovery thread
_._drop

# kafka-python's interfaces and the fields of its objects that runner sets for it to read.
_.supported_protocols       # kafka/assignor.py: AbstractPartitionAssignor
_.on_assignment
_.on_partitions_revoked     # runtime/rebalances.py: ConsumerRebalanceListener
_.on_partitions_lost
_.on_partitions_assigned
_.next_fetch_offset         # kafka/records.py: read by the Fetcher as CompletedFetch's
_.records_read
_.bytes_read
_._last_offset              # kafka/batches.py: DefaultRecordBatchBuilder's
_._record_futures           # kafka/batches.py: ProducerBatch's

# The standard library's and other libraries' hooks.
_.levelname                 # logs.py: logging.LogRecord's field
_.process_log_record        # logs.py: python-json-logger's JsonFormatter hook
_.collect                   # runtime/metrics.py: prometheus_client's Collector
_.readinto                  # runtime/web.py: io.RawIOBase
_.protocol_version          # runtime/web.py: http.server.BaseHTTPRequestHandler
_.default_request_version
_.error_content_type
_.error_message_format
_.do_GET
_.do_HEAD
_.do_POST
_.close_connection
_.log_message
_.daemon_threads            # runtime/web.py: socketserver.ThreadingMixIn, HTTPServer
_.block_on_close
_.server_name
_.server_port
_.handle_error
