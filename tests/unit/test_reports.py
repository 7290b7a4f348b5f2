"""Slot → main process reports: whole JSON datagrams, never blocking the slot, and
nothing a slot sends can stop the main process."""

import errno
import logging

from runner.reports import MAX_REPORT, Reporter, ReportReader, channel

STATUS = {'phase': 'running', 'live': True, 'ready': True, 'reason': 'processing',
          'web': '127.0.0.1:6066', 'graceful_timeout': 30.0, 'heartbeat_timeout': 5.0,
          'assignment': ['t:0']}


def pair():
    main_end, slot_end = channel()
    return ReportReader(main_end, 'slot 0'), Reporter(slot_end.detach())


def test_reports_arrive_whole_and_in_order():
    reader, reporter = pair()
    reporter.send(STATUS)
    reporter.send({**STATUS, 'ready': False})
    assert [report['ready'] for report in reader.read()] == [True, False]
    assert reader.read() == []
    reader.close()


def test_a_slot_that_loaded_the_app_says_so_before_its_first_status(caplog):
    reader, reporter = pair()
    reporter.send({'loaded': True})
    reporter.send(STATUS)
    assert reader.read() == [{'loaded': True}, STATUS]
    assert 'malformed' not in caplog.text
    reader.close()


def test_a_report_of_thousands_of_partitions_arrives_whole():
    reader, reporter = pair()
    many = {**STATUS, 'assignment': [f'a-rather-long-topic-name:{n}' for n in range(3000)]}
    reporter.send(many)                      # ~100 KB: far beyond an atomic pipe write
    assert reader.read() == [many]
    reader.close()


def test_a_report_too_large_for_a_datagram_goes_without_its_partition_list():
    reader, reporter = pair()
    huge = {**STATUS, 'assignment': [f't:{n}' for n in range(MAX_REPORT // 4)]}
    reporter.send(huge)
    [report] = reader.read()
    assert report['assignment'] == [f'{MAX_REPORT // 4} partitions (too many to report)']
    assert report['ready'] is True
    reader.close()


def test_a_full_socket_drops_a_report_instead_of_blocking_the_slot():
    reader, reporter = pair()
    for _ in range(10000):                  # far more than the socket holds
        reporter.send({**STATUS, 'reason': 'x' * 1000})
    reports = reader.read()
    assert reports and all(report == {**STATUS, 'reason': 'x' * 1000} for report in reports)
    reader.close()


def test_bad_reports_are_skipped_with_a_warning(caplog):
    main_end, slot_end = channel()
    reader = ReportReader(main_end, 'slot 3')
    slot_end.send(b'{"phase": "runn')                        # cut
    slot_end.send(b'[1, 2]')                                 # not an object
    slot_end.send(b'{"phase": 1}')                           # wrong fields
    oversized = sent(slot_end, b'x' * (MAX_REPORT + 10))     # larger than the reader takes
    Reporter(slot_end.detach()).send(STATUS)
    with caplog.at_level(logging.WARNING, logger='runner.reports'):
        assert reader.read() == [STATUS]
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 3 + oversized and all('from slot 3' in text for text in warnings)
    reader.close()


def test_the_end_of_the_slot_closes_the_reader():
    reader, reporter = pair()
    reporter.send(STATUS)
    reporter._socket.close()
    assert reader.read() == [STATUS] and reader.closed
    reader.close()


def test_a_report_to_a_main_process_that_is_gone_is_dropped():
    main_end, slot_end = channel()
    main_end.close()
    Reporter(slot_end.detach()).send(STATUS)          # no exception


def sent(sock, data):
    """Whether the kernel takes ``data`` as one datagram (its limit is a system setting)."""
    try:
        sock.send(data)
    except OSError as exc:
        assert exc.errno == errno.EMSGSIZE
        return False
    return True
