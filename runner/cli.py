"""runner: run Kafka stream-processing workers.

Usage:
  runner [options] [worker]
  runner [options] send <topic> [<value>] [--key=KEY]
  runner [options] dlq <agent> [--replay]
  runner [options] skip <topic> <partition> <offset>
  runner [options] status [--json]
  runner [options] lag [--json]
  runner [options] stop [--cold] [--timeout=SECONDS]
  runner [options] restart [--timeout=SECONDS]
  runner -h | --help
  runner --version

Commands:
  worker                 Start the main process and its worker slots in the
                         foreground (the default command).
  send TOPIC [VALUE]     Send one record to TOPIC and print where it was written.
                         VALUE is parsed as JSON for JSON topics (a bare word is
                         sent as a string; broken JSON is refused), else sent as
                         text.
  dlq AGENT              List the dead letters of AGENT (its name or its
                         function's name): where each record came from and why
                         it failed.  With --replay, send those not replayed yet
                         back to their topic (after a fix).
  skip TOPIC PARTITION OFFSET
                         Send the record a partition is stopped at (its agent
                         raised on it under on_error='stop') to the dead-letter
                         topic, and let the partition go on.
  status                 Show the slots of the process named by --pidfile.
  lag                    Show how far the app's consumer group is behind: per
                         partition of its source topics the committed offset, the
                         end offset and the lag, with totals per topic (workers
                         running or not).
  stop                   Stop it (warm; --cold to stop at once) and wait.
  restart                Restart its slots one half at a time (HUP) and wait.

Options:
  -A APP, --app=APP          The app: module or module:attribute, imported from the
                             current directory (or "app:" in the config file).
  -b URL, --broker=URL       Kafka bootstrap servers: kafka://host:port or
                             host:port,host:port (default: the App's broker, else
                             kafka://localhost:9092).
  -w N, --workers=N          Number of worker slots (default: 1).
  --workers-max=N            The most slots --workers and TTIN may ask for
                             (default: 4 per CPU).
  -D DIR, --datadir=DIR      Data directory; slot i keeps its state in DIR/slot-i
                             (default: ./APP-data).
  --web-host=HOST            Address the web servers bind to (default: 127.0.0.1).
  -p PORT, --web-port=PORT   Web port of slot 0; slot i listens on PORT+i
                             (default: 6066).
  --web-advertise=HOST[:PORT]
                             Where other members reach the web servers (with a
                             PORT, slot i's is PORT+i); default: --web-host, or
                             for 0.0.0.0 the address this host reaches the
                             broker from.
  -l LEVEL, --loglevel=LEVEL
                             debug, info, warning, error or critical (default: info).
  -f FILE, --logfile=FILE    Write the log to FILE (default: stderr); %i in FILE
                             stands for the slot's number (one file per slot; the
                             main process's has "main" in its place).
  --log-format=FORMAT        text (the default) or json: one JSON object per line.
  -c FILE, --config=FILE     YAML file with any of these settings (keys such as
                             web_port or web-port) and per-slot overrides under
                             "slots:"; the command line wins over it.
  --broker-timeout=SECONDS   Give up when no broker answers within SECONDS
                             (default: 30).
  --graceful-timeout=SECONDS
                             A warm shutdown taking longer turns cold (default: 30).
  --processing-guarantee=G   at_least_once (the default) or exactly_once: each
                             commit one Kafka transaction (see the manual).
  --security-protocol=P      PLAINTEXT (the default), SSL, SASL_PLAINTEXT or SASL_SSL.
  --sasl-mechanism=M         PLAIN (the default), SCRAM-SHA-256 or SCRAM-SHA-512.
  --sasl-username=USER       SASL user; the password comes from the config file or
                             $RUNNER_SASL_PASSWORD, never from the command line.
  --ssl-cafile=FILE          CA certificates to check the broker's with (PEM).
  --ssl-certfile=FILE        Client certificate (PEM); its key's password from the
                             config file or $RUNNER_SSL_PASSWORD.
  --ssl-keyfile=FILE         Client certificate's private key (PEM).
  --pidfile=FILE             Keep the main process's pid in FILE, locked while it
                             runs; status, stop and restart find it there.
  --metrics-targets=FILE     Keep FILE up to date for Prometheus's file_sd_configs
                             (default: PIDFILE.targets.json with --pidfile).
  --detach                   Run in the background (needs --pidfile and --logfile);
                             if already running, say so and exit 0.
  -k KEY, --key=KEY          Key of the record to send (send only).
  --replay                   Send dead letters back to their topic (dlq only).
  --json                     Print JSON (status and lag only).
  --cold                     Stop at once; work in hand is redone later (stop only).
  --timeout=SECONDS          How long stop or restart waits (default: 60 for stop,
                             300 for restart).
  -h, --help                 Show this help.
  --version                  Show the version.

Exit codes:
  0 success, 1 stop or restart did not finish in time, or the partition is
  not stopped at that offset (skip), 2 degraded (status), 3 not running
  (status, restart; skip: no running slot has the partition), 4 the main
  process stopped answering (status), 64 bad usage,
  65 a VALUE the topic's serializer does not take (send), 69 broker
  unreachable, 70 a slot failed, 71 no process could be forked, 73 data
  directory, port or pidfile in use (or a link), 74 a file or table store
  cannot be written or read (disk full), 77 the broker refused the
  login or TLS handshake, 78 app or config cannot be loaded, 130
  interrupted, 141 output pipe closed early.
"""

