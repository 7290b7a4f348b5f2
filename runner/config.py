"""Settings: defaults, overridden by the App, then the config file, then the command line."""

import dataclasses
import math
import os
import ssl
from collections.abc import Hashable, Mapping
from typing import Any

import yaml

from .errors import ConfigError, shown, shown_name


def setting(default: Any, meaning: str, *, default_text: str | None = None,
            see: str | None = None, secret: bool = False) -> Any:
    """A field of :class:`Settings` with what the manual's table of settings says of it.

    ``meaning`` is one line of reStructuredText; ``default_text`` gives the default when
    the value alone would not say it; ``see`` is the label of the manual's section that
    says more.  A ``secret`` one is left out of the repr (see :data:`SECRETS`).  The table
    adds the command-line option and the choices from the definitions below.
    """
    return dataclasses.field(default=default, repr=not secret, metadata={
        'meaning': meaning, 'default_text': default_text, 'see': see})


@dataclasses.dataclass
class Settings:
    """Everything a slot needs to know besides the app's declarations.

    Times are in seconds.  ``max_inflight`` is how many fetched records a slot
    may hold queued (shared by its partitions) before fetching pauses;
    ``standby_replicas`` how many other slots keep a warm copy of each table
    partition (as many as there are other members, at most);
    ``table_cleanup_delay`` how long local state of a table partition this
    slot neither owns nor keeps as standby is kept before it is deleted.

    Rebalancing: ``assignor`` is ``cooperative`` (only the partitions that move
    stop) or ``eager`` (every rebalance revokes everything); with
    ``static_membership`` a slot rejoins its group under the identity kept in
    its data directory, so a restart within ``session_timeout`` moves nothing;
    a table partition moves to a slot only once that slot's copy is within
    ``acceptable_lag`` changelog records of the end (until then its old owner
    keeps it, and the newcomer warms a standby copy up).

    ``processing_guarantee``: ``at_least_once`` (a crash processes the records
    since the last commit again) or ``exactly_once`` (each commit is one Kafka
    transaction of the outputs, changelog records and source offsets; its
    ``commit_interval`` defaults to 0.1 s).

    Kafka: ``broker_timeout`` is how long a slot waits for a broker as it starts;
    ``commit_timeout`` how long a checkpoint waits for its records to be
    acknowledged, its offsets to be committed or its transaction to end, while
    the broker answers.  While no broker can be reached the slot keeps its
    state and waits (not ready); only after ``broker_outage_limit`` does it
    exit (69), and the main process starts it again.  ``max_request_size`` is
    the largest record (in bytes) the producers send: a larger output of an
    agent is refused (see :class:`runner.app.agents.Agent`).

    Liveness: a running slot whose heartbeat (its report to the main process,
    four a second) stops for ``heartbeat_timeout`` is killed, and so is one whose
    consumer loop has not come round for ``stall_timeout``.  That must exceed the
    longest legitimate round: a revocation (``revoke_timeout``, then up to 30 s for
    the producer's acknowledgements and 30 s for the offset commit) followed by a
    checkpoint (30 s + 30 s), 130 s with the defaults.  An agent thread that
    makes no progress for ``stuck_timeout`` while records wait for it (it is
    inside one record, or outside its stream with records queued) is stuck: the
    slot logs the thread's stack and stops (70) to be started again; the time
    Kafka is away does not count.
    The main process reads two settings from the config file and the command line
    only: ``import_timeout``, how long the app may take to import when it is
    checked (at start and on HUP), and ``ready_timeout``, how long the worker may
    go without a ready slot before systemd's watchdog is no longer pinged.

    Security: ``security_protocol``, ``sasl_*`` and ``ssl_*`` reach every Kafka client
    (see :meth:`kafka_client`); ``web_token``, when set, is the bearer token every web
    endpoint but ``/health`` asks for.  Secrets (:data:`SECRETS`) are left out of the
    repr and never quoted in an error.
    """

    broker: str = setting('kafka://localhost:9092',
                          '``kafka://host:port`` or ``host:port,host:port``')
    datadir: str | None = setting(None, 'slot *i* uses ``DATADIR/slot-i``',
                                  default_text='``./NAME-data``')
    web_host: str = setting('127.0.0.1', "address the slots' web servers bind to")
    web_port: int = setting(6066, 'port of slot 0; slot *i* uses ``web_port+i``')
    web_advertise: str | None = setting(
        None, '``HOST[:PORT]`` other members reach a slot at (with a port, slot *i* '
        'advertises ``PORT+i``)', see='tables',
        default_text='``web_host``; for a wildcard bind, the address this host reaches the '
        'broker from')
    loglevel: str = setting('info', 'how much the log says')
    logfile: str | None = setting(None, "log file; ``%i`` in it: the slot's number (the main "
                                  "process's has ``main``)", default_text='stderr',
                                  see='logs-and-progress')
    log_format: str = setting('text', '``json``: one JSON object per line',
                              see='logs-and-progress')
    broker_timeout: float = setting(30.0, 'seconds to wait for a broker at start')
    commit_interval: float = setting(2.0, 'seconds between commits',
                                     default_text='2 (0.1 under exactly-once)')
    session_timeout: float = setting(10.0, 'consumer group session timeout, seconds (at least 1)',
                                     see='rebalancing')
    revoke_timeout: float = setting(10.0, 'seconds a revoked partition may finish')
    graceful_timeout: float = setting(30.0, 'seconds a warm stop may take', see='stopping')
    max_inflight: int = setting(10000, 'fetched records a slot may hold queued before '
                                'fetching pauses', see='processing-guarantees')
    topic_partitions: int = setting(8, 'partitions of topics created without a count')
    replication_factor: int = setting(-1, "of created topics; -1: the broker's default")
    standby_replicas: int = setting(1, 'other slots keeping a warm copy of each table '
                                    'partition', see='tables')
    table_cleanup_delay: float = setting(600.0, 'seconds unused local table state is kept')
    heartbeat_timeout: float = setting(5.0, 'seconds (at least 1) a running slot may go '
                                       'without a heartbeat', see='crash-restarts')
    stall_timeout: float = setting(150.0, "seconds (at least 1) a slot's consumer loop may go "
                                   'without a round', see='crash-restarts')
    stuck_timeout: float = setting(300.0, 'seconds (at least 1) an agent thread may go '
                                   "without progress while records wait, or a timer's tick "
                                   'may run', see='records-that-fail')
    import_timeout: float = setting(60.0, 'seconds the app check, and each slot, may take to '
                                    'load the app; main process only', see='starting')
    ready_timeout: float = setting(300.0, 'seconds without a ready slot before the watchdog '
                                   'stops; main process only', see='systemd')
    assignor: str = setting('cooperative', 'how partitions move in a rebalance',
                            see='rebalancing')
    static_membership: bool = setting(True, 'rejoin under the identity in the data '
                                      'directory', see='rebalancing')
    acceptable_lag: int = setting(10000, 'changelog records a copy may lag and still take '
                                  'its partition over', see='rebalancing')
    processing_guarantee: str = setting('at_least_once', 'what a crash may repeat',
                                        see='processing-guarantees')
    commit_timeout: float = setting(30.0, 'seconds a checkpoint waits for acknowledgements, '
                                    'a commit or a transaction while Kafka answers')
    broker_outage_limit: float = setting(300.0, 'seconds a slot waits for an unreachable '
                                         'Kafka before it exits (69) and is started again',
                                         see='broker-outages')
    max_request_size: int = setting(1048576, 'largest record the producers send, in bytes; '
                                    'a larger output is dead-lettered',
                                    see='records-that-fail')
    security_protocol: str = setting('PLAINTEXT', 'how the Kafka clients connect',
                                     see='security')
    sasl_mechanism: str = setting('PLAIN', 'the SASL login', see='security')
    sasl_username: str | None = setting(None, 'the SASL user')
    sasl_password: str | None = setting(None, 'its password', secret=True)
    ssl_cafile: str | None = setting(None, "PEM file of the CAs that sign the brokers' "
                                     'certificates', default_text="the system's CAs")
    ssl_certfile: str | None = setting(None, 'PEM file of the client certificate')
    ssl_keyfile: str | None = setting(None, 'PEM file of its private key (else it is in '
                                      '``ssl_certfile``)')
    ssl_password: str | None = setting(None, 'password of that key', secret=True)
    ssl_check_hostname: bool = setting(True, "check that a broker's certificate names its "
                                       'host')
    web_token: str | None = setting(None, 'bearer token the web endpoints ask for',
                                    see='security', secret=True)

    def bootstrap_servers(self) -> list[str]:
        """The broker URL(s) as ``host:port`` strings."""
        return parse_broker_url(self.broker)

    def kafka_client(self) -> dict[str, Any]:
        """The keyword arguments every kafka-python client of runner is built with: the
        bootstrap servers and the security settings."""
        return {'bootstrap_servers': self.bootstrap_servers(),
                'security_protocol': self.security_protocol,
                'sasl_mechanism': self.sasl_mechanism if 'SASL' in self.security_protocol
                else None,
                'sasl_plain_username': self.sasl_username,
                'sasl_plain_password': self.sasl_password,
                'ssl_cafile': self.ssl_cafile, 'ssl_certfile': self.ssl_certfile,
                'ssl_keyfile': self.ssl_keyfile, 'ssl_password': self.ssl_password,
                'ssl_check_hostname': self.ssl_check_hostname,
                'reconnect_backoff_max_ms': RECONNECT_BACKOFF_MAX_MS}

    def secrets(self) -> list[str]:
        """The values of the secret settings that are set."""
        return [value for name in SECRETS if (value := getattr(self, name))]


