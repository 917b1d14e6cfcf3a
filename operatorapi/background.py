"""A server process's background tasks (the presence heartbeat, the payment worker): one of each per event loop.

Started on demand by the first connection or request (``ensure``), so a process that serves nothing runs nothing.
Daphne has one loop per process; tests (one loop per test) get a task each, cancelled with their loop.
"""
import asyncio
import weakref
from collections.abc import Callable, Coroutine

_tasks: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Task]]" = weakref.WeakKeyDictionary()


def ensure(name: str, run: Callable[[], Coroutine]) -> asyncio.Task:
    """Start ``run()`` as the task ``name`` on the running loop unless it runs already; the task."""
    loop = asyncio.get_running_loop()
    tasks = _tasks.setdefault(loop, {})
    task = tasks.get(name)
    if task is None or task.done():
        task = tasks[name] = loop.create_task(run(), name=name)
    return task
