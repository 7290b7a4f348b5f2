"""The status page in a real headless Chromium: asked for the web token once, it shows a
2-slot worker's partitions, refreshes itself without a reload, and its link leads to the
other slot's page, which knows the token.  The screenshot is kept in tests/artifacts/."""

import pytest
from apps import forward_app, outputs
from browser import Browser
from harness import REPO, debian_command, produce, wait_for

TOKEN = 'page-token-7c41d0'
RECORDS = 200
#: The screenshot of the other slot's page, kept after the test (the README shows where).
SCREENSHOT = REPO / 'tests' / 'artifacts' / 'status-page.png'
ROWS = ("Array.from(document.querySelectorAll('#partitions tr[data-partition]'))"
        ".map(row => [row.dataset.partition, row.cells[1].textContent, row.cells[3].textContent])")


@pytest.fixture
def browser(tmp_path):
    """Debian's chromium (installed when missing), headless; always closed."""
    binary = debian_command('chromium')
    directory = tmp_path / 'chromium'
    directory.mkdir()
    made = Browser(binary, directory)
    try:
        yield made
    finally:
        made.close()


def shown_partitions(browser):
    """Partition, lag and processed offset of every row of the page's partition table."""
    return browser.evaluate(ROWS) or []


def test_a_browser_shows_each_slots_partitions_and_follows_the_link_to_the_other_slot(
        tmp_path, names, workers, kafka_bootstrap, browser):
    config = tmp_path / 'runner.yaml'
    config.write_text(f'web_token: {TOKEN}\n')
    config.chmod(0o600)
    worker = workers(forward_app(tmp_path, names, partitions=4),
                     extra=('-w', '2', '-c', str(config)))
    worker.token = TOKEN
    worker.split_between(2)
    wait_for(lambda: all(len((worker.state(slot) or {}).get('members', ())) == 2
                         for slot in (0, 1)), 60, 'both slots to know both members')
    produce(kafka_bootstrap, names['source'], ((f'k{i}', i) for i in range(RECORDS)))
    outputs(kafka_bootstrap, names['sink'], RECORDS)

    browser.open(f'http://127.0.0.1:{worker.port}/')
    assert browser.evaluate("document.getElementById('status').dataset.locked") == 'yes'
    assert names['source'] not in browser.evaluate('document.documentElement.outerHTML')
    browser.evaluate(f"document.getElementById('token').value = '{TOKEN}'; "
                     "document.getElementById('token-form').requestSubmit()")
    mine = worker.state(0)['assignment']
    wait_for(lambda: [row[0] for row in shown_partitions(browser)] == mine
             and all(row[1] == '0' for row in shown_partitions(browser)), 30,
             f"slot 0's partitions {mine} with no lag on its page")

    browser.evaluate('window.notReloaded = true')
    before = sum(int(row[2]) for row in shown_partitions(browser))
    produce(kafka_bootstrap, names['source'], ((f'k{i}', i) for i in range(RECORDS)))
    wait_for(lambda: sum(int(row[2]) for row in shown_partitions(browser)) > before, 30,
             'the page to show the new records without a reload')
    assert browser.evaluate('window.notReloaded') is True

    other = f'127.0.0.1:{worker.port + 1}'
    assert browser.evaluate("Array.from(document.querySelectorAll('a.member'))"
                            ".map(link => link.textContent)") == [other]
    browser.evaluate("document.querySelector('a.member').click()")
    theirs = worker.state(1)['assignment']
    wait_for(lambda: browser.evaluate('location.host') == other
             and [row[0] for row in shown_partitions(browser)] == theirs, 30,
             f"slot 1's page with its partitions {theirs}, the token carried over")
    assert browser.evaluate('location.hash') == ''       # the token left the address bar
    assert not set(mine) & set(theirs)
    assert browser.screenshot(SCREENSHOT).read_bytes().startswith(b'\x89PNG')