#: The longest pause between two attempts of a client to reconnect to a broker
#: (kafka-python's default, 30 s, would keep a slot idle that long after an outage ends).
RECONNECT_BACKOFF_MAX_MS = 1000
FIELDS = {field.name: field for field in dataclasses.fields(Settings)}
LOGLEVELS = ('debug', 'info', 'warning', 'error', 'critical')
LOG_FORMATS = ('text', 'json')
ASSIGNORS = ('cooperative', 'eager')
GUARANTEES = ('at_least_once', 'exactly_once')
#: The commit interval under exactly-once when none is given: outputs of a transaction
#: become visible to ``read_committed`` readers only when it commits.
EXACTLY_ONCE_COMMIT_INTERVAL = 0.1
SECURITY_PROTOCOLS = ('PLAINTEXT', 'SSL', 'SASL_PLAINTEXT', 'SASL_SSL')
SASL_MECHANISMS = ('PLAIN', 'SCRAM-SHA-256', 'SCRAM-SHA-512')
CHOICES = {'loglevel': LOGLEVELS, 'log_format': LOG_FORMATS, 'assignor': ASSIGNORS,
           'processing_guarantee': GUARANTEES, 'security_protocol': SECURITY_PROTOCOLS,
           'sasl_mechanism': SASL_MECHANISMS}
