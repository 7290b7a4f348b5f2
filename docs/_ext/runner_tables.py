"""Tables of the manual made from the code that defines what they list.

``.. runner-settings::`` is the table of settings, made from the fields of
:class:`runner.config.Settings` (their meaning, default and section to see), the
choices and secrets of :mod:`runner.config` and the options of :mod:`runner.cli`.
``.. runner-exit-codes::`` is the table of exit codes, made from
:data:`runner.errors.EXIT_CODES`.  Neither can disagree with the code: a setting or an
exit code without a meaning is an error of the build.
"""

import dataclasses
import re
from typing import Any

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.errors import ExtensionError
from sphinx.util.docutils import SphinxDirective

from runner import cli, config, errors


def option_names() -> dict[str, str]:
    """Each long option of ``runner --help`` with its short form before it, if any:
    ``{'--broker': '-b, --broker', ...}``."""
    found = re.findall(r'^\s+(?:(-\w) \S+, )?(--[\w-]+)', cli.__doc__, re.MULTILINE)
    return {long: f'{short}, {long}' if short else long for short, long in found}


def command_line(name: str, options: dict[str, str]) -> str:
    """How a setting is given besides ``App(...)`` and the config file."""
    if name in config.SECRET_VARIABLES:
        return f'``${config.SECRET_VARIABLES[name]}``'
    if name in cli.SETTING_OPTIONS:
        return ', '.join(f'``{part}``' for part in options[cli.SETTING_OPTIONS[name]].split(', '))
    return ''


def default_text(field: dataclasses.Field) -> str:
    """The default as the table gives it."""
    if field.metadata.get('default_text'):
        return field.metadata['default_text']
    value = field.default
    if value is None:
        return ''
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def meaning(name: str, field: dataclasses.Field) -> str:
    """What a setting is for: its meaning, its choices, whether it is secret, where to read
    more."""
    text = field.metadata.get('meaning', '').strip()
    if not text:
        raise ExtensionError(f'setting {name} has no meaning: give it one in runner/config.py')
    if name in config.CHOICES:
        text += ': ' + ', '.join(f'``{choice}``' for choice in config.CHOICES[name])
    if name in config.SECRETS:
        text += ' (secret)'
    if field.metadata.get('see'):
        text += f' (see :ref:`{field.metadata["see"]}`)'
    return text


def settings_rows() -> list[list[str]]:
    options = option_names()
    return [[f'``{name}``', command_line(name, options), default_text(field), meaning(name, field)]
            for name, field in config.FIELDS.items()]


def exit_code_rows() -> list[list[str]]:
    rows = []
    for code, described in sorted(errors.EXIT_CODES.items()):
        if not described.meaning.strip():
            raise ExtensionError(f'exit code {code} has no meaning: give it one in '
                                 'runner/errors.py')
        see = ', '.join(f':ref:`{label}`' for label in described.see)
        rows.append([str(code), described.meaning + (f' (see {see})' if see else '')])
    return rows


def list_table(header: list[str], rows: list[list[str]], widths: str) -> list[str]:
    """A ``list-table`` directive, as lines of reST."""
    lines = ['.. list-table::', '   :header-rows: 1', f'   :widths: {widths}', '']
    for row in [header, *rows]:
        lines.append(f'   * - {row[0]}')
        lines.extend(f'     - {cell}' for cell in row[1:])
    return lines


class TableDirective(SphinxDirective):
    """Parses the lines of a generated table in place."""

    def table_lines(self) -> list[str]:
        raise NotImplementedError

    def run(self) -> list[nodes.Node]:
        container = nodes.container()
        source = self.get_source_info()[0]
        self.state.nested_parse(StringList(self.table_lines(), source=source),
                                self.content_offset, container)
        return container.children


class SettingsTable(TableDirective):
    def table_lines(self) -> list[str]:
        return list_table(['setting', 'command line', 'default', 'meaning'], settings_rows(),
                          '20 22 18 40')


class ExitCodesTable(TableDirective):
    def table_lines(self) -> list[str]:
        return list_table(['code', 'meaning'], exit_code_rows(), '8 92')


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive('runner-settings', SettingsTable)
    app.add_directive('runner-exit-codes', ExitCodesTable)
    return {'parallel_read_safe': True, 'parallel_write_safe': True}
