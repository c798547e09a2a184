"""The runtime: what runs as worker and scheduler processes around the ledger. The broker
(doorbells), the actors that claim and run jobs, the pump (batched ledger writes), the
supervised pool, the scheduler loop and the metrics exporter. It never imports the CLI or
the development tools (an import-linter contract)."""