#: Settings whose values are never shown: not in a repr, an error message or a log line.
SECRETS = tuple(name for name, field in FIELDS.items() if not field.repr)
#: Settings that name a file the Kafka clients read.
FILES = ('ssl_cafile', 'ssl_certfile', 'ssl_keyfile')
#: Environment variables that give secrets (never on the command line, where ``ps`` shows
#: them); they win over the config file, like the command line.
SECRET_VARIABLES = {'sasl_password': 'RUNNER_SASL_PASSWORD',
                    'ssl_password': 'RUNNER_SSL_PASSWORD', 'web_token': 'RUNNER_WEB_TOKEN'}
#: The longest time a setting in seconds may give (a year): every wait of the runner and
#: of kafka-python can be that long (``threading.TIMEOUT_MAX`` is far longer).
MAX_SECONDS = 365 * 24 * 3600.0
#: The shortest time a setting in seconds may give: one that reaches Kafka in whole
#: milliseconds (session, broker and commit timeouts) would be 0 below it, and no wait
#: of the runner is shorter.
MIN_SECONDS = 0.001
#: Settings in seconds that the runner checks in rounds, the least each may be, and why.
SECONDS_FLOORS = {
    'session_timeout': (1.0, 'the consumer heartbeats every 0.1 s at the least'),
    'heartbeat_timeout': (1.0, 'a slot reports four times a second'),
    'stall_timeout': (1.0, 'the consumer loop polls for 0.1 s in each round'),
    'stuck_timeout': (1.0, 'agents are looked at four times a second'),
}
#: Settings in seconds that reach Kafka as 32-bit milliseconds, and their maximum.
SECONDS_LIMITS = {'session_timeout': (2 ** 31 - 1) // 1000}
#: The largest value of each whole-number setting: what Kafka's protocol carries for it
#: (partition counts and sizes in 32 bits, a replication factor in 16, offsets in 64).
INTEGER_LIMITS = {'topic_partitions': 2 ** 31 - 1, 'replication_factor': 2 ** 15 - 1,
                  'max_request_size': 2 ** 31 - 1, 'max_inflight': 2 ** 31 - 1,
                  'standby_replicas': 2 ** 31 - 1, 'acceptable_lag': 2 ** 63 - 1}
#: The largest config file read: settings fit in a few kilobytes, and PyYAML takes about
#: a second per megabyte.
MAX_CONFIG_BYTES = 1024 * 1024
TRUE = ('true', 'yes', 'on', '1')
FALSE = ('false', 'no', 'off', '0')


def parse_broker_url(url: str) -> list[str]:
    """``kafka://h1:9092;kafka://h2`` or ``h1:9092,h2`` → ``['h1:9092', 'h2:9092']``."""
    servers = []
    for item in str(url).replace(';', ',').split(','):
        item = item.strip()
        item = item.removeprefix('kafka://')
        item = item.rstrip('/')
        if not item:
            continue
        if '@' in item:         # never echoed: it may hold a password
            raise ConfigError('a broker address takes no user name or password')
        host, _, port = item.rpartition(':') if ':' in item else (item, '', '9092')
        if not host or not port.isdigit():
            raise ConfigError(f'invalid broker address {shown(item)}: expected host:port')
        servers.append(f'{host}:{port}')
    if not servers:
        raise ConfigError(f'invalid broker URL {shown(url)}')
    return servers


def normalize_key(key: str) -> str:
    return str(key).replace('-', '_')


def coerce(name: str, value: Any) -> Any:
    """Convert ``value`` to the type of setting ``name``; raise ValueError if it does not fit."""
    kind = FIELDS[name].type
    if kind is bool:
        return _boolean(value)
    if value is None or isinstance(value, bool):
        raise ValueError('needs a value')
    if kind is int:
        return _integer(name, value)
    if kind is float:
        return _seconds(name, value)
    if name in CHOICES:
        return _choice(CHOICES[name], value)
    return _text(name, value)


def _text(name: str, value: Any) -> str:
    """``value`` as the text of setting ``name``, checked as that setting needs."""
    if isinstance(value, (list, dict)):
        raise TypeError('expected text')
    if '\0' in str(value):
        raise ValueError('contains a NUL byte')
    if name == 'broker':
        parse_broker_url(value)
    if name == 'web_advertise':
        _reachable_address(str(value))
    if name in FILES:
        _readable(str(value))
    return str(value)


def _choice(choices: tuple[str, ...], value: Any) -> str:
    """The one of ``choices`` that ``value`` names, whatever its case, ``-`` or ``_``."""
    def plain(text: str) -> str:
        return text.lower().replace('-', '_')
    for choice in choices:
        if plain(choice) == plain(str(value)):
            return choice
    raise ValueError(f'choose from {", ".join(choices)}')


def _readable(path: str) -> None:
    try:
        with open(path, 'rb'):
            pass
    except OSError as exc:
        raise ValueError(f'cannot read it: {exc.strerror}') from None


def split_host_port(text: str) -> tuple[str, int | None]:
    """``HOST``, ``HOST:PORT``, ``[IPv6]:PORT`` or a bare IPv6 address → (host, port or None);
    ValueError if it is none of them."""
    if text.startswith('['):
        host, bracket, rest = text[1:].partition(']')
        port = rest[1:] if rest.startswith(':') else None
        if not bracket or (rest and port is None):
            raise ValueError('expected HOST or HOST:PORT')
    elif text.count(':') == 1:
        host, port = text.split(':')
    else:
        host, port = text, None
    if not host or any(c.isspace() or c in '/?#@[]' for c in host) or (
            port is not None and not (port.isdigit() and 1 <= int(port) <= 65535)):
        raise ValueError('expected HOST or HOST:PORT')
    return host, None if port is None else int(port)


def _reachable_address(text: str) -> None:
    """ValueError unless ``text`` is a ``HOST[:PORT]`` that other members can reach."""
    host, _ = split_host_port(text)
    if host in ('0.0.0.0', '::', '::0', '0:0:0:0:0:0:0:0'):
        raise ValueError('a wildcard address cannot be reached; give the address other '
                         'members reach this slot at')


def join_host_port(host: str, port: int) -> str:
    """``host:port``, with an IPv6 address in brackets."""
    return f'[{host}]:{port}' if ':' in host else f'{host}:{port}'


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).lower()
    if text not in TRUE + FALSE:
        raise ValueError('must be true or false')
    return text in TRUE


