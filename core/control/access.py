"""Principals' credentials: API tokens (created, authenticated, and the local admin token kept
at every scope)."""

from __future__ import annotations

import sqlalchemy as sa

from core.control import common
from core.control.common import append_audit
from core.domain import auth, errors
from core.domain.auth import Principal, Scope
from core.ledger import audit


def create_token(
    engine: sa.Engine,
    principal: Principal,
    *,
    subject: str,
    scopes: frozenset[Scope],
    tenants: frozenset[str] | None,
    reason: str | None = None,
) -> str:
    """Create an API token for `subject`; returns it (only its sha256 is stored). The creator
    must hold every scope it grants, on every tenant it grants. Raises Forbidden, InvalidInput."""
    if not subject or len(subject) > 200:
        raise errors.InvalidInput("subject must be 1 to 200 characters")
    for scope in scopes:
        if tenants is None:
            if principal.tenants is not None or scope not in principal.scopes:
                raise errors.Forbidden(f"{principal.subject} cannot grant {scope} on every tenant")
        else:
            for tenant in tenants:
                principal.require(scope, tenant)
    for tenant in tenants or ():
        if not common.TENANT_RE.match(tenant):
            raise errors.InvalidInput(f"tenant {tenant!r} is not a valid name")
    common.check_reason(reason)
    token = auth.new_token()
    with engine.begin() as conn:
        token_id = audit.insert_token(
            conn,
            token_sha256=auth.hash_token(token),
            subject=subject,
            tenants=None if tenants is None else sorted(tenants),
            scopes=sorted(s.value for s in scopes),
            created_by=principal.subject,
        )
        append_audit(
            conn,
            principal,
            Scope.READ,
            "token.create",
            f"token {token_id}",
            tenant=None,
            reason=reason,
            details={
                "subject": subject,
                "scopes": sorted(s.value for s in scopes),
                "tenants": None if tenants is None else sorted(tenants),
            },
        )
    return token


def authenticate(engine: sa.Engine, token: str) -> Principal:
    """The principal of an API token. Raises Forbidden for an unknown or revoked token."""
    with engine.connect() as conn:
        row = audit.find_token(conn, auth.hash_token(token.strip()))
    if row is None:
        raise errors.Forbidden("unknown or revoked API token (check ORCH_TOKEN / --token)")
    return Principal(
        subject=row["subject"],
        scopes=frozenset(Scope(s) for s in row["scopes"] if s in auth.SCOPE_NAMES),
        tenants=None if row["tenants"] is None else frozenset(row["tenants"]),
    )


def grant_every_scope(engine: sa.Engine, principal: Principal, token: str, *, reason: str) -> Principal:
    """Give an existing all-tenant token every scope there is (scopes added since it was made
    included); returns its principal. Only a principal with every scope on every tenant may.
    Raises Forbidden (unknown token, or a principal that may not), InvalidInput."""
    if principal.tenants is not None or principal.scopes != auth.ALL_SCOPES:
        raise errors.Forbidden(f"{principal.subject} cannot grant every scope")
    common.check_reason(reason)
    digest = auth.hash_token(token.strip())
    with engine.begin() as conn:
        row = audit.find_token(conn, digest)
        if row is None or row["tenants"] is not None:
            raise errors.Forbidden("only an existing token for every tenant can be given every scope")
        before = sorted(row["scopes"])
        after = sorted(s.value for s in auth.ALL_SCOPES)
        if before != after:
            audit.set_token_scopes(conn, token_sha256=digest, scopes=after)
            append_audit(
                conn,
                principal,
                Scope.READ,
                "token.scopes",
                f"token {row['id']}",
                tenant=None,
                reason=reason,
                details={"subject": row["subject"], "before": before, "after": after},
            )
    return Principal(subject=row["subject"], scopes=auth.ALL_SCOPES, tenants=None)
