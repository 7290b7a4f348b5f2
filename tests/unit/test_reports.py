"""Slot → main process reports: JSON lines over a pipe, never blocking the slot."""

import os

from runner.reports import Reporter, ReportReader


def test_reports_arrive_whole_even_when_split_across_reads():
    read_fd, write_fd = os.pipe()
    reader = ReportReader(read_fd)
    os.write(write_fd, b'{"phase": "run')
    assert reader.read() == []
    os.write(write_fd, b'ning"}\n{"ready": true}\n')
    assert reader.read() == [{'phase': 'running'}, {'ready': True}]
    os.close(write_fd)
    assert reader.read() == []
    reader.close()


def test_a_full_pipe_drops_a_report_instead_of_blocking_the_slot():
    read_fd, write_fd = os.pipe()
    reporter = Reporter(write_fd)
    for _ in range(10000):                  # far more than a pipe holds
        reporter.send({'phase': 'running', 'padding': 'x' * 100})
    reader = ReportReader(read_fd)
    reports = reader.read()
    assert reports and all(report['phase'] == 'running' for report in reports)
    os.close(write_fd)
    reader.close()
