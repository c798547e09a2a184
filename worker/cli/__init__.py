"""`orch`: the command line, one module per command group (jobs, runs, schedules, flow,
access, processes, up, incidents, events, api, bundles, devtools), each registering its commands on the parser
built here. Commands are thin over core.control and core.queries; errors print one line
that says what to fix, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

import sqlalchemy as sa

from core.domain import errors
from worker.cli import access, api, bundles, devtools, events, flow, incidents, jobs, processes, runs, schedules, up
from worker.cli.common import EXIT_CODES, Context

GROUPS = (jobs, runs, schedules, access, processes, up, flow, incidents, events, api, bundles, devtools)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="orch", description="Orch: source and job orchestrator")
    p.add_argument("--token", help="API token (default: ORCH_TOKEN; none: the local principal)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> NoReturn:
    args = build_parser().parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="orch: %(levelname)s: %(message)s")
    fn: Callable[[Context], int] = args.fn
    try:
        code = fn(Context(args))
    except KeyboardInterrupt:
        code = 130
    except errors.OrchError as exc:
        code = next(c for t, c in EXIT_CODES if isinstance(exc, t))
        print(f"orch: error: {exc}", file=sys.stderr)
    except sa.exc.OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc).splitlines()[0]
        print(f"orch: error: the ledger is unavailable: {reason} (check ORCH_DATABASE_URL)", file=sys.stderr)
        code = 6
    except sa.exc.ProgrammingError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc).splitlines()[0]
        print(f"orch: error: {reason} (has `orch db upgrade` been run?)", file=sys.stderr)
        code = 2
    sys.stdout.flush()
    sys.exit(code)