import json
import logging
import os
import re
import signal
import sys
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from docopt import DocoptExit, docopt

from . import __version__, logs, platform
from .config import (
    SUPERVISOR_KEYS,
    WEB_ADDRESS_KEYS,
    WORKERS_PER_CPU,
    Options,
    Settings,
    check_settings,
    default_workers_max,
    load_file,
    positive_int,
    positive_seconds,
    secrets_from_environment,
    slot_overrides,
)
from .errors import (
    EX_INTERRUPTED,
    EX_OK,
    EX_PIPE,
    CannotFork,
    ConfigError,
    DataError,
    NotFinished,
    NotRunning,
    RunnerError,
    UsageError,
    error_with_code,
    shown,
    shown_name,
)
from .main import control
from .main.rolling import Reload
from .main.slots import Deploy
from .main.supervisor import Supervisor

log = logging.getLogger('runner')

#: The highest TCP port.
MAX_PORT = 65535
#: Command-line options that are settings, by the name of their setting.
SETTING_OPTIONS = {'broker': '--broker', 'datadir': '--datadir', 'web_host': '--web-host',
                   'web_port': '--web-port', 'web_advertise': '--web-advertise',
                   'loglevel': '--loglevel', 'logfile': '--logfile',
                   'log_format': '--log-format',
                   'broker_timeout': '--broker-timeout', 'graceful_timeout': '--graceful-timeout',
                   'processing_guarantee': '--processing-guarantee',
                   'security_protocol': '--security-protocol',
                   'sasl_mechanism': '--sasl-mechanism', 'sasl_username': '--sasl-username',
                   'ssl_cafile': '--ssl-cafile', 'ssl_certfile': '--ssl-certfile',
                   'ssl_keyfile': '--ssl-keyfile'}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python runner.py`` and the ``runner`` script; returns the exit code."""
    # INT stops a worker at every stage, also when started as a shell's background job
    # (which inherits INT ignored): the main process handles it once running anyway.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    platform.private_files()
    try:
        try:
            args = parse(sys.argv[1:] if argv is None else list(argv))
            for command, run in COMMANDS.items():
                if args[command]:
                    return run(args)
            return worker_command(args)
        finally:
            sys.stdout.flush()
    except BrokenPipeError:     # the reader went away (``runner status | head -1``)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EX_PIPE
    except RunnerError as exc:
        print(f'runner: {exc}', file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return EX_INTERRUPTED


def parse(argv: list[str]) -> dict[str, Any]:
    """Parse the command line; bad usage raises UsageError with a one-line reason."""
    try:
        return docopt(__doc__, argv, version=f'runner {__version__}')
    except DocoptExit as exc:
        raise UsageError(f'{_usage_problem(exc, argv)}; see "runner --help"') from None


_UNMATCHED_OPTION = re.compile(r"Option\((?:'(-[^']+)'|None), (?:'(--[^']+)'|None)")
_UNMATCHED_ARGUMENT = re.compile(r"Argument\(None, '([^']*)'\)")
_USAGE_LINE = re.compile(r'^  runner \[options\] (\w+)(.*)$', re.MULTILINE)


def _usage_problem(exc: DocoptExit, argv: list[str]) -> str:
    """docopt's complaint, said plainly in one line."""
    message = str(exc)
    option = _UNMATCHED_OPTION.search(message)
    if option:
        return _option_problem([name for name in option.groups() if name], argv)
    argument = _UNMATCHED_ARGUMENT.search(message)
    if argument:
        return f'unexpected argument {shown(argument.group(1))}'
    first = message.splitlines()[0] if message else ''
    if first and not first.startswith(('Usage', 'Warning')):
        return shown_name(first, 100)
    return 'bad command line'


