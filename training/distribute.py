"""Training across devices and machines with TensorFlow's own `tf.distribute`.

`DistributedTrainer` keeps `Trainer`'s interface: the host passes the global
window and carried state, each replica trains on its contiguous block of
streams, and the update equals the single-device one on the same global batch.
"""

import atexit
import functools
import json
import os
import shutil
import tempfile
from pathlib import Path

import tensorflow as tf

from training.run_dir import Checkpoints
from training.step import PER_STEP, Trainer

TF_CONFIG_EXAMPLE = ('TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                     '"task": {"type": "worker", "index": 0}}\' (the same cluster on every '
                     'machine, each with its own task index)')


@functools.cache
def make_strategy(name):
    """The `tf.distribute` strategy called `name`, one per name and process.

    Runs in one process share it: two strategies over the same devices number
    their collective operations alike, and those would collide.

    Args:
        name: `"none"`, `"mirrored"` (every local GPU, or every logical CPU
            when there is no GPU) or `"multiworker"` (the cluster in TF_CONFIG).

    Returns:
        A `tf.distribute.Strategy`, or None for `"none"`.

    Raises:
        ValueError: unknown name, or TF_CONFIG missing or malformed.
    """
    if name == "none":
        return None
    if name == "mirrored":
        # MirroredStrategy() alone takes GPUs or only CPU:0; logical CPUs count too.
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    if name == "multiworker":
        check_tf_config(os.environ.get("TF_CONFIG"))
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"unknown strategy {name!r}; valid: none, mirrored, multiworker")


def check_tf_config(text):
    """Raises ValueError unless `text` is a TF_CONFIG naming this task of a worker cluster."""
    if not text:
        raise ValueError(f"--strategy multiworker needs TF_CONFIG; set {TF_CONFIG_EXAMPLE}")
    try:
        config = json.loads(text)
        cluster, task = config["cluster"], config["task"]
        members = cluster[task["type"]]
        if not isinstance(members, list) or not 0 <= int(task["index"]) < len(members):
            raise IndexError(f"task index {task['index']} is not one of the {task['type']}s")
    except (ValueError, TypeError, KeyError, IndexError) as error:
        raise ValueError(f"TF_CONFIG is malformed ({type(error).__name__}: {error}); "
                         f"set {TF_CONFIG_EXAMPLE}") from None