def _number(value: Any, kind: type, expected: str) -> Any:
    """``value`` as an int or float, else a ValueError that does not quote it."""
    if kind is int and isinstance(value, float) and not value.is_integer():
        raise ValueError(expected)
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ValueError(expected) from None


def _seconds(name: str, value: Any) -> float:
    number = _number(value, float, 'expected seconds')
    if not 0 < number < math.inf:
        raise ValueError('must be a positive number of seconds')
    least, why = SECONDS_FLOORS.get(name, (MIN_SECONDS, None))
    if number < least:
        raise ValueError(f'at least {least:g} second{"s" if least != 1 else ""}'
                         + (f' ({why})' if why else ''))
    most = SECONDS_LIMITS.get(name, MAX_SECONDS)
    if number > most:
        raise ValueError(f'at most {most:.0f} seconds')
    return number


def _integer(name: str, value: Any) -> int:
    number = _number(value, int, 'expected a whole number')
    most = INTEGER_LIMITS.get(name)
    if most is not None and number > most:
        raise ValueError(f'at most {most}')
    if name == 'web_port' and not 0 <= number <= 65535:
        raise ValueError('not a port number')
    if name == 'replication_factor' and not (number == -1 or number >= 1):
        raise ValueError('must be -1 (broker default) or at least 1')
    if name in ('max_inflight', 'topic_partitions') and number < 1:
        raise ValueError('must be at least 1')
    if name == 'max_request_size' and number < 1024:
        raise ValueError('must be at least 1024 bytes')
    if name in ('standby_replicas', 'acceptable_lag') and number < 0:
        raise ValueError('must be 0 or more')
    return number