def _option_problem(names: list[str], argv: list[str]) -> str:
    """Why docopt left an option over: unknown, given twice, or not for this command."""
    name = names[-1]
    if not re.search(rf'(^|[\s,]){re.escape(name)}[=\s,]', __doc__, re.MULTILINE):
        return f'unknown option {shown_name(name)}'
    commands = [match[1] for match in _USAGE_LINE.finditer(__doc__)
                if any(re.search(rf'{re.escape(n)}\b', match[2]) for n in names)]
    given = sum(arg == n or arg.startswith(f'{n}=') for arg in argv for n in names)
    if commands and given <= 1:
        return f'option {name} goes only with {" or ".join(commands)}'
    return f'option {name} given more than once'


def load_options(args: dict[str, Any], need_app: bool = True) -> Options:
    """Command line and config file, checked; the app itself is not imported."""
    path = args['--config']
    values = load_file(path) if path else {}
    origin = f'config file {shown_name(path or "")}'
    spec = args['--app'] or _text(values.get('app'), 'app', origin)
    if need_app and not spec:
        raise UsageError('no app given: use -A module[:attribute] (or app: in the config file)')
    workers, workers_max = _slot_count(args, values, origin)
    cli_values = {name: args[option] for name, option in SETTING_OPTIONS.items()
                  if args[option] is not None}
    file_values = {key: value for key, value in values.items() if key not in SUPERVISOR_KEYS}
    return Options(app=str(spec or ''), workers=workers, workers_max=workers_max,
                   pidfile=args['--pidfile'] or _text(values.get('pidfile'), 'pidfile', origin),
                   metrics_targets=args['--metrics-targets'] or _text(
                       values.get('metrics_targets'), 'metrics_targets', origin),
                   cli={**check_settings(secrets_from_environment(), 'the environment',
                                         UsageError),
                        **check_settings(cli_values, 'the command line', UsageError)},
                   file=check_settings(file_values, origin),
                   per_slot=slot_overrides(values.get('slots'), origin))


def _slot_count(args: dict[str, Any], values: dict[str, Any], origin: str) -> tuple[int, int]:
    """How many slots the command line or the config file asks for, and the most it may:
    more is refused, as a bad command line (64) or config file (78)."""
    if args['--workers-max'] is not None:
        most = positive_int(args['--workers-max'], '--workers-max', UsageError)
        limit = '--workers-max'
    elif 'workers_max' in values:
        most = positive_int(values['workers_max'], f'workers_max in {origin}', ConfigError)
        limit = 'workers_max'
    else:
        most = default_workers_max()
        limit = f'{WORKERS_PER_CPU} per CPU; --workers-max N allows more'
    if args['--workers'] is not None:
        workers = positive_int(args['--workers'], 'workers', UsageError)
        where, error = '', UsageError
    else:
        workers = positive_int(values.get('workers', 1), f'workers in {origin}', ConfigError)
        where, error = f' in {origin}', ConfigError
    if workers > most:
        raise error(f'invalid workers {workers}{where}: at most {most} ({limit})')
    return workers, most


