"""Orch processes around the ledger, one concern a room: sdk (what job authors write
against), jobtypes (the built-in job types), runtime (broker, actors, pump, pool, scheduler,
exporter), cli (the `orch` command) and devtools (embedded servers, demo, simulator)."""
