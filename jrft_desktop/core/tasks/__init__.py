"""The learning tasks, one module each, registered by name (`registry`, like the methods).

A task owns what differs between problems: the columns it reads, how examples are encoded and collated, the
head and its read-out, the loss, the metrics and which one picks the best checkpoint, what a prediction looks
like, and the stock transformers class a merged model becomes; its `data_view` what the app's Data page shows of
its data. The trainer, the exporter, inference, the CLI and the app ask the task; none of them branches on a task's
name. What several tasks share is in `common` (a task module never imports another task's module)."""

from __future__ import annotations

# Registered as imported: the order in which 'auto' asks the tasks (generate before tag: chat turns are lists too).
# isort: off
from . import classify, generate, tag  # noqa: F401
# isort: on
from .base import DataView, Task
from .registry import AUTO, DEFAULT_TASK, PEEK_ROWS, all_tasks, get_task, register, task_for

__all__ = ["AUTO", "DEFAULT_TASK", "PEEK_ROWS", "DataView", "Task", "all_tasks", "get_task", "register", "task_for"]
