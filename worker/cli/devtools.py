"""`orch upstream-sim`: the development tools that run as commands."""

from __future__ import annotations

from typing import Any

from worker.cli.common import Context, to_int


def cmd_upstream_sim(ctx: Context) -> int:
    from worker.devtools import upstream_sim

    argv = ["--port", str(ctx.args.port), "--host", ctx.args.host]
    if ctx.args.config:
        argv += ["--config", ctx.args.config]
    return upstream_sim.main(argv)


def register(sub: Any) -> None:
    us = sub.add_parser("upstream-sim", help="run the upstream simulator (throttling, 5xx, slow, drifting feeds)")
    us.add_argument("--port", type=to_int, default=8599, help="port to listen on (default 8599; 0: any free one)")
    us.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    us.add_argument("--config", help="JSON file: feed name -> settings (see the simulator's docstring)")
    us.set_defaults(fn=cmd_upstream_sim)
