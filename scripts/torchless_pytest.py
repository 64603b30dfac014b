"""pytest plugin of scripts/check_py312.sh: a test that needs torch or MONAI (absent there) is skipped, not failed.

Only a ModuleNotFoundError for exactly those packages turns into a skip; every other error
still fails. check_py312.sh separately requires ``import DoseSegLib`` to work without them.
"""

from __future__ import annotations

import re

import pytest

MISSING = re.compile(r"ModuleNotFoundError: No module named '(torch|monai)[.']")


def _skip_if_torch(report) -> None:
    if report.failed:
        found = MISSING.findall(str(report.longrepr))
        if found:
            report.outcome = "skipped"
            report.longrepr = (str(report.fspath), 0, f"Skipped: needs {found[-1]} (not installed for this Python)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _skip_if_torch(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    _skip_if_torch(outcome.get_result())
