"""Development tools: the embedded PostgreSQL and Redis of `orch up`, the demo workload and
the upstream simulator. The runtime never imports them (an import-linter contract)."""
