"""TensorBoard summaries of a training run, written with `tf.summary`.

One `TensorBoardLogger` per run directory. Training and validation go to the
`train` and `validation` sub-runs under the same tag names, so TensorBoard
draws them on the same chart; hyperparameters go to the run directory
itself, which the HParams dashboard treats as the session and whose sub-runs'
scalars it offers as metrics.
"""

import math
import os

import numpy as np
import tensorflow as tf
from tensorboard.plugins.hparams import api as hp

# A 3x5 bitmap font, rows top to bottom, for the axis labels of the gradient
# flow plot (there is no plotting library to draw text for us).
FONT = {
    "0": "111101101101111",
    "1": "010110010010111",
    "2": "111001111100111",
    "3": "111001111001111",
    "4": "101101111001001",
    "5": "111100111001111",
    "6": "111100111101111",
    "7": "111001001001001",
    "8": "111101111101111",
    "9": "111101111001111",
    "-": "000000111000000",
}
WHITE, GRID, BAR, BAD, INK = (255, 255, 255), (215, 215, 215), (51, 102, 204), (204, 41, 41), (0, 0, 0)
GRADIENT_FLOW_DESCRIPTION = (
    "log10 of ||dL_T/ds_t||, the norm of the gradient of the last step's loss with "
    "respect to the state read at step t; left is the oldest step. Grid lines are at "
    "powers of ten, labelled with the exponent. A missing bar is an exact zero "
    "(underflow, or no path back); a red bar is inf or nan."
)


def draw_text(image, text, top, left, scale=2):
    """Writes `text` (digits and '-') into `image` in place, top-left at (top, left)."""
    for i, char in enumerate(text):
        glyph = np.array([bit == "1" for bit in FONT[char]]).reshape(5, 3)
        glyph = np.kron(glyph, np.ones((scale, scale), dtype=bool))
        x = left + 4 * scale * i
        image[top : top + 5 * scale, x : x + 3 * scale][glyph] = INK


