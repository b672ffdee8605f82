"""A node configuration's structure errors as an operator reads them: one line each, where the key is
written in the file (`file:line:column`; a missing key at its table's header), the key's dotted name, and
plain words, values as TOML writes them (`_text.shown`); an unknown key as a blueprint's is told
(`_table_problems.unknown_key`: the one it may have meant, and the keys taken). Pure: no I/O.

cattrs says `required field missing @ config.ingress` and `extra fields found (ingres) @ config`; an
operator then looked for both keys by hand, and for the typo between them.
"""

from __future__ import annotations

import re
import typing
from typing import Any

import attrs
import cattrs

from ._blueprint_toml import TomlLocator
from ._table_problems import unknown_key
from ._text import shown

_ROOT = "config"
_AT = re.compile(r"^(?P<message>.*) @ (?P<path>[^ ]+)$", re.DOTALL)
_EXTRA = re.compile(r"^extra fields found \((?P<keys>.*)\)$")


def config_problems(
    error: cattrs.BaseValidationError, model: type, data: Any, *, text: str | None, source: str
) -> list[str]:
    """One line per problem in `error` (structuring `model` from `data`, read from the TOML `text` of
    file `source`; no text: flags, no positions), in the order of the file."""
    locate = TomlLocator(text) if text is not None else None
    found: list[tuple[int, int, str]] = []
    for said in cattrs.transform_error(error, path=_ROOT, format_exception=_format):
        match = _AT.match(said)
        message, path = (match["message"], match["path"]) if match else (said, _ROOT)
        keys = _dotted(path)
        extra = _EXTRA.match(message)
        if extra:
            for key in (k.strip() for k in extra["keys"].split(",")):
                found.append(_placed(locate, source, [*keys, key], unknown_key(key, _fields_at(model, keys))))
        else:
            message = _plain(message, model, keys)
            if message.startswith("expected "):
                message += f", got {_value_at(data, path)}"
            found.append(_placed(locate, source, keys, message))
    found.sort(key=lambda item: (item[0], item[1]))
    return [line for _, _, line in found]


def _format(error: BaseException, type_: Any) -> str:
    """cattrs's wording, but for a choice of values: those values."""
    if typing.get_origin(type_) is typing.Literal:
        return "expected one of " + ", ".join(shown(choice) for choice in typing.get_args(type_))
    return cattrs.v.format_exception(error, type_)


def _value_at(data: Any, path: str) -> str:
    """The value at `path` (`config.kv.endpoints[0]`) in `data`, as TOML writes it (`shown`); "?" where
    there is none."""
    value = data
    for part in re.findall(r"\.([^.\[]+)|\[(\d+)\]", path):
        key, index = part
        try:
            value = value[key] if key else value[int(index)]
        except (KeyError, IndexError, TypeError, ValueError):
            return "?"
    return shown(value)


def _dotted(path: str) -> list[str]:
    """`config.kv.endpoints[0]` → ["kv", "endpoints"]: the keys, without the list index."""
    parts = re.sub(r"\[[^\]]*\]", "", path).split(".")
    return [part for part in parts[1:] if part]


def _placed(locate: TomlLocator | None, source: str, keys: list[str], message: str) -> tuple[int, int, str]:
    name = ".".join(keys) or "the file"
    line = column = None
    if locate is not None and keys:
        line, column = locate.find(keys[-1], table=".".join(keys[:-1]) or None)
    where = source + (f":{line}:{column}" if line else "")
    return (line or 0, column or 0, f"{where}: {name}: {message}")


def _plain(message: str, model: type, keys: list[str]) -> str:
    if message == "required field missing":
        table = keys and _fields_at(model, keys)
        return f"missing: a [{'.'.join(keys)}] table is required" if table else "missing: it is required"
    expected = re.match(r"^invalid value for type, expected (?P<type>.+)$", message)
    if expected:
        return f"expected {_TYPE_WORDS.get(expected['type'], expected['type'])}"
    return message


_TYPE_WORDS = {
    "float": "a number",
    "int": "a whole number",
    "str": "a string",
    "bool": "true or false",
    "Path": "a path (a string)",
}


def _fields_at(model: type, keys: list[str]) -> tuple[str, ...]:
    """The keys the table at `keys` of `model` takes (its attrs fields), or () if it is no attrs class."""
    cls: Any = model
    for key in keys:
        if not attrs.has(cls):
            return ()
        hints = typing.get_type_hints(cls)
        cls = hints.get(key)
    return tuple(field.name for field in attrs.fields(cls)) if attrs.has(cls) else ()
