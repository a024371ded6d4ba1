"""Checkpoints on TensorFlow's own machinery, falling back past corrupt ones."""

import warnings

import tensorflow as tf


class Checkpoints:
    """The last `keep` checkpoints of a run's `objects` (TF trackables).

    `tf.train.CheckpointManager` writes each checkpoint's files under temporary
    names and renames them, then rewrites its index atomically, so a save cut
    short is never listed. A listed checkpoint that fails to restore is
    reported and the one before it is tried.
    """

    def __init__(self, directory, keep, **objects):
        self.checkpoint = tf.train.Checkpoint(**objects)
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(directory), max_to_keep=keep)

    def save(self, step):
        return self.manager.save(checkpoint_number=step)

    def restore(self):
        """Restores the newest good checkpoint; returns its path, or None if there is none."""
        for path in reversed(self.manager.checkpoints):
            try:
                self.checkpoint.restore(path).assert_existing_objects_matched()
                return path
            except Exception as error:  # noqa: BLE001 - any failure to read means unusable
                first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                warnings.warn(f"checkpoint {path} is unreadable ({first_line}); trying the one before")
        return None