def gradient_flow_image(norms, bar_width=8, plot_height=160, scale=2):
    """Renders gradient norms per unrolling as bars on a log10 axis.

    Args:
        norms: float `[T]`, as returned by `diagnostics.gradient_flow`.
        bar_width: int. Pixels per unrolling (one of them is the gap).
        plot_height: int. Pixels of the plotting area.
        scale: int. Size of a font pixel.

    Returns:
        uint8 `[height, width, 3]` RGB image.
    """
    norms = np.asarray(norms, dtype=np.float64)
    finite = np.isfinite(norms)
    positive = finite & (norms > 0)
    logs = np.log10(np.where(positive, norms, 1.0))
    if positive.any():
        # The axis starts strictly below the smallest norm so that every bar shows.
        low, high = math.ceil(logs[positive].min()) - 1, math.ceil(logs[positive].max())
    else:
        low, high = -1, 0
    # At most about six labelled grid lines, whatever the range of decades.
    step = max(1, math.ceil((high - low) / 6))
    low = high - step * max(1, math.ceil((high - low) / step))
    decades = range(high, low - 1, -step)

    glyph_height = 5 * scale
    left = max(len(str(d)) for d in decades) * 4 * scale + 2 * scale
    top = glyph_height // 2 + 2
    bottom = top + plot_height
    width = left + len(norms) * bar_width + 2 * scale
    image = np.full((bottom + glyph_height + 4, width, 3), WHITE, dtype=np.uint8)

    def row(value):
        return top + int(round((high - value) / (high - low) * plot_height))

    for decade in decades:
        image[row(decade), left:] = GRID
        draw_text(image, str(decade), row(decade) - glyph_height // 2, 0, scale)
    for t, (value, is_positive, is_finite) in enumerate(zip(logs, positive, finite)):
        x = left + t * bar_width
        if not is_finite:
            image[top:bottom, x : x + bar_width - 1] = BAD
        elif is_positive:
            image[min(row(value), bottom - 1) : bottom, x : x + bar_width - 1] = BAR
    draw_text(image, "0", bottom + 2, left, scale)
    last = str(len(norms) - 1)
    draw_text(image, last, bottom + 2, width - len(last) * 4 * scale, scale)
    return image


def confusion_image(matrix, cell=12):
    """A confusion matrix as a uint8 RGB heat map: row i is true class i, column j
    predicted class j; each row's share from white (0) to dark blue (all of the row),
    the diagonal (right answers) in green. Class names are in `charzoo classify eval`."""
    matrix = np.asarray(matrix, np.float64)
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    base = np.where(np.eye(len(matrix), dtype=bool)[..., None], (0, 140, 60), BAR)
    colours = 255 - shares[..., None] * (255 - base)
    return np.kron(colours, np.ones((cell, cell, 1))).astype(np.uint8)


def hparam_value(value):
    """A value the HParams plugin accepts (bool, int, float or str)."""
    if isinstance(value, np.generic):
        value = value.item()
    return value if isinstance(value, (bool, int, float, str)) else str(value)


class TensorBoardLogger:
    """Writes a run's scalars, histograms, samples, diagnostics and hparams.

    Args:
        log_dir: str. The run directory; summaries go to `log_dir/train`,
            `log_dir/validation` and (hyperparameters) `log_dir` itself.
        histogram_every: int. Steps between weight and gradient histograms
            (they are large and slow); 0 turns them off.

    Example:
    >>> logger = TensorBoardLogger("runs/arch1")
    >>> logger.log_train(100, loss=2.1, bpc=3.0, learning_rate=2.5, grad_norm=0.9,
    ...                  clipped_fraction=0.1, chars_per_second=5e4)
    >>> logger.close()
    """

    def __init__(self, log_dir, histogram_every=1000):
        self.log_dir = log_dir
        self.histogram_every = histogram_every
        self.train_writer = tf.summary.create_file_writer(os.path.join(log_dir, "train"))
        self.validation_writer = tf.summary.create_file_writer(os.path.join(log_dir, "validation"))
        # Created on first use so a run without hparams has no empty "." run.
        self.session_writer = None

    def log_train(self, step, loss, bpc, learning_rate, grad_norm, clipped_fraction, chars_per_second):
        """Scalars of one training step (or of the steps since the last call)."""
        with self.train_writer.as_default(step=step):
            tf.summary.scalar("loss", loss)
            tf.summary.scalar("bpc", bpc)
            tf.summary.scalar("learning_rate", learning_rate)
            tf.summary.scalar("grad_norm", grad_norm)
            tf.summary.scalar("clipped_fraction", clipped_fraction)
            tf.summary.scalar("chars_per_second", chars_per_second)

    def wants_histograms(self, step):
        """Whether `log_histograms` would write at `step`, to skip preparing them."""
        return self.histogram_every > 0 and step % self.histogram_every == 0

    def log_histograms(self, step, model, gradients, always=False):
        """Histograms of every trainable weight and its gradient, if `wants_histograms(step)`
        (or `always`: the loop also logs a run's first and last steps).

        Args:
            step: int. The training step.
            model: the model; its `trainable_variables` are logged as `weights/<path>`.
            gradients: list aligned with `model.trainable_variables` of tensors,
                `tf.IndexedSlices` (densified, so repeated rows are summed as the
                optimizer sums them) or None (skipped), logged as `gradients/<path>`.

        Returns:
            bool. Whether anything was written.
        """
        if not (always or self.wants_histograms(step)):
            return False
        with self.train_writer.as_default(step=step):
            for variable, gradient in zip(model.trainable_variables, gradients, strict=True):
                tf.summary.histogram(f"weights/{variable.path}", tf.convert_to_tensor(variable))
                if gradient is not None:
                    tf.summary.histogram(f"gradients/{variable.path}", tf.convert_to_tensor(gradient))
        return True

    def log_validation(self, step, loss, bpc, seconds=None, characters=None):
        """Validation loss and bits per character, under the training tag names;
        with `seconds` (of training) and `characters` (seen), also the BPC against
        each of them, as the steps of `bpc_by_seconds` and `bpc_by_characters`:
        the curves to compare models that train at different speeds."""
        with self.validation_writer.as_default(step=step):
            tf.summary.scalar("loss", loss)
            tf.summary.scalar("bpc", bpc)
        with self.validation_writer.as_default():
            if seconds is not None:
                tf.summary.scalar("bpc_by_seconds", bpc, step=round(seconds))
            if characters is not None:
                tf.summary.scalar("bpc_by_characters", bpc, step=characters)

    def log_best(self, step, bpc, final_step=None):
        """The best validation BPC so far (a step that improved on every earlier one);
        at the end of a run (`final_step`), which step's weights are the best."""
        with self.validation_writer.as_default(step=final_step or step):
            tf.summary.scalar("best_bpc", bpc)
            if final_step is not None:
                tf.summary.text("best_checkpoint", f"the best weights are step {step:,}'s: "
                                                   f"validation {bpc:.4f} bpc (exported by default)")

    def log_sample(self, step, prime, text):
        """A generated sample as text: the prime, then the text in a code block."""
        # A code block keeps the sample's line breaks and spaces, which
        # Markdown would otherwise collapse.
        markdown = f"prime: `{prime!r}`\n\n```\n{text}\n```"
        with self.train_writer.as_default(step=step):
            tf.summary.text("sample", markdown)

    def log_gradient_flow(self, step, norms, radii):
        """The gradient flow plot and its summary scalars, and the spectral radii.

        Args:
            step: int. The training step.
            norms: float `[T]` from `diagnostics.gradient_flow`.
            radii: dict from `diagnostics.spectral_radii`; each key is a tag.

        Writes the image `gradient_flow`, the scalars `gradient_flow/last`
        (`norms[-1]`), `gradient_flow/first` (`norms[0]`) and, when
        `norms[-1] > 0`, `gradient_flow/first_over_last` and
        `gradient_flow/per_step_gain`: the geometric mean factor per step back,
        `(first / last) ** (1 / (T - 1))`, comparable across window lengths
        and with the spectral radius.
        """
        norms = np.asarray(norms, dtype=np.float64)
        with self.train_writer.as_default(step=step):
            tf.summary.image(
                "gradient_flow",
                gradient_flow_image(norms)[None],
                description=GRADIENT_FLOW_DESCRIPTION,
            )
            tf.summary.scalar("gradient_flow/last", norms[-1])
            tf.summary.scalar("gradient_flow/first", norms[0])
            if norms[-1] > 0:
                ratio = norms[0] / norms[-1]
                tf.summary.scalar("gradient_flow/first_over_last", ratio)
                if len(norms) > 1:
                    tf.summary.scalar("gradient_flow/per_step_gain", ratio ** (1 / (len(norms) - 1)))
            for name, radius in radii.items():
                tf.summary.scalar(name, radius)

    def log_hparams(self, hparams, metrics, step=0):
        """Hyperparameters and final metrics for the HParams dashboard.

        Args:
            hparams: dict from name to value (include the preset name);
                values other than bool, int, float or str are logged as str.
            metrics: dict from name to float, written as scalars of this
                session; the dashboard also offers every scalar of the
                `train` and `validation` runs (e.g. `bpc` in `validation`).
            step: int. Step of the metric scalars.
        """
        if self.session_writer is None:
            self.session_writer = tf.summary.create_file_writer(self.log_dir)
        with self.session_writer.as_default(step=step):
            hp.hparams({str(k): hparam_value(v) for k, v in hparams.items()})
            for name, value in metrics.items():
                tf.summary.scalar(name, value)

    def writers(self):
        return [w for w in (self.train_writer, self.validation_writer, self.session_writer) if w]

    def flush(self):
        """Writes everything buffered to disk."""
        for writer in self.writers():
            writer.flush()

    def close(self):
        """Flushes and closes the event files; the logger cannot be used afterwards."""
        for writer in self.writers():
            writer.close()


def read_summaries(log_dir, tag):
    """What a `TensorBoardLogger` wrote under `tag` in `log_dir` (a run or one of its
    sub-runs), read back as `[(step, numpy value)]` in order of writing."""
    from tensorboard.backend.event_processing.event_accumulator import TENSORS, EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={TENSORS: 0})
    events.Reload()
    return [(event.step, tf.make_ndarray(event.tensor_proto)) for event in events.Tensors(tag)]
