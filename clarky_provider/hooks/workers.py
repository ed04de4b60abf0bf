"""The one pool of threads a hook's reads run on, sized to ``max_concurrency``.

Reads nest (a fan-out runs one parent's list per task; a list fetches pages concurrently; a
recovery reads windows concurrently), yet share this one pool, under two rules:

* **Only workers fetch.** A fetch asked for on any other thread is handed to a worker and
  waited for, so at most ``size`` fetches are in flight, however reads nest.
* **A worker never waits for a task that has not started.** Before a worker waits for the
  next result it needs, it runs itself, in order, every task it submitted that no worker has
  started, until that result is ready. A worker therefore waits only for a task running on
  another worker that its own task submitted, one level deeper in the read (fan-out task,
  then page), and the deepest tasks (one page) submit nothing: waits cannot form a cycle, so
  the pool cannot deadlock. A list read inside a fan-out task thus has its pages fetched by
  idle workers and by the task's own worker together, and by that worker alone while the
  fan-out keeps the others busy; no read ever waits for a free worker that only it could
  release.

The pool is made on first use and stopped by :meth:`WorkerPool.close` (the hook's ``close``);
a closed pool makes a fresh one when used again.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Generator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import TypeVar

T = TypeVar("T")


def _mark_worker(local: threading.local) -> None:
    # Only the thread-local is bound here: a worker thread keeps its initializer alive, and
    # one referring to the pool would keep an unclosed hook's idle threads forever.
    local.worker = True


def _run_unstarted(submitted: deque[tuple[Callable[[], T], Future[T]]]) -> None:
    """Run here, in order, the submitted calls no worker has started, until the first is done."""
    for index in range(len(submitted)):
        if submitted[0][1].done():
            return
        call, future = submitted[index]
        if future.cancel():
            submitted[index] = (call, _run_here(call))


def _run_here(call: Callable[[], T]) -> Future[T]:
    """``call``'s outcome as a finished future, so a failure surfaces in call order like any other."""
    future: Future[T] = Future()
    try:
        future.set_result(call())
    except Exception as exc:
        future.set_exception(exc)
    return future


class WorkerPool:
    """``size`` worker threads that run every fetch of a hook's reads (rules in the module doc)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._local = threading.local()

    def run(self, call: Callable[[], T]) -> T:
        """The result of ``call``, run on a worker: here if this thread is one, else handed to one."""
        if self._on_worker():
            return call()
        return self._pool().submit(call).result()

    def in_order(
        self, next_call: Callable[[], Callable[[], T] | None], ahead: int
    ) -> Generator[T, None, None]:
        """The results of ``next_call()``'s calls in call order, up to ``ahead`` of them submitted.

        ``next_call`` returns ``None`` when it has nothing to start yet; it is asked again after
        each result, so what the consumer learns from a result (a list's new page count, windows
        cut from an overflowing one) decides what starts next. Closing the generator cancels
        the calls not started and waits for the running ones, so none outlives the read.
        """
        submitted: deque[tuple[Callable[[], T], Future[T]]] = deque()
        try:
            while True:
                while len(submitted) < ahead and (call := next_call()) is not None:
                    submitted.append((call, self._pool().submit(call)))
                if not submitted:
                    return
                if self._on_worker():
                    _run_unstarted(submitted)
                yield submitted.popleft()[1].result()
        finally:
            for _, future in submitted:
                future.cancel()
            wait([future for _, future in submitted])

    def close(self) -> None:
        """Stop the workers (after their running tasks); the next read starts fresh ones."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

    def _on_worker(self) -> bool:
        return getattr(self._local, "worker", False)

    def _pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=self.size,
                    thread_name_prefix="clarky-read",
                    initializer=_mark_worker,
                    initargs=(self._local,),
                )
            return self._executor