def is_chief(strategy):
    """Whether this process writes the run: always, except on non-chief workers."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    resolver = strategy.cluster_resolver
    kind, index = resolver.task_type, resolver.task_id
    return (kind in (None, "chief")
            or (kind == "worker" and index == 0 and "chief" not in resolver.cluster_spec().as_dict()))


def scratch_dir(name):
    """A fresh directory that is removed when the process exits."""
    path = Path(tempfile.mkdtemp(prefix=f"charzoo-{name}-"))
    atexit.register(shutil.rmtree, path, True)
    return path


class WorkerCheckpoints(Checkpoints):
    """A non-chief worker's checkpoints: restored from the chief's, saved to scratch.

    Every worker must take part in a save under MultiWorkerMirroredStrategy,
    but only the chief's copy is kept (TF's multi-worker recipe). Resuming
    reads the chief's directory, so it must be reachable from every worker
    (a shared filesystem), or the workers would start from different steps.

    Args:
        chief_directory: the run's checkpoint directory.
        keep: checkpoints kept by the chief.
        **objects: the trackables to save and restore.
    """

    def __init__(self, chief_directory, keep, **objects):
        super().__init__(scratch_dir("checkpoints"), 1, **objects)
        self.chief = Checkpoints(chief_directory, keep, **objects)

    def restore(self):
        return self.chief.restore()


def make_checkpoints(strategy, directory, keep, **objects):
    """`Checkpoints` in `directory` on the chief, `WorkerCheckpoints` on other workers."""
    if is_chief(strategy):
        return Checkpoints(directory, keep, **objects)
    return WorkerCheckpoints(directory, keep, **objects)


class DistributedTrainer(Trainer):
    """A `Trainer` whose train step runs data-parallel on a `tf.distribute` strategy.

    The global batch of streams is split into contiguous blocks, one per
    replica in sync (replica r takes rows `[r*b, (r+1)*b)` of the window and
    of the carried state). Each replica's gradient is of its share of the
    global mean loss, so their sum is the single-device gradient; the global
    norm is that of the sum, the same on every replica, and clips it. The new
    state comes back whole, in replica order. Evaluation, `gradients` and
    sampling run unreplicated on the model's (mirrored) weights.

    Args:
        strategy: a `tf.distribute.Strategy`; `model` and `optimizer` must
            have been created under its `scope()`.
        model: a `zoo.CharLM`.
        optimizer: a Keras optimizer.
        clip_norm: float. The summed gradient is scaled down to this global norm.
        loss_steps: `"all"` or `"last"`, as for `Trainer`.
    """

    def __init__(self, strategy, model, optimizer, clip_norm, loss_steps="all"):
        self.strategy = strategy
        self.replicas = strategy.num_replicas_in_sync
        with strategy.scope():
            super().__init__(model, optimizer, clip_norm, jit_compile=False, loss_steps=loss_steps)
        self._replicated_step = self.train_step
        self.train_step = self._checked_train_step
        self.train_steps = self._one_call_per_step

    def _one_call_per_step(self, inputs, targets, state):
        # `Trainer.train_steps` loops inside one call; strategy.run cannot sit in that loop.
        results = []
        for step_inputs, step_targets in zip(inputs, targets):
            results.append(self.train_step(step_inputs, step_targets, state))
            state = results[-1]["state"]
        return {"state": state, **{name: tf.stack([r[name] for r in results]) for name in PER_STEP}}

    def _checked_train_step(self, inputs, targets, state):
        if len(inputs) % self.replicas:
            raise ValueError(f"the global batch ({len(inputs)} streams) must be divisible by the "
                             f"{self.replicas} replicas in sync; change --batch-size")
        return self._replicated_step(inputs, targets, state)

    def _train_step(self, inputs, targets, state):
        gradients, loss, norm, new_state = self.strategy.run(
            self._replica_gradients, args=(inputs, targets, state))
        # Loss and norm were all-reduced: every replica holds the same value.
        loss, norm = (self.strategy.experimental_local_results(v)[0] for v in (loss, norm))
        finite = tf.math.is_finite(loss) & tf.math.is_finite(norm)

        def apply():
            self.strategy.run(self._replica_apply, args=(gradients, norm))
            return tf.constant(True)

        # The cond is taken here, in cross-replica context, because the optimizer's
        # all-reduce is a merge_call, which may not sit in a replica-context cond branch.
        tf.cond(finite, apply, lambda: tf.constant(False))
        new_state = self.strategy.gather(new_state, axis=0)
        return self.step_result(loss, norm, finite, new_state, state)

    def _replica_gradients(self, inputs, targets, state):
        context = tf.distribute.get_replica_context()
        rows = tf.shape(inputs)[0] // self.replicas
        start = context.replica_id_in_sync_group * rows
        loss, gradients, new_state = self._gradients(
            inputs[start:start + rows], targets[start:start + rows], state[start:start + rows])
        # This replica's share of the global mean, so the shares sum to the global gradient.
        gradients = [g / self.replicas for g in gradients]
        loss, *total = context.all_reduce(tf.distribute.ReduceOp.SUM, [loss / self.replicas,
                                                                       *gradients])
        return gradients, loss, tf.linalg.global_norm(total), new_state

    def _replica_apply(self, gradients, norm):
        # Keras' optimizer all-reduces (sums) gradients itself in replica context, so it
        # gets the replica shares; scaling each by the global factor clips their sum.
        clipped, _ = tf.clip_by_global_norm(gradients, self.clip_norm, use_norm=norm)
        self.optimizer.apply_gradients(zip(clipped, self.model.trainable_variables))
