"""Orch processes around the ledger: worker pool, scheduler, CLI, embedded services."""
