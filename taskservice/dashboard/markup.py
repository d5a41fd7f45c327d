"""HTML without a template engine: every value is escaped unless it is already ``Markup``.

Templates are ``.html`` files next to this module with ``$name`` placeholders
(``string.Template``); ``render`` escapes each value, so a task name, an error message or an
argument can never become markup. Fragments built in Python go through ``html(...)``, which
escapes the same way.
"""

from __future__ import annotations

import functools
import html as html_module
import string
from collections.abc import Iterable
from importlib import resources
from typing import Any


class Markup(str):
    """Text that is already safe HTML (built by ``html``/``render``, or a literal of ours)."""

    __slots__ = ()


def escape(value: Any) -> Markup:
    """``value`` as HTML text; ``Markup`` passes through, ``None`` is empty."""
    if isinstance(value, Markup):
        return value
    if value is None:
        return Markup("")
    return Markup(html_module.escape(str(value), quote=True))


def html(template: str, /, **values: Any) -> Markup:
    """A fragment: ``template`` is our own literal with ``$name`` placeholders; every value is escaped."""
    return Markup(string.Template(template).substitute({key: escape(value) for key, value in values.items()}))


def join(parts: Iterable[Markup], separator: str = "") -> Markup:
    return Markup(separator.join(escape(part) for part in parts))


@functools.cache
def _template(name: str) -> string.Template:
    text = resources.files("taskservice.dashboard").joinpath("templates", name).read_text("utf-8")
    return string.Template(text)


def render(name: str, /, **values: Any) -> Markup:
    """The template file ``name`` with every value escaped."""
    return Markup(_template(name).substitute({key: escape(value) for key, value in values.items()}))
