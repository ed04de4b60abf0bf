"""``python -m clarky_provider.testing serve``: its help describes every option, and it serves."""

from __future__ import annotations

import json
import os
import queue
import re
import shlex
import signal
import subprocess
import sys
import threading
import urllib.request

import pytest

from clarky_provider.testing.__main__ import build_parser

SERVE = [sys.executable, "-m", "clarky_provider.testing", "serve"]
#: An option's first help line: two spaces, its flags (``-h, --help`` or ``--port PORT``), then
#: its help after two or more spaces, or on the next line when the flags are long.
OPTION = re.compile(r"^  (-\S.*?)(?:\s{2,}(\S.*))?$")


@pytest.fixture(scope="module")
def serve_help() -> str:
    """``serve --help`` as a user sees it, from a process of its own (once: it imports Airflow)."""
    done = subprocess.run([*SERVE, "--help"], capture_output=True, text=True, timeout=120, check=True)
    return done.stdout


def option_helps(text: str) -> dict[str, str]:
    """Each option's flag (its long form) and its whole help text, read off ``--help``."""
    section = text.split("\noptions:\n", 1)[1].split("\n\n", 1)[0]
    helps: dict[str, str] = {}
    flag = None
    for line in section.splitlines():
        match = OPTION.match(line)
        if match:
            flag = [word.rstrip(",") for word in match.group(1).split() if word.startswith("-")][-1]
            helps[flag] = match.group(2) or ""
        elif flag is not None and line.startswith(" " * 6):  # a continuation of the help
            helps[flag] = f"{helps[flag]} {line.strip()}".strip()
    return helps


def test_help_describes_every_option_with_its_default(serve_help):
    text = serve_help
    helps = option_helps(text)
    usage = text.split("\n\n", 1)[0]
    assert set(helps) == {"--help", *re.findall(r"\[(--[\w-]+)", usage)}  # every option of the usage line
    assert {"--port", "--contacts", "--fault", "--order"} <= set(helps)
    for flag, words in helps.items():
        assert len(words.split()) >= 4, f"{flag} has no real help: {words!r}"
        if flag != "--help":
            assert re.search(r"\(default: [^)%]+\)$", words), f"{flag} does not say its default: {words!r}"
    assert "(default: 8080)" in helps["--port"] and "(default: 120)" in helps["--rate-limit"]


def test_help_ends_with_two_examples_that_parse(serve_help):
    epilog = serve_help.split("\nexamples:\n", 1)[1]
    commands = [c for c in epilog.replace("\\\n", " ").splitlines() if c.strip().startswith("python -m")]
    assert len(commands) == 2
    for command in commands:
        argv = shlex.split(command)[3:]  # after "python -m clarky_provider.testing"
        assert build_parser().parse_args(argv).command == "serve"


def test_serve_prints_its_base_url_and_serves_until_terminated():
    process = subprocess.Popen(
        [*SERVE, "--port", "0", "--contacts", "10", "--rate-limit", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:  # readline would block without bound: a thread reads, the test waits on get
        for line in process.stdout:  # type: ignore[union-attr]
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    try:
        first = lines.get(timeout=120)
        match = re.fullmatch(r"Clarky emulator serving 10 contacts at (http://127\.0\.0\.1:(\d+))\n", first)
        assert match, first
        base_url, port = match.group(1), int(match.group(2))
        assert port > 0  # port 0 asked for a free port; the line names the one it got
        printed = dict(line.strip().split(":", 1) for line in (lines.get(timeout=10) for _ in range(5)))
        assert printed["API base URL"].strip() == f"{base_url}/api/v1"
        request = urllib.request.Request(
            f"{base_url}/api/v1/contacts?page_size=5",
            headers={"Authorization": f"Bearer {printed['read key'].strip()}"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert json.load(answer)["pagination"]["total"] == 10
    finally:
        os.kill(process.pid, signal.SIGTERM)
        try:
            code = process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
            pytest.fail("serve did not stop on SIGTERM within 10 s")
    assert code == 0
