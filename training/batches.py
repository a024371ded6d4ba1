"""Truncated-BPTT windows: `batch_size` contiguous streams read in step.

The training text is cut into `batch_size` equal contiguous streams, one per
row. Window k of an epoch is columns `[k*u, (k+1)*u)` of every stream as the
input and the same columns shifted by one as the targets, so the final state
of window k is exactly the initial state window k + 1 needs.
"""

import numpy as np


class Windows:
    """The windows of one pass over `ids`, as zero-copy views.

    Args:
        ids: uint8 array of character ids.
        batch_size: number of streams (rows of each window).
        unrollings: window length in characters.
    """

    def __init__(self, ids, batch_size, unrollings):
        if batch_size <= 0 or unrollings <= 0:
            raise ValueError("batch_size and unrollings must be positive")
        stream_length = (len(ids) - 1) // batch_size
        if stream_length < unrollings:
            raise ValueError(
                f"{len(ids):,} characters cannot fill one window of {batch_size} streams x "
                f"{unrollings} unrollings; use a smaller --batch-size or --unrollings"
            )
        used = batch_size * stream_length
        self.inputs = ids[:used].reshape(batch_size, stream_length)
        self.targets = ids[1 : used + 1].reshape(batch_size, stream_length)
        self.batch_size = batch_size
        self.unrollings = unrollings
        self.per_epoch = stream_length // unrollings

    def __len__(self):
        return self.per_epoch

    def __getitem__(self, index):
        """Window `index` of the epoch (the cursor), as int32 (inputs, targets)."""
        if not 0 <= index < self.per_epoch:
            raise IndexError(index)
        inputs, targets = self.span(index, 1)
        return inputs[0], targets[0]

    def span(self, index, count):
        """Windows `index` to `index + count - 1`, as int32 `[count, batch, unrollings]` arrays."""
        if count <= 0 or not 0 <= index <= self.per_epoch - count:
            raise IndexError((index, count))
        columns = slice(index * self.unrollings, (index + count) * self.unrollings)

        def stack(rows):
            windows = rows[:, columns].reshape(self.batch_size, count, self.unrollings)
            return np.ascontiguousarray(windows.transpose(1, 0, 2), dtype=np.int32)

        return stack(self.inputs), stack(self.targets)


def evaluation_windows(ids, streams, window):
    """Every character of `ids` once, as `streams` parallel streams in windows.

    Yields (inputs, targets) with the last window of the pass shorter, so all
    `streams * ((len(ids) - 1) // streams)` predictions are scored.
    """
    streams = max(1, min(streams, len(ids) - 1))
    stream_length = (len(ids) - 1) // streams
    used = streams * stream_length
    inputs = ids[:used].reshape(streams, stream_length)
    targets = ids[1 : used + 1].reshape(streams, stream_length)
    for start in range(0, stream_length, window):
        yield (inputs[:, start : start + window].astype(np.int32),
               targets[:, start : start + window].astype(np.int32))