def build(app_settings: Mapping[str, Any], file_settings: Mapping[str, Any],
          cli_settings: Mapping[str, Any]) -> Settings:
    """Merge the three sources, later ones winning (``None`` means "not given"), and check
    that the security settings go together."""
    settings = _merge(app_settings, file_settings, cli_settings)
    _check_security(settings)
    return settings


def _merge(*sources: Mapping[str, Any]) -> Settings:
    merged: dict[str, Any] = {}
    for source in sources:
        merged.update({key: value for key, value in source.items() if value is not None})
    if merged.get('processing_guarantee') == 'exactly_once':
        merged.setdefault('commit_interval', EXACTLY_ONCE_COMMIT_INTERVAL)
    return Settings(**merged)


def _check_security(settings: Settings) -> None:
    """The security settings, taken together, must make sense."""
    protocol = settings.security_protocol
    if 'SASL' in protocol and not (settings.sasl_username and settings.sasl_password):
        raise ConfigError(f'security_protocol {protocol} needs sasl_username and sasl_password')
    if 'SSL' in protocol:
        _check_tls_files(settings)


def _check_tls_files(settings: Settings) -> None:
    """Load the CA and client certificates as the clients will, so a bad file or key
    password is one line now (never OpenSSL's prompt for a password on the terminal)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        if settings.ssl_cafile:
            context.load_verify_locations(settings.ssl_cafile)
    except (ssl.SSLError, OSError):
        raise ConfigError(f'ssl_cafile {settings.ssl_cafile} holds no PEM certificate') from None
    try:
        if settings.ssl_certfile:
            context.load_cert_chain(settings.ssl_certfile, settings.ssl_keyfile,
                                    settings.ssl_password or '')
    except (ssl.SSLError, OSError):
        raise ConfigError('cannot load the client certificate (ssl_certfile, ssl_keyfile): '
                          'not PEM, a key of another certificate, or a wrong ssl_password'
                          ) from None


def check_settings(values: Mapping[str, Any], origin: str,
                   error: type[Exception] = ConfigError) -> dict[str, Any]:
    """Validate and convert settings from ``origin``; unknown names are errors."""
    checked = {}
    for key, value in values.items():
        name = normalize_key(key)
        if name not in FIELDS:
            raise error(f'unknown setting {shown(key)} in {origin}')
        try:
            checked[name] = coerce(name, value)
        except (TypeError, ValueError, ConfigError) as exc:
            quoted = '(secret)' if name in SECRETS else shown(value, 200 if name in FILES else 60)
            raise error(f'invalid {key} {quoted} in {origin}: {exc}') from None
    return checked


def secrets_from_environment(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The secret settings given by their environment variables (empty ones are not given)."""
    return {name: environ[variable] for name, variable in SECRET_VARIABLES.items()
            if environ.get(variable)}


