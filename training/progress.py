"""Training progress on the console: one live bar on a terminal, plain lines elsewhere (CI, logs)."""

import math
import sys
import time

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def fraction(target_steps, max_time, step, elapsed):
    """How far the run is towards the limit it will meet first, 0..1; None without limits.

    With both limits, which one stops the run is only known as it runs, so this
    is the larger of the two fractions."""
    parts = [done / limit for done, limit in ((step, target_steps), (elapsed, max_time)) if limit]
    return min(1.0, max(parts)) if parts else None


def describe(step, loss, learning_rate, speed):
    return (f"step {step:,}  bpc {loss / math.log(2):.4f}  lr {learning_rate:.3g}  "
            f"{speed:,.0f} chars/s")


class TrainingProgress:
    """Reports training: a rich progress bar (step, BPC, chars/s, elapsed, ETA) on a
    terminal; a plain line per report when the output is a file or a pipe.

    Args:
        target_steps: int or None. The step the run stops at, if it has a step limit.
        max_time: float or None. Seconds the run may train, if it has a time limit.
        stream: where to write (default stdout); a terminal gets the live bar.

    Example:
    >>> with TrainingProgress(target_steps=1000, max_time=None) as progress:
    ...     progress.update(step=50, loss=2.1, learning_rate=2e-3, speed=4e4)
    """

    def __init__(self, target_steps, max_time, stream=None):
        self.stream = stream or sys.stdout
        self.target_steps, self.max_time = target_steps, max_time
        self.started = time.monotonic()
        self.bar = None
        if self.stream.isatty():
            self.bar = Progress(TextColumn("{task.description}"), BarColumn(),
                                TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(),
                                TextColumn("ETA"), TimeRemainingColumn(),
                                console=Console(file=self.stream), transient=False)
            self.task = self.bar.add_task("starting", total=1.0 if target_steps or max_time else None)

    def __enter__(self):
        if self.bar:
            self.bar.start()
        return self

    def __exit__(self, *exc):
        if self.bar:
            self.bar.stop()

    def update(self, step, loss, learning_rate, speed):
        elapsed = time.monotonic() - self.started
        line = describe(step, loss, learning_rate, speed)
        done = fraction(self.target_steps, self.max_time, step, elapsed)
        if self.bar:
            self.bar.update(self.task, description=line, completed=done)
            return
        if self.target_steps:
            line = line.replace(f"step {step:,}", f"step {step:,}/{self.target_steps:,}", 1)
        eta = f"  ETA {elapsed * (1 - done) / done:,.0f} s" if done else ""
        print(f"{line}  {elapsed:,.0f} s{eta}", file=self.stream, flush=True)
