"""Training progress: how far a run is, and the plain lines written when the output is not a terminal."""

import io

import pytest

from training.progress import TrainingProgress, fraction


@pytest.mark.parametrize("target_steps, max_time, step, elapsed, expected", [
    (1000, None, 250, 99.0, 0.25),
    (None, 200.0, 10, 50.0, 0.25),
    (1000, 200.0, 250, 100.0, 0.5),  # the time limit comes first
    (1000, 200.0, 900, 100.0, 0.9),  # the step limit does
    (100, None, 150, 1.0, 1.0),
    (None, None, 5, 1.0, None),
])
def test_fraction_follows_the_nearest_limit(target_steps, max_time, step, elapsed, expected):
    assert fraction(target_steps, max_time, step, elapsed) == pytest.approx(expected)


def test_a_pipe_gets_one_plain_line_per_report_with_elapsed_time_and_eta():
    out = io.StringIO()  # not a terminal
    with TrainingProgress(target_steps=1000, max_time=None, stream=out) as progress:
        progress.started -= 10.0  # as if it had been training for 10 s
        progress.update(step=250, loss=1.3862943611, learning_rate=2e-3, speed=41_000)
        progress.update(step=500, loss=1.3862943611, learning_rate=2e-3, speed=41_000)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("step 250/1,000  bpc 2.0000  lr 0.002  41,000 chars/s  10 s")
    assert lines[0].endswith("ETA 30 s")  # a quarter done in 10 s


def test_a_run_without_limits_has_no_eta():
    out = io.StringIO()
    with TrainingProgress(target_steps=None, max_time=None, stream=out) as progress:
        progress.update(step=50, loss=2.0, learning_rate=1.0, speed=1000)
    assert "ETA" not in out.getvalue() and out.getvalue().startswith("step 50  bpc")


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_terminal_gets_the_live_bar():
    out = Terminal()
    with TrainingProgress(target_steps=100, max_time=None, stream=out) as progress:
        progress.update(step=50, loss=2.0, learning_rate=1.0, speed=1000)
    assert progress.bar is not None and "50%" in out.getvalue() and "chars/s" in out.getvalue()


class FakeTime:
    def __init__(self):
        self.now = 1000.0

    def monotonic(self):
        return self.now


class Saved:  # stands in for the checkpointed tf.Variable
    def __init__(self, value):
        self.value = value

    def numpy(self):
        return self.value

    def assign(self, value):
        self.value = value


@pytest.fixture
def fake_time(monkeypatch):
    from training import clock

    fake = FakeTime()
    monkeypatch.setattr(clock, "time", fake)
    monkeypatch.setattr(clock, "process_age", lambda: 5.0)
    return fake


def config(**fields):
    from training import config as configuration

    return configuration.resolve("arch1", {"eval_every": None, **fields})


def test_validations_by_time_never_take_over_a_tenth_of_the_run(fake_time):
    from training.clock import RunClock

    clock = RunClock(config(max_time=100.0), Saved(0.0))  # every 10 s: a tenth of max_time
    assert not clock.validation_due(step=7, eval_every=None)
    fake_time.now += 10
    assert clock.validation_due(step=8, eval_every=None)
    with clock.side_work(validated=True):
        fake_time.now += 5  # the first one compiles: however long, the next one comes 10 s later
    fake_time.now += 9.9
    assert not clock.validation_due(step=8, eval_every=None)
    fake_time.now += 0.1
    assert clock.validation_due(step=8, eval_every=None)
    with clock.side_work(validated=True):
        fake_time.now += 1  # a 1 s validation: the next one 10 s after it ends
    fake_time.now += 9.9
    assert not clock.validation_due(step=9, eval_every=None)
    fake_time.now += 0.1
    assert clock.validation_due(step=10, eval_every=None)
    with clock.side_work(validated=True):
        fake_time.now += 3  # a slow one: the next only 27 s later
    fake_time.now += 26
    assert not clock.validation_due(step=11, eval_every=None)
    fake_time.now += 1
    assert clock.validation_due(step=12, eval_every=None)
    assert clock.side_seconds == 9


def test_the_budget_counts_side_work_and_stops_nearest_to_it(fake_time):
    from training.clock import RunClock

    saved = Saved(30.0)  # a resumed run: 30 s trained before
    clock = RunClock(config(max_time=20.0, eval_every_seconds=50.0), saved)
    clock.record_call(8.0)  # the first call: compilation, not a guide to the next
    clock.record_call(4.0)
    with clock.side_work():
        fake_time.now += 5.0
    fake_time.now += 12.0  # 17 s of the 20: another 4 s call would end 1 s over, stopping 3 s under
    assert not clock.out_of_time()
    fake_time.now += 1.0  # 18 s: stopping is nearer the budget
    assert clock.out_of_time()
    assert not clock.validation_due(step=3, eval_every=1)  # past the budget: only the final one
    clock.stop()
    fake_time.now += 2.5  # the final evaluation
    assert saved.value == 48.0 and clock.run_seconds() == 48.0
    assert clock.report() == {"start_up": 5.0, "first_call": 8.0, "side_work": 5.0,
                              "training": 13.0, "loop": 18.0, "final_evaluation": 2.5}


def test_the_default_interval_is_a_tenth_of_the_budget_or_two_minutes():
    from training.clock import validation_interval

    assert validation_interval(config(max_time=300.0)) == 30.0
    assert validation_interval(config()) == 120.0
    assert validation_interval(config(max_time=300.0, eval_every_seconds=7.0)) == 7.0