def worker_command(args: dict[str, Any]) -> int:
    """Run the main process: it forks the slots and looks after them until stopped.

    The main process imports neither the app nor the runtime: the app is
    imported in throwaway children to check it, and in each slot after the fork.
    """
    options, settings = worker_options(args)
    checked = check_app(options, settings.import_timeout)
    name = checked['name']
    detach = args['--detach']
    if detach:
        _check_detachable(options, settings.logfile)
    pidfile = platform.Pidfile(options.pidfile) if options.pidfile else None
    if pidfile:
        try:
            pidfile.acquire()
        except platform.AlreadyRunning as exc:
            if not detach:
                raise
            print(f'runner: {exc}')
            return EX_OK
    if detach:
        platform.detach()
        pidfile.rewrite()
    logs.setup(settings.loglevel, settings.logfile, 'main', settings.secrets(),
               settings.log_format)
    platform.set_title(f'runner: main {name}')
    supervisor = Supervisor(name, options.workers, _deploy(options)(checked),
                            workers_max=options.workers_max,
                            reload=lambda: _reload(args), check_timeout=settings.import_timeout,
                            ready_timeout=settings.ready_timeout,
                            status_path=control.status_path(pidfile.path) if pidfile else None,
                            close_in_children=(pidfile.fd,) if pidfile else (),
                            targets_path=_targets_path(options, pidfile))
    try:
        code = supervisor.run()
    finally:
        if pidfile:
            pidfile.release()
    if supervisor.fatal_message:
        if settings.logfile:
            log.error('%s', supervisor.fatal_message)
        print(f'runner: {supervisor.fatal_message}', file=sys.stderr)
    return code


def _targets_path(options: Options, pidfile: platform.Pidfile | None) -> Path | None:
    """Where the Prometheus targets file goes: ``--metrics-targets``, else beside the
    pidfile, else nowhere."""
    if options.metrics_targets:
        return Path(options.metrics_targets).absolute()
    return control.targets_path(pidfile.path) if pidfile else None


def worker_options(args: dict[str, Any]) -> tuple[Options, Settings]:
    """What a parsed command line and its config file ask the worker for, checked, and the
    settings the main process goes by; nothing is imported or started."""
    options = load_options(args)
    settings = options.base_settings()
    check_ports(settings, options.workers)
    return options, settings


def _text(value: Any, key: str, origin: str) -> str | None:
    """A config file's ``app`` or ``pidfile``: text, if given."""
    if value is not None and not isinstance(value, str):
        raise ConfigError(f'invalid {key} in {origin}: expected text, not '
                          f'{type(value).__name__}')
    if value is not None and '\0' in value:
        raise ConfigError(f'invalid {key} {shown(value)} in {origin}: contains a NUL byte')
    return value


def check_ports(settings: Any, workers: int) -> None:
    """Every slot's web port (the base port + its index) must exist."""
    last = settings.web_port + workers - 1
    if settings.web_port and last > MAX_PORT:
        raise UsageError(f'web port {settings.web_port} with {workers} slots would need port '
                         f'{last}; ports end at {MAX_PORT}')


def check_app(options: Options, timeout: float) -> dict[str, Any]:
    """Import the app in a throwaway child, so a bad app fails before any slot is forked;
    a child still importing after ``timeout`` seconds is killed.

    Returns what :func:`_app_check` does; raises the child's error (ConfigError,
    UsageError) here.
    """
    try:
        return platform.call_in_child(_app_check(options), timeout)
    except CannotFork as exc:
        raise CannotFork(f'cannot check app {options.app!r}: {exc}') from None
    except platform.ChildFailed as exc:
        if exc.code is None:
            raise ConfigError(f'cannot load app {options.app!r}: the app check {exc} '
                              '(import_timeout)') from None
        raise error_with_code(str(exc), exc.code) from None


