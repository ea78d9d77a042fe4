"""Fixtures for the raftkv cluster tests (see harness.py for the machinery).

`cluster` gives a test a Cluster whose nodes are all stopped by PID at
teardown, pass or fail.  Teardown fails the test (as a teardown error) when a
node died on its own, did not exit 0 on SIGTERM, or logged a sanitizer report.
When any phase of a test fails, the tail of every node's log is attached to
the report.
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402


def pytest_report_header(config):
    return "raftkv binary: %s (%s)%s, timeout scale %g" % (
        harness.BIN, "present" if harness.BIN.exists() else "MISSING",
        ", sanitized" if harness.SANITIZED else "", harness.SCALE)


@pytest.fixture
def cluster(request, tmp_path):
    c = harness.Cluster(tmp_path)
    request.node._raftkv_cluster = c
    yield c
    problems = c.close()
    if problems:
        pytest.fail("node problems found at teardown:\n  " + "\n  ".join(problems),
                    pytrace=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    c = getattr(item, "_raftkv_cluster", None)
    if c is not None and rep.failed and c.nodes:
        rep.sections.append(("raftkv node logs (tail)", c.log_tails()))
