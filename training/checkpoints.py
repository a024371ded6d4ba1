"""Checkpoints on TensorFlow's own machinery, falling back past unreadable ones."""

import warnings

import tensorflow as tf


class CheckpointMismatch(Exception):
    """A readable checkpoint that does not fit the run's model, optimizer or state."""


class Checkpoints:
    """The last `keep` checkpoints of a run's `objects` (TF trackables).

    `tf.train.CheckpointManager` writes each checkpoint's files under temporary
    names and renames them, then rewrites its index atomically, so a save cut
    short is never listed. A listed checkpoint whose files cannot be read
    (missing, truncated, a checksum error) is reported and the one before it
    is tried; one that reads but does not fit (another batch size, another
    model) stops the run, since every older one would not fit either and
    starting afresh would overwrite them.
    """

    def __init__(self, directory, keep, **objects):
        self.checkpoint = tf.train.Checkpoint(**objects)
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(directory), max_to_keep=keep)

    def save(self, step):
        return self.manager.save(checkpoint_number=step)

    def restore(self):
        """Restores the newest readable checkpoint; returns its path, or None if there is none.

        Raises:
            CheckpointMismatch: the newest readable checkpoint does not fit the objects.
        """
        for path in reversed(self.manager.checkpoints):
            try:
                self.checkpoint.restore(path).expect_partial().assert_existing_objects_matched()
                return path
            except (ValueError, AssertionError) as error:  # read, but of other shapes or objects
                raise CheckpointMismatch(
                    f"checkpoint {path} does not fit this run ({first_line(error)}); was its "
                    "configuration changed? Nothing was overwritten") from None
            except Exception as error:  # noqa: BLE001  (missing, truncated, bad checksums: all unreadable)
                warnings.warn(f"checkpoint {path} is unreadable ({first_line(error)}); "
                              "trying the one before")
        return None


def first_line(error):
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