def _app_check(options: Options) -> Callable[[], dict[str, Any]]:
    """What the check child runs: import the app, build every slot's settings, return
    the app's name and its own web settings (``web``, which the main process needs to
    bind the slots' web ports); anything else it raises becomes a one-line RunnerError."""
    def check() -> dict[str, Any]:
        from .app.loader import load_app
        try:
            app = load_app(options.app)
            for index in range(options.workers):
                options.settings_for(app.settings, index)
        except RunnerError:
            raise
        except BaseException as exc:  # noqa: BLE001 - reported as one line, like every error
            raise RunnerError(f'cannot load app {options.app!r}: {type(exc).__name__}: '
                              f'{exc}') from None
        return {'name': app.name, 'web': {key: app.settings[key] for key in WEB_ADDRESS_KEYS
                                          if key in app.settings}}
    return check


def _deploy(options: Options) -> Callable[[dict[str, Any]], Deploy]:
    """What the slots run, given what the app check returned: the slot entry point (the
    runtime is imported in the forked child, not here) and each slot's web address."""
    def slot_main(index: int, report_fd: int, main_pid: int, successor: bool,
                  web_fd: int) -> int:
        from .runtime.slot import boot
        return boot(options, index, report_fd, main_pid, successor, web_fd)

    def deploy(checked: dict[str, Any]) -> Deploy:
        return Deploy(slot_main, lambda index: options.web_address(checked['web'], index))
    return deploy


def _reload(args: dict[str, Any]) -> Reload:
    """On HUP: the config file again (a bad one raises here), and the check that the app,
    as deployed now, loads (the main loop runs it in a child)."""
    options = load_options(args)
    return Reload(_app_check(options), _deploy(options))


def _check_detachable(options: Options, logfile: str | None) -> None:
    """Everything a detached process could only report into the void, checked first."""
    if not (options.pidfile and logfile):
        raise UsageError('--detach needs --pidfile and --logfile')
    os.close(platform.open_own(Path(logs.logfile_path(logfile, None)), os.O_WRONLY | os.O_APPEND | os.O_CREAT,
                               'log file'))


def _app_and_settings(args: dict[str, Any], role: str) -> tuple[Any, Settings]:
    """For a command that talks to Kafka as the app: the app, imported here, its settings
    (slot 0's), and the log set up for ``role`` (warnings only, unless asked for more)."""
    from .app.loader import load_app

    options = load_options(args)
    app = load_app(options.app)
    settings = options.settings_for(app.settings, 0)
    logs.setup('warning' if settings.loglevel == 'info' else settings.loglevel,
               settings.logfile, role, settings.secrets(), settings.log_format)
    return app, settings


def send_command(args: dict[str, Any]) -> int:
    """Send one record to a topic, serialized as the app declares the topic."""
    from .kafka import admin
    from .kafka.producer import Producer
    from .runtime import outside

    app, settings = _app_and_settings(args, 'send')
    name = args['<topic>']
    topic = app.topics.get(name) or _topic_named(app, name)
    client = admin.connect(settings.kafka_client(), settings.broker_timeout,
                           f'{app.name}-send')
    try:
        if name not in admin.partition_counts(client, [name]):
            raise UsageError(f'topic {name!r} does not exist')
    finally:
        client.close()
    producer = Producer(settings, f'{app.name}-send')
    outside.install()
    outside.OUTSIDE.use(app.name, producer)
    value = _parse_value(topic, args['<value>'])
    key = _typed_bytes(topic.key_codec, args['--key'])
    metadata = app.send(topic, key=key, value=value).get(settings.broker_timeout)
    producer.close(settings.broker_timeout)
    print(json.dumps({'topic': metadata.topic, 'partition': metadata.partition,
                      'offset': metadata.offset}))
    return EX_OK


