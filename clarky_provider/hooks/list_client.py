"""What reading Clarky lists needs of a client, and nothing more.

:mod:`.pages` and :mod:`.listing` depend on this, not on the hook: one fetch function (the
hook's GET, with its pacing, retries and typed errors), the two settings that shape a read,
the counters reads add to, and the pool every fetch runs on. So a list read can be built and
tested with a plain function in place of the hook, and the hook imports the readers without
their importing it back.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from clarky_provider.hooks.stats import RequestStats
from clarky_provider.hooks.workers import WorkerPool

#: ``fetch(path, query)``: one GET of ``path`` (relative to the API's base URL) with ``query``,
#: returning the decoded JSON body, or raising a typed Clarky error once retries are spent.
Fetch = Callable[[str, Mapping[str, str]], dict[str, Any]]


@dataclass(frozen=True)
class ReadConfig:
    """How reads page: records per page, and requests (and pages read ahead) at once."""

    page_size: int
    max_concurrency: int


class ListClient:
    """A fetch function with the settings, counters and worker pool list reads share.

    One per hook: the pool is shared by every read the hook makes, so ``max_concurrency``
    bounds them together. :meth:`close` stops the pool; a read after it starts a fresh one.
    """

    def __init__(self, fetch: Fetch, config: ReadConfig, stats: RequestStats) -> None:
        self.fetch = fetch
        self.config = config
        self.stats = stats
        self.workers = WorkerPool(config.max_concurrency)

    def get(self, path: str, query: Mapping[str, str]) -> dict[str, Any]:
        """One fetch, on a worker of the pool (so it counts against ``max_concurrency``)."""
        return self.workers.run(lambda: self.fetch(path, query))

    def close(self) -> None:
        """Stop the pool's threads (the hook's ``close``), so a finished task leaves none behind."""
        self.workers.close()