class _ConfigLoader(yaml.SafeLoader):
    """YAML without aliases (a config file needs none, and a few nested ones expand to
    gigabytes: the "billion laughs"), and without a key given twice in one mapping
    (``web_port`` and ``web-port`` are the same key), which YAML would let the last win."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(None, None, 'aliases (*name) are not allowed',
                                              self.peek_event().start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            same = normalize_key(key) if isinstance(key, str) else key
            if isinstance(same, Hashable) and same in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f'duplicate key {shown(key)}', key_node.start_mark)
            seen.add(same)
        return super().construct_mapping(node, deep)


def load_file(path: str) -> dict[str, Any]:
    """Read a YAML config file (at most :data:`MAX_CONFIG_BYTES`) into a dict of raw
    (unchecked) values."""
    name = shown_name(path)
    if '\0' in path:
        raise ConfigError(f'cannot read config file {name}: contains a NUL byte')
    try:
        with open(path, 'rb') as handle:
            text = handle.read(MAX_CONFIG_BYTES + 1)
        if len(text) > MAX_CONFIG_BYTES:
            raise ConfigError(f'config file {name} is larger than '
                              f'{MAX_CONFIG_BYTES // 1024 // 1024} MiB')
        data = yaml.load(text.decode('utf-8'), Loader=_ConfigLoader)
    except OSError as exc:
        raise ConfigError(f'cannot read config file {name}: {exc.strerror}') from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f'config file {name} is not UTF-8 text (byte {exc.start})') from None
    except (yaml.YAMLError, ValueError, LookupError, AttributeError, TypeError,
            RecursionError) as exc:
        raise ConfigError(f'bad YAML in config file {name}{_yaml_problem(exc)}') from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f'config file {name} must hold a mapping of settings')
    return data


def _yaml_problem(exc: Exception) -> str:
    """Where and why PyYAML failed.  Besides YAMLError its composer raises RecursionError
    (deep nesting) and its constructors plain errors for some values: ``2024-13-01``,
    ``!!int x``, ``!!float ''`` (IndexError), ``!!timestamp ''`` (AttributeError)."""
    if isinstance(exc, yaml.YAMLError):
        mark = getattr(exc, 'problem_mark', None)
        where = f' at line {mark.line + 1}' if mark else ''
        return f'{where}: {shown_name(getattr(exc, "problem", None) or "invalid YAML", 100)}'
    if isinstance(exc, RecursionError):
        return ': nested too deeply'
    reason = str(exc).split(':')[0] if isinstance(exc, ValueError) else type(exc).__name__
    return f': a value it cannot read ({reason})'


#: The settings that say where a slot's web server listens (see :meth:`Options.web_address`).
WEB_ADDRESS_KEYS = ('web_host', 'web_port')
#: Config-file keys that belong to the main process rather than to a slot.
SUPERVISOR_KEYS = ('app', 'workers', 'workers_max', 'pidfile', 'metrics_targets', 'slots')
#: Slots per CPU a worker may have unless ``--workers-max`` says otherwise.
WORKERS_PER_CPU = 4


def default_workers_max() -> int:
    """The most slots a worker may have by default: :data:`WORKERS_PER_CPU` per CPU this
    process may run on."""
    return WORKERS_PER_CPU * len(os.sched_getaffinity(0))


@dataclasses.dataclass
class Options:
    """What the command line and the config file say, before the app is imported.

    The main process works from these alone; each slot imports the app and
    turns them into its :class:`Settings` with :meth:`settings_for`.
    """

    app: str
    workers: int = 1
    workers_max: int = dataclasses.field(default_factory=default_workers_max)
    pidfile: str | None = None
    metrics_targets: str | None = None      # the Prometheus file_sd targets file
    cli: dict[str, Any] = dataclasses.field(default_factory=dict)
    file: dict[str, Any] = dataclasses.field(default_factory=dict)
    per_slot: dict[int, dict[str, Any]] = dataclasses.field(default_factory=dict)

    def settings_for(self, app_settings: Mapping[str, Any], index: int) -> Settings:
        """Slot ``index``'s settings; its port (and the port it advertises, if one is given)
        is the base port + index unless set for it."""
        overrides = self.per_slot.get(index, {})
        settings = build(app_settings, {**self.file, **overrides}, self.cli)
        settings.web_port = self._slot_port(settings.web_port, index)
        if settings.web_advertise and (
                'web_advertise' in self.cli or 'web_advertise' not in overrides):
            host, port = split_host_port(settings.web_advertise)
            if port is not None:
                settings.web_advertise = join_host_port(host, port + index)
        return settings

    def web_address(self, app_settings: Mapping[str, Any], index: int) -> tuple[str, int]:
        """Where slot ``index``'s web server listens (as :meth:`settings_for` says), from
        the app's settings (only its web settings are looked at)."""
        settings = _merge(app_settings, {**self.file, **self.per_slot.get(index, {})}, self.cli)
        return settings.web_host, self._slot_port(settings.web_port, index)

    def _slot_port(self, port: int, index: int) -> int:
        """Slot ``index``'s port: the base ``port`` + index unless set for the slot (port 0,
        any free port, stays 0)."""
        if 'web_port' in self.cli or 'web_port' not in self.per_slot.get(index, {}):
            return port + index if port else 0
        return port

    def base_settings(self) -> Settings:
        """Settings as far as the main process knows them (without the App's, so the
        security settings, which may be completed there, are not checked)."""
        return _merge(self.file, self.cli)


