"""runner: run Kafka stream-processing workers.

Usage:
  runner [options] [worker]
  runner [options] send <topic> [<value>] [--key=KEY]
  runner -h | --help
  runner --version

Commands:
  worker                 Start a worker in the foreground (the default command).
  send TOPIC [VALUE]     Send one record to TOPIC and print where it was written.
                         VALUE is parsed as JSON for JSON topics, else sent as text.

Options:
  -A APP, --app=APP          The app: module or module:attribute, imported from the
                             current directory (or "app:" in the config file).
  -b URL, --broker=URL       Kafka bootstrap servers: kafka://host:port or
                             host:port,host:port (default: the App's broker, else
                             kafka://localhost:9092).
  -D DIR, --datadir=DIR      Data directory; slot i keeps its state in DIR/slot-i
                             (default: ./APP-data).
  --web-host=HOST            Address the web server binds to (default: 127.0.0.1).
  -p PORT, --web-port=PORT   Port of the web server (default: 6066).
  -l LEVEL, --loglevel=LEVEL
                             debug, info, warning, error or critical (default: info).
  -f FILE, --logfile=FILE    Write the log to FILE (default: stderr).
  -c FILE, --config=FILE     YAML file with any of these settings (keys such as
                             web_port or web-port); the command line wins over it.
  --broker-timeout=SECONDS   Give up when no broker answers within SECONDS
                             (default: 30).
  -k KEY, --key=KEY          Key of the record to send (send only).
  -h, --help                 Show this help.
  --version                  Show the version.

Exit codes:
  0 success, 64 bad usage, 69 broker unreachable, 70 an agent failed,
  73 data directory or port in use, 78 app or config cannot be loaded.
"""

import json
import logging
import os
import re
import sys
from collections.abc import Sequence
from typing import Any

from docopt import DocoptExit, docopt

from . import __version__, admin, logs
from .config import Settings, build, check_settings, load_file
from .errors import EX_OK, RunnerError, UsageError
from .loader import load_app

#: Command-line options that are settings, by the name of their setting.
SETTING_OPTIONS = {'broker': '--broker', 'datadir': '--datadir', 'web_host': '--web-host',
                   'web_port': '--web-port', 'loglevel': '--loglevel', 'logfile': '--logfile',
                   'broker_timeout': '--broker-timeout'}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python runner.py`` and the ``runner`` script; returns the exit code."""
    try:
        args = parse(sys.argv[1:] if argv is None else list(argv))
        if args['send']:
            return send_command(args)
        return worker_command(args)
    except RunnerError as exc:
        print(f'runner: {exc}', file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


def parse(argv: list[str]) -> dict[str, Any]:
    """Parse the command line; bad usage raises UsageError with a one-line reason."""
    try:
        return docopt(__doc__, argv, version=f'runner {__version__}')
    except DocoptExit as exc:
        raise UsageError(f'{_usage_problem(exc)}; see "runner --help"') from None


_UNMATCHED_OPTION = re.compile(r"Option\((?:'(-[^']+)'|None), (?:'(--[^']+)'|None)")
_UNMATCHED_ARGUMENT = re.compile(r"Argument\(None, '([^']*)'\)")


def _usage_problem(exc: DocoptExit) -> str:
    """docopt's complaint, said plainly in one line."""
    message = str(exc)
    option = _UNMATCHED_OPTION.search(message)
    if option:
        return f'unknown option {option.group(2) or option.group(1)}'
    argument = _UNMATCHED_ARGUMENT.search(message)
    if argument:
        return f'unexpected argument {argument.group(1)!r}'
    first = message.splitlines()[0] if message else ''
    if first and not first.startswith(('Usage', 'Warning')):
        return first
    return 'bad command line'


def load(args: dict[str, Any]) -> tuple[Any, Settings]:
    """The App and its settings: App keywords < config file < command line."""
    file_values = load_file(args['--config']) if args['--config'] else {}
    spec = args['--app'] or file_values.pop('app', None)
    file_values.pop('app', None)
    if not spec:
        raise UsageError('no app given: use -A module[:attribute] (or app: in the config file)')
    cli_values = {name: args[option] for name, option in SETTING_OPTIONS.items()
                  if args[option] is not None}
    cli = check_settings(cli_values, 'the command line', UsageError)
    origin = f'config file {args["--config"]}'
    from_file = check_settings(file_values, origin)
    app = load_app(str(spec))
    return app, build(app.settings, from_file, cli)


def worker_command(args: dict[str, Any]) -> int:
    from .slot import Slot
    app, settings = load(args)
    logs.setup(settings.loglevel, settings.logfile, 'slot 0')
    try:
        code = Slot(app, settings).run()
    except RunnerError as exc:
        if settings.logfile:
            logging.getLogger('runner').error('%s', exc)
        raise
    return _exit_now(code)


def _exit_now(code: int) -> int:
    """Leave without waiting for threads stuck in user code (all state is committed)."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def send_command(args: dict[str, Any]) -> int:
    app, settings = load(args)
    logs.setup('warning' if settings.loglevel == 'info' else settings.loglevel,
               settings.logfile, 'send')
    topic = app.topics.get(args['<topic>']) or app.topic(args['<topic>'])
    client = admin.connect(settings.bootstrap_servers(), settings.broker_timeout, f'{app.name}-send')
    try:
        if args['<topic>'] not in admin.partition_counts(client, [topic.name]):
            raise UsageError(f'topic {topic.name!r} does not exist')
    finally:
        client.close()
    app.settings.update(broker=settings.broker, broker_timeout=settings.broker_timeout)
    value = _parse_value(topic, args['<value>'])
    metadata = app.send(topic, key=args['--key'], value=value).get(settings.broker_timeout)
    app.flush(settings.broker_timeout)
    print(json.dumps({'topic': metadata.topic, 'partition': metadata.partition,
                      'offset': metadata.offset}))
    return EX_OK


def _parse_value(topic: Any, text: str | None) -> Any:
    if text is None or topic.value_codec.name != 'json':
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


if __name__ == '__main__':
    raise SystemExit(main())
