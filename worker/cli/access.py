"""`orch tokens | audit`: API tokens and the hash-chained audit log."""

from __future__ import annotations

import sys
from typing import Any

from core import control, queries
from core.domain import auth
from worker.cli.common import Context, add_json, add_limit, add_tenant, print_json, table


def cmd_tokens_create(ctx: Context) -> int:
    a = ctx.args
    tenants = None if a.tenants in (None, "*") else frozenset(t.strip() for t in a.tenants.split(",") if t.strip())
    token = control.create_token(
        ctx.engine,
        ctx.principal,
        subject=a.subject,
        scopes=auth.parse_scopes(a.scopes),
        tenants=tenants,
        reason=a.reason,
    )
    if a.json:
        print_json({"token": token, "subject": a.subject})
    else:
        print(token)
        print("(shown once: store it now; give it as ORCH_TOKEN or --token)", file=sys.stderr)
    return 0


AUDIT_COLUMNS = ["id", "at", "subject", "action", "target", "tenant", "reason", "ticket"]


def cmd_audit_list(ctx: Context) -> int:
    a = ctx.args
    with ctx.engine.connect() as conn:
        rows = queries.audit_log(conn, ctx.principal, tenant=a.tenant, action=a.action, limit=a.limit)
    if a.json:
        print_json({"entries": rows})
    else:
        table(rows, AUDIT_COLUMNS)
    return 0


def cmd_audit_verify(ctx: Context) -> int:
    with ctx.engine.connect() as conn:
        verdict = queries.verify_audit(conn, ctx.principal)
    if ctx.args.json:
        print_json(verdict)
    if verdict["ok"]:
        if not ctx.args.json:
            print(
                f"audit log intact: {verdict['rows']} rows in {verdict['chains']} chain(s), every hash chain verified"
            )
        return 0
    print(
        f"orch: error: audit log broken at row {verdict['first_bad_id']}"
        f" (chain {verdict['chain']}): {verdict['problem']}",
        file=sys.stderr,
    )
    return 1


def register(sub: Any) -> None:
    tok = sub.add_parser("tokens", help="API tokens").add_subparsers(dest="tokens_command", required=True)
    tc = tok.add_parser("create", help="create a token (printed once)")
    tc.add_argument("--subject", required=True, help="who the token is for, e.g. ci or alice")
    tc.add_argument("--scopes", required=True, help="comma-separated, e.g. orch:read,orch:operate")
    tc.add_argument("--tenants", help="comma-separated tenants; omit or '*' for every tenant")
    tc.add_argument("--reason", help="why, for the audit log (at most 256 characters)")
    add_json(tc)
    tc.set_defaults(fn=cmd_tokens_create)

    aud = sub.add_parser("audit", help="the audit log").add_subparsers(dest="audit_command", required=True)
    al = aud.add_parser("list", help="newest entries first")
    add_tenant(al)
    al.add_argument("--action", help="only this action, e.g. cancel, pause, source.add")
    add_limit(al, 100)
    add_json(al)
    al.set_defaults(fn=cmd_audit_list)
    av = aud.add_parser("verify", help="recompute every hash chain; exit 1 naming the first bad row")
    add_json(av)
    av.set_defaults(fn=cmd_audit_verify)
