"""Every table of every page, as a new user reads it: times relative with their exact UTC time
beside them, a dash for nothing (never an ISO timestamp with microseconds, never None); and a
sentence instead of a chart with nothing to draw."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa
from streamlit.testing.v1 import AppTest

from app import labels
from core.domain.auth import Scope
from dashboards import panels
from tests.app.conftest import HOME, PAGES, Flow, Seeded, open_app, texts

#: Raw times as core.queries returns them ("2026-12-01T18:15:02.287043+00:00").
ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d|\d\d:\d\d:\d\d\.\d")
RELATIVE = re.compile(r"just now|\d+ (s|min|h|d) ago|in \d+ (s|min|h|d)")
EXACT = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")
#: The columns of the console's tables that hold a time.
TIME_COLUMNS = {"at", "updated", "created", "first seen", "last seen", "starts", "ends"}
#: The audit log's details are the record as written (JSON), not a column to format.
RAW_COLUMNS = {"details"}
#: The pages swept, after the Overview (each detail of Jobs and Sources too).
SWEPT = ("jobs", "dead_letters", "errors", "audit", "sources", "rate_limits")


def _renders(at: AppTest) -> Iterator[tuple[str, AppTest]]:
    """Every page, and on Jobs and Sources each detail too (its own tables)."""
    for name in ("overview", *SWEPT):
        if name != "overview":
            at.switch_page(PAGES[name]).run()
        else:
            at.switch_page("Home.py").run()
        assert not at.exception, [e.value for e in at.exception]
        yield name, at
        if name == "jobs":
            picker, options = "jobs_selected", [int(i) for i in at.dataframe[0].value["id"]]
        elif name == "sources":
            picker = "sources_selected"
            options = [o for box in at.selectbox if box.key == picker for o in box.options]
        else:
            continue
        for option in options:
            at.selectbox(key=picker).set_value(option).run()
            assert not at.exception, [e.value for e in at.exception]
            yield f"{name} {option}", at


def _check_tables(where: str, at: AppTest) -> int:
    checked = 0
    for frame in (d.value for d in at.dataframe):
        for column in frame.columns:
            values = list(frame[column])
            assert not any(v is None or (not isinstance(v, str) and pd.isna(v)) for v in values), (where, column)
            assert "None" not in [str(v) for v in values], (where, column)
            if column in RAW_COLUMNS:
                continue
            assert not any(ISO.search(str(v)) for v in values), (where, column, values[:3])
            if column in TIME_COLUMNS:
                exact = list(frame[column + labels.UTC_COLUMN])
                for shown, utc in zip(values, exact, strict=True):
                    assert (shown, utc) == (labels.DASH, labels.DASH) or (
                        RELATIVE.fullmatch(shown) and EXACT.fullmatch(utc)
                    ), (where, column, shown, utc)
                checked += len(values)
    return checked


def _sweep(token: str) -> int:
    at = AppTest.from_file(str(HOME), default_timeout=60)
    at.session_state["orch_token"] = token
    at.run()
    checked = 0
    for where, page in _renders(at):
        checked += _check_tables(where, page)
        assert not ISO.search(texts(page)), (where, ISO.search(texts(page)))
    return checked


def test_every_table_of_the_seeded_console_reads_as_people_read(seeded: Seeded, make_token: Callable[..., str]) -> None:
    assert _sweep(make_token("admin", set(Scope))) > 50  # jobs, history, clusters, audit rows


def test_every_table_of_the_flow_console_reads_as_people_read(flow: Flow, make_token: Callable[..., str]) -> None:
    assert _sweep(make_token("admin", set(Scope))) > 10  # rate changes, history of waiting jobs


def _chart_titles(at: AppTest) -> list[str]:
    return [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart")]


@pytest.mark.parametrize(
    ("page", "keys"),
    [
        (None, ("queue_depth", "throughput", "duration_p95", "outcomes")),
        ("rate_limits", ("rate_limit_events", "jobs_waiting", "bucket_rate", "bucket_tokens")),
    ],
)
def test_an_empty_chart_is_a_sentence_not_a_bare_axis(
    console: sa.Engine, make_token: Callable[..., str], page: str | None, keys: tuple[str, ...]
) -> None:
    at = open_app(make_token("admin", set(Scope)), page)
    assert _chart_titles(at) == []
    page_text = texts(at)
    for key in keys:
        assert f"**{panels.panel(key).title}**" in page_text, key
        assert labels.no_data(key) in [c.value for c in at.caption], key
    assert "Nothing waiting." in page_text if page == "rate_limits" else "No jobs finished in this window." in page_text


def test_a_chart_with_data_is_drawn_and_one_without_says_so(seeded: Seeded, make_token: Callable[..., str]) -> None:
    """The seeded ledger has jobs but no source and nothing throttled: on Rate limits, the
    charts of token buckets and waiting jobs are sentences."""
    at = open_app(make_token("admin", set(Scope)), "rate_limits")
    captions: list[Any] = [c.value for c in at.caption]
    for key in ("jobs_waiting", "bucket_rate", "bucket_tokens", "rate_limit_events"):
        assert labels.no_data(key) in captions, key
    assert _chart_titles(at) == []
    at.switch_page("Home.py").run()
    assert sorted(_chart_titles(at)) == sorted(
        panels.panel(k).title for k in ("queue_depth", "throughput", "duration_p95", "outcomes")
    )
