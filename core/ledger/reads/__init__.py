"""Read models' SQL: plain statements returning plain rows, for core.queries. Every statement
is limited to the tenants a `Visible` names; the caller checks the principal's right to see
them. Functions take a Connection and never write."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Visible:
    """The tenants a read may return rows of: `tenant` (one, or None for any) within
    `tenants` (a principal's set, or None for every tenant)."""

    tenant: str | None = None
    tenants: Sequence[str] | None = None

    def where(self, alias: str = "t") -> tuple[str, dict[str, Any]]:
        """An SQL condition on `alias`.name and its parameters ("true" when unrestricted)."""
        clauses: list[str] = []
        params: dict[str, Any] = {}
        if self.tenant is not None:
            clauses.append(f"{alias}.name = :tenant")
            params["tenant"] = self.tenant
        if self.tenants is not None:
            clauses.append(f"{alias}.name = ANY(:visible)")
            params["visible"] = sorted(self.tenants)
        return " AND ".join(clauses) or "true", params
