"""`train(config, run_dir)`: the run loop, with its stopping, resuming and signals."""

import contextlib
import json
import math
import signal
import time

import tensorflow as tf

from training import data, finetune
from training.batches import Windows
from training.clock import RunClock
from training.config import Config
from training.diagnostics import gradient_flow, spectral_radii
from training.distribute import (DistributedTrainer, is_chief, make_checkpoints, make_strategy,
                                 scratch_dir)
from training.export import export_run
from training.progress import TrainingProgress
from training.run_dir import (BestCheckpoint, CheckpointMismatch, RunDir, RunDirError, build_model,
                              dropout_seed_states)
from training.step import (Trainer, averaged_weights, keeps_average, make_optimizer, make_trainer,
                           sample_text, set_seed)
from training.tensorboard import TensorBoardLogger


class TrainingError(Exception):
    """Training cannot go on; the message says why and what was kept."""


def check_resume(run, config, corpus):
    """Refuses, naming every difference, to resume a run with something it cannot change."""
    changes = run.resume_conflicts(config, corpus)
    if changes:
        raise TrainingError(
            f"{run.path} holds a run that cannot change {'; '.join(changes)}. Resume it with its "
            f"own settings, or start over in another --run-dir (or after deleting {run.path}); "
            "nothing was changed")


def steps_in_next_call(config, step, left_in_epoch, target):
    """`steps_per_execution`, or 1 when an epoch end, the target or a step that logs,
    validates or checkpoints comes sooner (two compiled shapes, never more)."""
    room = min(left_in_epoch, target - step if target is not None else left_in_epoch)
    for every in (config.log_every, config.eval_every, config.checkpoint_every,
                  config.histogram_every):
        if every:  # eval_every None: by time; histogram_every 0: never
            room = min(room, every - step % every)
    return config.steps_per_execution if room >= config.steps_per_execution else 1


def total_steps(config, per_epoch):
    limits = [config.steps] if config.steps is not None else []
    if config.epochs is not None:
        limits.append(math.ceil(config.epochs * per_epoch))
    if not limits and config.max_time is None:
        limits.append(per_epoch)  # with no limit at all, one epoch
    return min(limits) if limits else None


@contextlib.contextmanager
def stop_requests():
    """Turns SIGINT / SIGTERM into a flag the loop checks, so it can checkpoint and exit."""
    requested = []
    handler = lambda signum, frame: requested.append(signal.Signals(signum).name)
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield requested
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


def validate(trainer, corpus, config, logger, step, best, clock, characters, final=False):
    """Validates, logs (against steps, training seconds and characters seen), and keeps
    the weights if they are the best yet (periodic validations all score the same
    first `eval_characters`, so they compare). With `weight_average` set, all of it
    uses the averaged weights."""
    with averaged_weights(trainer.model, trainer.optimizer):
        metrics = trainer.evaluate(corpus.valid, config.eval_streams,
                                   max_characters=None if final else config.eval_characters)
        if not final and best.offer(step, metrics["bpc"]):
            logger.log_best(step, metrics["bpc"])
        text = sample_text(trainer.model, corpus.alphabet, config.sample_prime,
                           config.sample_length, seed=config.seed)
    logger.log_validation(step, metrics["loss"], metrics["bpc"], clock.run_seconds(),
                          int(characters))
    logger.log_sample(step, config.sample_prime, text)
    return metrics


def log_histograms(trainer, logger, inputs, targets, state, step):
    """Histograms of the weights and of the gradient of the last window trained; returns `step`."""
    # The gradient is a training-mode call: it must not move dropout's random state, or a
    # resumed run (which logs at other steps) would draw other masks than an unbroken one.
    seeds = dropout_seed_states(trainer.model)
    kept = [seed.numpy() for seed in seeds]
    _, gradients, _ = trainer.gradients(inputs[-1], targets[-1], state)
    for seed, value in zip(seeds, kept):
        seed.assign(value)
    logger.log_histograms(step, trainer.model, gradients, always=True)
    return step


def log_diagnostics(trainer, windows, state, logger, step):
    inputs, targets = windows[0]
    norms = gradient_flow(trainer.model, inputs, targets, tf.zeros_like(state))
    logger.log_gradient_flow(step, norms, spectral_radii(trainer.model))


def finish_averaging(trainer, corpus, config):
    """With `weight_average` set: scores the trained weights, then leaves the averaged
    ones in the model for the final figures, the best-weights verdict and the export
    (the last checkpoint keeps the trained ones, so a resumed run goes on from them).
    Returns the trained weights' `{"valid_bpc", "test_bpc"}`, or None without averaging."""
    if not keeps_average(trainer.optimizer):
        return None
    figures = {f"{split}_bpc": trainer.evaluate(getattr(corpus, split), config.eval_streams)["bpc"]
               for split in ("valid", "test")}
    trainer.optimizer.finalize_variable_values(trainer.model.trainable_variables)
    return figures


