"""Progress events of long jobs, and running a job's generator to its end.

Long jobs (segmenting, training, evaluating) are generators: they yield events and ``return`` their
result. A GUI runs them in a thread worker and shows each event; the CLI, scripts and tests call
``run_to_end``.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = ["Progress", "run_to_end"]

T = TypeVar("T")


@dataclass
class Progress:
    """A step of a segmentation or evaluation.

    Attributes:
        stage: ``"tiles"`` (tile mode), ``"slices"`` (resize mode), ``"postprocess"``, ``"evaluate"``
            or ``"model"`` (loading).
        done: units of this stage finished.
        total: units in this stage.
        message: human-readable summary.
    """

    stage: str
    done: int
    total: int
    message: str = ""


def run_to_end(job: Generator[Any, Any, T], on_event: Callable[[Any], None] | None = None) -> T:
    """Run a job's generator to its end and return what it returns.

    Args:
        job: a generator such as ``segment(...)``, ``train(...)`` or ``evaluate_pairs(...)``.
        on_event: called with each yielded event (progress bars, logs); None ignores them.

    Raises:
        Whatever the job raises.
    """
    while True:
        try:
            event = next(job)
        except StopIteration as stop:
            return stop.value
        if on_event is not None:
            on_event(event)
