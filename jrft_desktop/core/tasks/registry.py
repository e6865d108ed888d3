"""The registry of tasks, by name (as the methods' registry). A task module registers its task when imported; the
package's imports give the order in which 'auto' asks them whether they recognise the data. Kept apart from the
package's `__init__` so that a task module imports it without importing the package back (no import circle)."""

from __future__ import annotations

from ..registry import lookup
from .base import Task

_REGISTRY: dict[str, Task] = {}
DEFAULT_TASK = "classify"  # the task of runs and vector files that do not name one (made before tasks had names),
# and of data that no task recognises
AUTO = "auto"  # DataSpec.task: guessed from the data
PEEK_ROWS = 100  # rows read to guess the task


def register(task: Task) -> Task:
    _REGISTRY[task.name] = task
    return task


def get_task(name: str) -> Task:
    return lookup(_REGISTRY, name, "task")


def all_tasks() -> tuple[Task, ...]:
    return tuple(_REGISTRY.values())


def task_for(name: str, source: str = "", frame=None) -> Task:
    """The task called `name`; for 'auto' the first that recognises the data (the table `frame`, or the first rows of
    `source`), else the default task."""
    if name != AUTO:
        return get_task(name)
    if frame is None:
        from ..data import read_table

        frame = read_table(source, limit=PEEK_ROWS)
    return next((task for task in all_tasks() if task.recognises(frame)), get_task(DEFAULT_TASK))
