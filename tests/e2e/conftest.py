"""End-to-end tests against a real Airflow deployment (scheduler, dag-processor, api-server)."""

from __future__ import annotations

import pytest


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The figures e2e tests record (429s, requests, wall times), shown even without ``-s``."""
    lines = []
    for reports in terminalreporter.stats.values():
        for report in reports:
            if getattr(report, "when", None) != "call" or "e2e" not in getattr(report, "keywords", {}):
                continue
            if report.user_properties:
                figures = ", ".join(f"{name}={value}" for name, value in report.user_properties)
                lines.append(f"{report.nodeid.split('::')[-1]} ({report.outcome}): {figures}")
    if lines:
        terminalreporter.write_sep("-", "clarky end-to-end figures")
        for line in sorted(lines):
            terminalreporter.write_line(line)
