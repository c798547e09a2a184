"""Principals and scopes: who is acting, on which tenants, with which rights."""

from __future__ import annotations

import getpass
import hashlib
import secrets
from dataclasses import dataclass
from enum import StrEnum

from core.domain import errors


class Scope(StrEnum):
    READ = "orch:read"
    OPERATE = "orch:operate"
    QUOTA = "orch:quota"
    BACKFILL = "orch:backfill"
    #: Export a tenant's history as a signed audit bundle, and import one into an empty ledger.
    EXPORT = "orch:export"


ALL_SCOPES: frozenset[Scope] = frozenset(Scope)
#: The names of the scopes this version knows (a token may carry others, which it ignores).
SCOPE_NAMES: frozenset[str] = frozenset(s.value for s in Scope)


@dataclass(frozen=True, slots=True)
class Principal:
    """A subject with a tenant set (None: every tenant) and scopes."""

    subject: str
    scopes: frozenset[Scope]
    tenants: frozenset[str] | None = None

    def can(self, scope: Scope, tenant: str | None = None) -> bool:
        if scope not in self.scopes:
            return False
        return tenant is None or self.tenants is None or tenant in self.tenants

    def require(self, scope: Scope, tenant: str | None = None) -> None:
        """Raise Forbidden unless the principal has `scope` on `tenant`."""
        if scope not in self.scopes:
            raise errors.Forbidden(f"{self.subject} lacks the scope {scope}")
        if tenant is not None and self.tenants is not None and tenant not in self.tenants:
            raise errors.Forbidden(f"{self.subject} may not act on tenant {tenant!r}")


TOKEN_PREFIX = "orch_"


def new_token() -> str:
    """A fresh API token (shown once; only its hash is stored)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def parse_scopes(text: str) -> frozenset[Scope]:
    """Comma-separated scope names; raises InvalidInput naming an unknown one."""
    out: set[Scope] = set()
    for name in (s.strip() for s in text.split(",")):
        if not name:
            continue
        try:
            out.add(Scope(name))
        except ValueError:
            raise errors.InvalidInput(
                f"unknown scope {name!r}; scopes are {', '.join(s.value for s in Scope)}"
            ) from None
    if not out:
        raise errors.InvalidInput("give at least one scope, e.g. orch:read")
    return frozenset(out)


def local_principal(user: str | None = None) -> Principal:
    """Whoever reaches the database directly is already trusted: every scope, every tenant."""
    return Principal(subject=f"local:{user or getpass.getuser()}", scopes=ALL_SCOPES, tenants=None)
