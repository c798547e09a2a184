"""The job state machine: the one table of allowed transitions (docs/design.md, "The job
state machine"), and why a waiting job waits.

Everything else (the ledger's compare-and-set, the database's job_transitions table,
the diagram in docs/) is derived from or checked against TRANSITIONS.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import NamedTuple

from core.domain import errors


class State(StrEnum):
    PENDING = "pending"
    QUEUED = "queued"
    LEASED = "leased"
    RUNNING = "running"
    THROTTLED = "throttled"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    DEAD_LETTERED = "dead_lettered"
    CANCELED = "canceled"
    UPSTREAM_FAILED = "upstream_failed"
    #: A job of a run whose trigger rule can no longer be met without a failure to react to
    #: (e.g. one_failed when every parent succeeded). Neither a success nor a failure.
    SKIPPED = "skipped"


class Event(StrEnum):
    SUBMIT = "submit"
    DEPS_MET = "deps_met"
    PARENT_FAILED = "parent_failed"
    SKIP = "skip"
    CLAIM = "claim"
    DENY = "deny"
    DUE = "due"
    ACK = "ack"
    SUCCEED = "succeed"
    FAIL_RETRYABLE = "fail_retryable"
    FAIL_FINAL = "fail_final"
    LEASE_EXPIRED = "lease_expired"
    CANCEL = "cancel"
    THROTTLE = "throttle"


class WaitReason(StrEnum):
    """Why a throttled job waits (jobs.wait_reason and job_history.wait_reason; the database
    checks both against these values). In the order admission checks them."""

    PAUSED = "paused"
    BLACKOUT = "blackout"
    CIRCUIT_OPEN = "circuit_open"
    QUOTA = "quota"
    RATE_LIMITED = "rate_limited"
    BACKPRESSURE = "backpressure"


#: Every wait reason, in admission's order.
WAIT_REASONS: tuple[str, ...] = tuple(r.value for r in WaitReason)


class Transition(NamedTuple):
    from_state: State
    event: Event
    to_state: State


S, E = State, Event

#: Every allowed transition. A job's state changes only along one of these rows.
TRANSITIONS: frozenset[Transition] = frozenset(
    Transition(f, e, t)
    for f, e, t in [
        (S.PENDING, E.DEPS_MET, S.QUEUED),
        # Jobs of a run wait pending until their parents decide their trigger rule
        # (core/domain/dag.py): released, failed upstream, or skipped.
        (S.PENDING, E.PARENT_FAILED, S.UPSTREAM_FAILED),
        (S.PENDING, E.SKIP, S.SKIPPED),
        (S.QUEUED, E.CLAIM, S.LEASED),
        (S.QUEUED, E.DENY, S.THROTTLED),
        (S.THROTTLED, E.DUE, S.QUEUED),
        (S.LEASED, E.ACK, S.RUNNING),
        (S.LEASED, E.LEASE_EXPIRED, S.QUEUED),
        (S.RUNNING, E.SUCCEED, S.SUCCEEDED),
        (S.RUNNING, E.FAIL_RETRYABLE, S.RETRYING),
        # The upstream said 429: the job waits for its token again; the attempt is given back.
        (S.RUNNING, E.THROTTLE, S.THROTTLED),
        (S.RUNNING, E.FAIL_FINAL, S.DEAD_LETTERED),
        (S.RUNNING, E.LEASE_EXPIRED, S.RETRYING),
        (S.RUNNING, E.LEASE_EXPIRED, S.DEAD_LETTERED),
        (S.RETRYING, E.DUE, S.QUEUED),
        (S.PENDING, E.CANCEL, S.CANCELED),
        (S.QUEUED, E.CANCEL, S.CANCELED),
        (S.THROTTLED, E.CANCEL, S.CANCELED),
        (S.RETRYING, E.CANCEL, S.CANCELED),
        # A running job is canceled cooperatively: control sets cancel_requested, the
        # handler notices through JobContext.should_cancel() and the worker records this.
        (S.RUNNING, E.CANCEL, S.CANCELED),
    ]
)

#: States a job can be created in (history row with from_state NULL, event submit).
INITIAL: frozenset[State] = frozenset({S.PENDING, S.QUEUED, S.THROTTLED})

TERMINAL: frozenset[State] = frozenset({S.SUCCEEDED, S.DEAD_LETTERED, S.CANCELED, S.UPSTREAM_FAILED, S.SKIPPED})

#: States in which a worker holds a lease on the job; such a job also holds an active slot of
#: its quota and source (the database's orch_holds_slot says the same, checked by a test).
LEASED_STATES: frozenset[State] = frozenset({S.LEASED, S.RUNNING})

#: States a job waits in until its not_before passes.
DELAYED_STATES: frozenset[State] = frozenset({S.RETRYING, S.THROTTLED})


def targets(from_state: State, event: Event) -> frozenset[State]:
    """The states `event` may move a job in `from_state` to (empty when not allowed)."""
    return frozenset(t.to_state for t in TRANSITIONS if t.from_state == from_state and t.event == event)


def sources(event: Event, to_state: State) -> frozenset[State]:
    """The states from which `event` may lead to `to_state`."""
    return frozenset(t.from_state for t in TRANSITIONS if t.event == event and t.to_state == to_state)


def check(from_states: Iterable[State], event: Event, to_state: State) -> None:
    """Raise InvalidTransition unless every `from_state --event--> to_state` is in the table."""
    for f in from_states:
        if Transition(f, event, to_state) not in TRANSITIONS:
            raise errors.InvalidTransition(f"{f} --{event}--> {to_state} is not an allowed transition")


def mermaid() -> str:
    """The state diagram (Mermaid) generated from TRANSITIONS, for docs/states.md."""
    lines = ["stateDiagram-v2"]
    for state in sorted(INITIAL):
        lines.append(f"    [*] --> {state}: submit")
    for t in sorted(TRANSITIONS):
        lines.append(f"    {t.from_state} --> {t.to_state}: {t.event}")
    for state in sorted(TERMINAL):
        lines.append(f"    {state} --> [*]")
    return "\n".join(lines) + "\n"