def dlq_command(args: dict[str, Any]) -> int:
    """List an agent's dead letters, or send those not replayed yet back to their topic."""
    from .kafka.dead_letters import DeadLetters
    from .kafka.producer import Producer

    app, settings = _app_and_settings(args, 'dlq')
    agent = _agent_named(app, args['<agent>'])
    letters = DeadLetters(settings.kafka_client(), agent.dead_letter_topic.name,
                          f'{app.name}-dlq', settings.broker_timeout)
    try:
        if not args['--replay']:
            for letter in letters.read(only_new=False):
                print(letter.describe())
            return EX_OK
        producer = Producer(settings, f'{app.name}-dlq')
        try:
            sent, passed = letters.replay(producer, _unprocessable(app))
        finally:
            producer.close(settings.broker_timeout)
    finally:
        letters.close()
    for line in passed:
        print(f'runner: not replayed: {line}')
    over = f'; {len(passed)} cannot be processed (not replayed)' if passed else ''
    print(f'runner: sent {sent} dead letters of {agent.name} back to their topic{over}')
    return EX_OK


def _unprocessable(app: Any) -> Callable[[Any], str | None]:
    """Why a dead letter would only come back to the dead-letter topic if replayed (None
    if it may be processed now): a copy cut to fit, an output too large, or a value the
    topic's serializer still cannot decode."""
    def why(letter: Any) -> str | None:
        if 'cut' in letter.why:
            return f'its {letter.why["cut"]} was cut to fit the dead-letter topic'
        reason = letter.why.get('reason')
        if reason == 'refused':
            return 'an output of it was too large for the producer'
        topic = app.topics.get(letter.why.get('topic'))
        if reason == 'unreadable' and topic is not None:
            try:
                topic.value_codec.loads(letter.value)
            except ValueError:
                return 'its value still cannot be decoded'
        return None
    return why


def skip_command(args: dict[str, Any]) -> int:
    """Ask the slot that has the partition to skip the record it is stopped at."""
    from .kafka import admin
    from .runtime.web import get_json

    app, settings = _app_and_settings(args, 'skip')
    topic = args['<topic>']
    partition = _count(args['<partition>'], 'PARTITION')
    offset = _count(args['<offset>'], 'OFFSET')
    client = admin.connect(settings.kafka_client(), settings.broker_timeout, f'{app.name}-skip')
    try:
        web = admin.owner_web(client, app.name, topic, partition)
    finally:
        client.close()
    if web is None:
        raise NotRunning(f'no running slot of {app.name} has {topic}[{partition}]')
    query = urllib.parse.urlencode({'topic': topic, 'partition': partition, 'offset': offset})
    status, body = get_json(f'http://{web}/skip?{query}', settings.broker_timeout,
                            settings.web_token, method='POST')
    if status != 200:
        raise NotFinished((body or {}).get('error') or f'the slot at {web} did not answer')
    print(f'runner: skipped {body["skipped"]}: sent to the dead-letter topic of agent '
          f'{body["agents"]}; the partition goes on')
    return EX_OK


def _count(text: str, name: str) -> int:
    """A partition number or an offset given on the command line."""
    if not text.isdigit():
        raise UsageError(f'{name} must be a number, not {shown(text)}')
    return int(text)


def _agent_named(app: Any, name: str) -> Any:
    """The agent called ``name``, or whose function is; UsageError if none or several."""
    found = [agent for agent in app.agents if name == agent.name] or [
        agent for agent in app.agents if name == agent.fn.__name__]
    if len(found) != 1:
        names = ', '.join(agent.name for agent in app.agents) or 'none'
        how = 'several agents are' if found else 'no agent is'
        raise UsageError(f'{how} called {name!r} (agents: {names})')
    return found[0]


def _topic_named(app: Any, name: str) -> Any:
    """The topic ``name`` given on the command line, which must be a legal topic name."""
    try:
        return app.topic(name)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


