"""A run's time: the budget, the validations due by time, and where the seconds went."""

import contextlib
import os
import time
from pathlib import Path


def validation_interval(config):
    """Seconds between the validations of a run validated by time (`eval_every` None)."""
    if config.eval_every_seconds:
        return config.eval_every_seconds
    return config.max_time / 10 if config.max_time else 120.0


def process_age():
    """Seconds since this process started (Linux), or None: start-up is part of a run's cost."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


class RunClock:
    """Times one process's part of a run.

    `--max-time` budgets everything from the first training call to the last
    (validations, diagnostics and checkpoints included; start-up and the final
    evaluation are not). `run_seconds()` is the run's training time across
    resumes, kept in the checkpointed variable `saved_seconds`: the x axis of
    the validation curves.

    Args:
        config: the run's `Config` (`max_time`, `eval_every`, `eval_every_seconds`).
        saved_seconds: float64 `tf.Variable` restored from the last checkpoint.
    """

    def __init__(self, config, saved_seconds):
        self.saved_seconds = saved_seconds
        self.before = float(saved_seconds.numpy())
        self.max_time = config.max_time
        self.interval = None if config.eval_every else validation_interval(config)
        self.start_up = process_age()
        self.started = time.monotonic()
        self.next_validation = self.started + (self.interval or 0)
        self.side_seconds = 0.0  # validations, diagnostics, checkpoints
        self.validations = 0  # by time, in this process
        self.first_call = None  # seconds of the first training call: mostly compilation
        self.call_seconds = 0.0  # of the latest call
        self.stopped = None  # when the training loop ended

    def elapsed(self):
        return time.monotonic() - self.started

    def out_of_time(self):
        """Whether the budget is spent, or so nearly that the next call would end
        further past it than stopping now ends before it."""
        return self.max_time is not None and self.elapsed() + self.call_seconds / 2 >= self.max_time

    def run_seconds(self):
        end = self.stopped if self.stopped is not None else time.monotonic()
        return self.before + end - self.started

    def record_call(self, seconds):
        if self.first_call is None:
            self.first_call = seconds
        else:  # the first call's compilation says nothing about the next
            self.call_seconds = seconds

    def validation_due(self, step, eval_every):
        if self.out_of_time():
            return False  # the final validation comes next; this one would overrun the budget
        if eval_every:
            return step % eval_every == 0
        return time.monotonic() >= self.next_validation

    @contextlib.contextmanager
    def side_work(self, validated=False):
        """Times work that is not training; after a validation, schedules the next:
        `interval` later, or later still if validations would take over a tenth
        of the time (a large validation split, a slow model). The first validation
        compiles what the others reuse, so it does not count."""
        started = time.monotonic()
        yield
        seconds = time.monotonic() - started
        self.side_seconds += seconds
        if validated and self.interval:
            self.validations += 1
            wait = self.interval if self.validations == 1 else max(self.interval, 9 * seconds)
            self.next_validation = time.monotonic() + wait

    def save(self):
        """Writes the run's training seconds into the checkpointed variable."""
        self.saved_seconds.assign(self.run_seconds())

    def stop(self):
        self.stopped = time.monotonic()
        self.save()

    def report(self):
        """Where this process's seconds went (`metrics.json`'s `timing`), after `stop()`."""
        loop = self.stopped - self.started
        return {"start_up": self.start_up, "first_call": self.first_call,
                "side_work": self.side_seconds, "training": loop - self.side_seconds,
                "loop": loop, "final_evaluation": time.monotonic() - self.stopped}
