"""The ledger's SQL files (package data under core/ledger/sql/): named statements, and the
frozen versions of every database function that migrations install.

- `sql/statements/*.sql`: statements under `-- name: NAME` headers, each called by the
  Python function of the same name (procrastinate's habit), so a line of a slow-query log
  leads to its code by one grep.
- `sql/functions/NAME.vN.sql`: version N of function NAME. A migration installs a version
  by file name; a landed version is never edited: a change is version N+1 and a new
  migration that installs it (docs/adr/0011-sql-lives-in-versioned-files.md).

Files are read on first use, never at import.
"""

from __future__ import annotations

import functools
import re
from importlib import resources
from importlib.resources.abc import Traversable

_HEADER = re.compile(r"^-- name: ([a-z_][a-z0-9_]*)\s*$", re.M)
_VERSION = re.compile(r"^([a-z_][a-z0-9_]*)\.v([0-9]+)\.sql$")


def _dir(*parts: str) -> Traversable:
    return resources.files("core.ledger").joinpath("sql", *parts)


def _strip(body: str) -> str:
    """The statement without its leading comment lines and trailing semicolon."""
    lines = body.strip().splitlines()
    while lines and lines[0].startswith("--"):
        lines.pop(0)
    return "\n".join(lines).strip().removesuffix(";").rstrip()


def parse(text: str) -> dict[str, str]:
    """{name: statement} of a statements file. Raises ValueError for a name used twice."""
    out: dict[str, str] = {}
    parts = _HEADER.split(text)
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in out:
            raise ValueError(f"statement {name!r} is defined twice")
        out[name] = _strip(body)
    return out


@functools.cache
def statements() -> dict[str, str]:
    """Every named statement of sql/statements/*.sql. Raises ValueError for a name defined twice."""
    out: dict[str, str] = {}
    for entry in sorted(_dir("statements").iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".sql"):
            continue
        for name, body in parse(entry.read_text(encoding="utf-8")).items():
            if name in out:
                raise ValueError(f"statement {name!r} is defined in two files")
            out[name] = body
    return out


def statement(name: str) -> str:
    """The text of statement `name`. Raises KeyError naming it."""
    try:
        return statements()[name]
    except KeyError:
        raise KeyError(f"no statement {name!r} in core/ledger/sql/statements") from None


def function(name: str, version: int) -> str:
    """The SQL that installs version `version` of function `name` (CREATE OR REPLACE ...).
    Raises FileNotFoundError."""
    path = _dir("functions", f"{name}.v{version}.sql")
    if not path.is_file():
        raise FileNotFoundError(f"core/ledger/sql/functions/{name}.v{version}.sql")
    return path.read_text(encoding="utf-8")


def function_versions() -> dict[str, list[int]]:
    """{function name: its versions, oldest first}."""
    out: dict[str, list[int]] = {}
    for entry in _dir("functions").iterdir():
        m = _VERSION.match(entry.name)
        if m:
            out.setdefault(m.group(1), []).append(int(m.group(2)))
    return {name: sorted(v) for name, v in sorted(out.items())}


def newest_functions() -> dict[str, str]:
    """{function name: the SQL of its newest version}: what a ledger at head must hold."""
    return {name: function(name, versions[-1]) for name, versions in function_versions().items()}


_BODY = re.compile(r"\$fn\$(.*)\$fn\$", re.S)


def function_body(sql_text: str) -> str:
    """The body between the $fn$ quotes of a function file (what pg_proc.prosrc holds).
    Raises ValueError when there is none."""
    m = _BODY.search(sql_text)
    if m is None:
        raise ValueError("no $fn$-quoted body")
    return m.group(1)