def choose_best(config, corpus, best, step, last):
    """The final verdict on the best weights, over the whole validation split: the
    best periodic validation's, if they beat the last ones (`last`: their valid and
    test BPC), else the last. Returns `{"step", "valid_bpc", "test_bpc"}` of the
    weights that `best` then holds."""
    record = best.record()
    if record is not None and record["step"] != step:
        model = build_model(config, len(corpus.alphabet))
        BestCheckpoint(best.directory, model).restore()
        candidate = Trainer(model, make_optimizer(config), config.clip_norm)
        valid = candidate.evaluate(corpus.valid, config.eval_streams)["bpc"]
        if valid < last["valid_bpc"]:
            best.write_record(record["step"], valid)  # the whole split's figure from now on
            return {"step": record["step"], "valid_bpc": valid,
                    "test_bpc": candidate.evaluate(corpus.test, config.eval_streams)["bpc"]}
    best.save(step, last["valid_bpc"])
    return {"step": step, **last}


def train(config: Config, run_dir, corpus=None):
    """Trains (or resumes) the run in `run_dir`; returns its final metrics."""
    # First: MultiWorkerMirroredStrategy must exist before TensorFlow's runtime starts.
    strategy = make_strategy(config.strategy)
    chief = is_chief(strategy)  # only the chief writes the run; other workers write to scratch
    run = RunDir(run_dir)
    corpus = corpus or data.load(config.data, config.normalize)
    if config.init_from:  # read in the source model's alphabet (kept in alphabet.json once started)
        try:
            alphabet = (run.alphabet()["alphabet"] if run.has_alphabet()
                        else finetune.find_source(config.init_from).alphabet)
        except RunDirError as error:
            raise TrainingError(str(error)) from None
        corpus = data.remap(corpus, alphabet)
    check_resume(run, config, corpus)
    set_seed(config.seed)
    windows = Windows(corpus.train, config.batch_size, config.unrollings)
    written = run if chief else RunDir(scratch_dir("run"))
    try:
        written.create()
    except RunDirError as error:
        raise TrainingError(str(error)) from None
    with strategy.scope() if strategy else contextlib.nullcontext():
        model = build_model(config, len(corpus.alphabet))
        optimizer = make_optimizer(config)
        trainer = (DistributedTrainer(strategy, model, optimizer, config.clip_norm, config.loss_steps)
                   if strategy else make_trainer(config, model, optimizer))
    position = tf.Variable(0, dtype=tf.int64, name="position")  # windows consumed, skipped ones too
    state = tf.Variable(model.initial_state(config.batch_size), name="carried_state")
    characters = tf.Variable(0, dtype=tf.int64, name="characters_seen")
    seconds = tf.Variable(0.0, dtype=tf.float64, name="training_seconds")  # across resumes
    checkpoints = make_checkpoints(strategy, run.checkpoint_dir, config.keep_checkpoints,
                                   model=model, optimizer=optimizer, position=position, state=state,
                                   characters=characters, training_seconds=seconds)
    try:
        restored = checkpoints.restore()
    except CheckpointMismatch as error:
        raise TrainingError(str(error)) from None
    target = total_steps(config, len(windows))
    if restored and target is not None and int(position) >= target and (finished := run.metrics()):
        return {**finished, "finished": True}
    if not restored and config.init_from:
        try:
            source = finetune.find_source(config.init_from)
            finetune.check_model(source, config.preset, config.model)
            written.write_lineage(finetune.load_optimizer(source, model, optimizer, config.optimizer)
                                  if config.init_optimizer else finetune.load_weights(source, model))
        except RunDirError as error:
            raise TrainingError(str(error)) from None
        print(f"charzoo: starting from the weights of {source.path}", flush=True)
    best = written.best(model)
    if restored:
        print(f"charzoo: resuming {run.path} from {restored} (step {int(position)})", flush=True)
    # Written only now: a run that failed to start leaves nothing that blocks a retry.
    written.write_config(config)
    written.write_alphabet(corpus)
    logger = TensorBoardLogger(str(run.logs if chief else scratch_dir("logs")),
                               histogram_every=config.histogram_every)
    clock = RunClock(config, seconds)
    bad_steps, clipped, counted = 0, 0, 0
    histograms_at = None  # the last step with weight and gradient histograms
    tick, tick_step = time.monotonic(), int(position)
    stop_reason = "steps"
    with stop_requests() as requested, TrainingProgress(target, config.max_time) as progress:
        while target is None or int(position) < target:
            if requested:
                stop_reason = requested[0]
                break
            if clock.out_of_time():
                stop_reason = "max_time"
                break
            index = int(position) % len(windows)
            if index == 0:
                state.assign(tf.zeros_like(state))  # a new epoch starts from a fresh state
            count = steps_in_next_call(config, int(position), len(windows) - index, target)
            inputs, targets = windows.span(index, count)
            call_started = time.monotonic()
            out = {name: value.numpy() for name, value in
                   trainer.train_steps(inputs, targets, state).items()}
            clock.record_call(time.monotonic() - call_started)
            for offset, finite in enumerate(out["finite"], start=int(position) + 1):
                bad_steps = 0 if finite else bad_steps + 1
                if bad_steps >= config.max_bad_steps:
                    raise TrainingError(
                        f"{bad_steps} steps in a row had a non-finite loss or gradient (last at "
                        f"step {offset}); stopped. The last good checkpoint is kept in "
                        f"{run.checkpoint_dir}; try a lower --learning-rate or clip_norm.")
            position.assign_add(count)
            step = int(position)
            state.assign(out["state"])  # non-finite steps left it unchanged
            good = int(out["finite"].sum())
            characters.assign_add(good * inputs[0].size)
            clipped, counted = clipped + int(out["clipped"].sum()), counted + good
            loss = float(out["loss"][-1])
            if (step % config.log_every == 0 or step == target) and out["finite"][-1]:
                now = time.monotonic()
                speed = (step - tick_step) * inputs[0].size / max(now - tick, 1e-9)
                tick, tick_step = now, step
                logger.log_train(step, loss, loss / math.log(2), trainer.learning_rate(),
                                 float(out["grad_norm"][-1]), clipped / max(counted, 1), speed)
                progress.update(step, loss, trainer.learning_rate(), speed)
            if logger.wants_histograms(step) or histograms_at is None:  # and after the first call
                with clock.side_work():
                    histograms_at = log_histograms(trainer, logger, inputs, targets, state, step)
            if clock.validation_due(step, config.eval_every):
                with clock.side_work(validated=True):
                    validate(trainer, corpus, config, logger, step, best, clock, characters)
                    log_diagnostics(trainer, windows, state, logger, step)
            if step % config.checkpoint_every == 0:
                with clock.side_work():
                    clock.save()
                    checkpoints.save(step)
    step = int(position)
    if histograms_at not in (None, step):  # the last step, however the run stopped
        log_histograms(trainer, logger, inputs, targets, state, step)
    clock.stop()
    checkpoints.save(step)
    if stop_reason in ("SIGINT", "SIGTERM"):
        logger.close()
        print(f"charzoo: {stop_reason}: checkpoint saved at step {step}; run the same command "
              "to resume", flush=True)
        return {"interrupted": stop_reason, "steps": step}
    unaveraged = finish_averaging(trainer, corpus, config)
    valid = validate(trainer, corpus, config, logger, step, best, clock, characters, final=True)
    log_diagnostics(trainer, windows, state, logger, step)
    test = trainer.evaluate(corpus.test, config.eval_streams)
    best_weights = choose_best(config, corpus, best, step,
                               {"valid_bpc": valid["bpc"], "test_bpc": test["bpc"]})
    logger.log_best(best_weights["step"], best_weights["valid_bpc"], final_step=step)
    timing = clock.report()
    metrics = {
        "steps": step,
        "stopped_by": stop_reason,
        "characters_seen": int(characters),
        # Between validations and checkpoints (the step's speed), and over the whole loop.
        "chars_per_second": counted * config.batch_size * config.unrollings
        / max(timing["training"], 1e-9),
        "chars_per_second_overall": counted * config.batch_size * config.unrollings
        / max(timing["loop"], 1e-9),
        "seconds": timing["loop"],
        "training_seconds": clock.run_seconds(),  # of the whole run, resumes included
        "timing": timing,
        "batch_shards": trainer.shards,  # blocks of streams per train step (1: not split)
        "bfloat16_products": trainer.bfloat16_products,
        "valid_bpc": valid["bpc"],
        "valid_characters": valid["characters"],
        "test_bpc": test["bpc"],
        "test_characters": test["characters"],
        "uniform_bpc": math.log2(len(corpus.alphabet)),
        "corpus": corpus.name,
        "training_corpus": corpus.facts(),
        "best": best_weights,  # the weights `charzoo export` exports by default
        "fine_tuned_from": written.lineage(),
    }
    if unaveraged:
        metrics["unaveraged"] = unaveraged  # the trained weights' own figures, for comparison
    logger.log_hparams(hparams(config), {"valid_bpc": valid["bpc"], "test_bpc": test["bpc"]})
    logger.close()
    if not chief:
        return metrics
    run.save_model(model)
    run.write_metrics(metrics)
    if config.export:
        metrics["export"] = str(export_run(run.path))
    return metrics


def hparams(config):
    flat = {k: v for k, v in json.loads(config.to_json()).items() if k != "model"}
    flat.update({f"model.{k}": v for k, v in config.model.items()})
    return {k: v for k, v in flat.items() if isinstance(v, (bool, int, float, str))}