#: How JSON text that is an object, an array or a string begins.
JSON_OPENERS = ('{', '[', '"')


def _parse_value(topic: Any, text: str | None) -> Any:
    """VALUE as the topic's serializer takes it: parsed if JSON, a bare word as text; text
    that begins as JSON (an object, an array, a string) must parse (DataError)."""
    if text is None or topic.value_codec.name != 'json':
        return _typed_bytes(topic.value_codec, text)
    try:
        return topic.value_codec.loads(os.fsencode(text))
    except ValueError as exc:
        if text.lstrip().startswith(JSON_OPENERS):
            raise DataError(f'VALUE is not valid JSON for topic {topic.name!r} (a JSON topic, '
                            f'nothing sent): {str(exc).removeprefix("not JSON: ")}') from None
        return text


def _typed_bytes(codec: Any, text: str | None) -> Any:
    """Command-line text as the bytes it was typed as for the raw and str serializers (which
    take bytes as they are), else the text."""
    return os.fsencode(text) if text is not None and codec.name in ('raw', 'str') else text


def status_command(args: dict[str, Any]) -> int:
    _, status = control.read_status(_pidfile_of(args))
    print(json.dumps(status, indent=1) if args['--json'] else control.format_status(status))
    return control.exit_code(status)


def lag_command(args: dict[str, Any]) -> int:
    """How far the app's consumer group is behind on each partition it reads."""
    from .kafka import admin

    app, settings = _app_and_settings(args, 'lag')
    rows = admin.group_lag(settings.kafka_client(), settings.broker_timeout, f'{app.name}-lag',
                           app.name, {agent.topic.name for agent in app.agents})
    if args['--json']:
        print(json.dumps(rows, indent=1))
    else:
        print(format_lag(rows, settings.processing_guarantee == 'exactly_once'))
    return EX_OK


def format_lag(rows: list[dict[str, Any]], exactly_once: bool) -> str:
    """The lag table: a line per partition, then a total per topic."""
    def shown_offset(value: int | None) -> str:
        return '-' if value is None else str(value)
    lines = [f'{"TOPIC":30} {"PARTITION":>9} {"COMMITTED":>12} {"END":>12} {"LAG":>10}']
    totals: dict[str, int] = {}
    for row in rows:
        lines.append(f'{row["topic"]:30} {row["partition"]:>9} '
                     f'{shown_offset(row["committed"]):>12} {row["end"]:>12} '
                     f'{shown_offset(row["lag"]):>10}')
        totals[row['topic']] = totals.get(row['topic'], 0) + (row['lag'] or 0)
    lines += [f'{topic:30} {"total":>9} {"":>12} {"":>12} {lag:>10}'
              for topic, lag in totals.items()]
    if exactly_once:
        lines.append('(exactly-once: end offsets count transaction markers, so a partition '
                     'read to its end can show a lag of a few)')
    return '\n'.join(lines)


def stop_command(args: dict[str, Any]) -> int:
    timeout = _timeout(args, 60.0)
    print(f'runner: {control.stop(_pidfile_of(args), args["--cold"], timeout)}')
    return EX_OK


def restart_command(args: dict[str, Any]) -> int:
    timeout = _timeout(args, 300.0)
    print(f'runner: {control.restart(_pidfile_of(args), timeout)}')
    return EX_OK


def _pidfile_of(args: dict[str, Any]) -> str:
    pidfile = load_options(args, need_app=False).pidfile
    if not pidfile:
        raise UsageError('give --pidfile (or pidfile: in the config file)')
    return pidfile


def _timeout(args: dict[str, Any], default: float) -> float:
    if args['--timeout'] is None:
        return default
    return positive_seconds(args['--timeout'], '--timeout', UsageError)


COMMANDS = {'send': send_command, 'dlq': dlq_command, 'skip': skip_command,
            'status': status_command, 'lag': lag_command, 'stop': stop_command,
            'restart': restart_command}


if __name__ == '__main__':
    raise SystemExit(main())
