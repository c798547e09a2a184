"""`python -m worker.cli`: the same as the `orch` command."""

from worker.cli import main

main()