def slot_overrides(values: Any, origin: str) -> dict[int, dict[str, Any]]:
    """``slots: {1: {web_port: 7001}}`` from a config file, checked."""
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f'slots in {origin} must map slot numbers to settings')
    overrides = {}
    for index, settings in values.items():
        if not isinstance(index, int) or index < 0 or not isinstance(settings, dict):
            raise ConfigError(f'slots in {origin}: {shown(index)} must be a slot number '
                              'with a mapping of settings')
        overrides[index] = check_settings(settings, f'{origin} (slot {shown(index)})')
    return overrides


def positive_int(value: Any, what: str, error: type[Exception]) -> int:
    try:
        number = _number(value, int, 'expected a whole number')
    except ValueError as exc:
        raise error(f'invalid {what} {shown(value)}: {exc}') from None
    if number < 1 or isinstance(value, bool):
        raise error(f'invalid {what} {shown(value)}: must be at least 1')
    return number


def positive_seconds(value: Any, what: str, error: type[Exception]) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise error(f'invalid {what} {shown(value)}: expected seconds') from None
    if not seconds > 0:
        raise error(f'invalid {what} {shown(value)}: must be positive')
    if seconds < MIN_SECONDS:
        raise error(f'invalid {what} {shown(value)}: at least {MIN_SECONDS:g} seconds')
    if seconds > MAX_SECONDS:
        raise error(f'invalid {what} {shown(value)}: at most {MAX_SECONDS:.0f} seconds')
    return seconds
