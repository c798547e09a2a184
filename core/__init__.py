"""Orch core: the pure domain, the PostgreSQL ledger, and the control/query service layer."""
