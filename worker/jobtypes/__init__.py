"""Built-in job types every `orch worker` knows: noop, sleep, fail and flaky (basic), and
http_fetch. Written against worker.sdk only, like any job author's handlers."""

#: The modules a worker always loads, before ORCH_HANDLER_MODULES.
BUILTIN_MODULES = ("worker.jobtypes.basic", "worker.jobtypes.http_fetch")
