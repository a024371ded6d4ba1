"""The configuration of a run: a preset's model, its training recipe, and typed overrides."""

import dataclasses
import json
import typing

from zoo import presets
from zoo.char_lm import check_arguments

OPTIMIZERS = ("adadelta", "sgd", "adam", "rmsprop")
STRATEGIES = ("none", "mirrored", "multiworker")


@dataclasses.dataclass(frozen=True)
class Config:
    preset: str  # zoo preset the model and recipe come from
    model: dict  # CharLM arguments (family, units, ...), the preset's after overrides
    batch_size: int  # parallel streams; a step trains on batch_size * unrollings characters
    unrollings: int  # window length of truncated backpropagation through time
    optimizer: str  # one of OPTIMIZERS
    learning_rate: float  # initial learning rate of the ExponentialDecay schedule
    decay_rate: float  # the rate is multiplied by this every decay_steps steps
    decay_steps: int  # steps per decay period
    staircase: bool  # decay in whole periods (True) or smoothly (False)
    clip_norm: float  # gradients are clipped to this global norm
    # momentum of a moving average of the weights (Keras' optimizer EMA, warmed up: see
    # `training.step.average_momentum`) that validation, test, the best weights and the
    # export use; None: the trained weights
    weight_average: float | None = None
    loss_steps: str = "all"  # train from the loss of every unrolling, or of the "last" one only
    steps_per_execution: int = 25  # train steps per compiled call; a call costs ~a small step
    # blocks of streams whose gradients a train step computes side by side (must divide
    # batch_size); None: 2 for mid-sized models on 2+ cores, where it was faster, else 1
    batch_shards: int | None = None
    # LSTM/GRU products in bfloat16 while training (state, gates, weights stay float32);
    # None: for those of 512+ units on a CPU with AMX, where it was faster
    bfloat16_products: bool | None = None
    data: str = "text8"  # corpus: text8, builtin, tinyshakespeare, or a path
    normalize: str | None = None  # "text8" maps a text file to text8's alphabet
    steps: int | None = None  # stop after this many steps in all (None: no step limit)
    epochs: float | None = None  # stop after this many passes over the training split
    max_time: float | None = None  # seconds this process may train, validations included
    seed: int = 0  # seeds initialisation, sampling and everything random
    eval_every: int | None = None  # steps between validations; None: by time (eval_every_seconds)
    # seconds between validations when eval_every is None; None: a tenth of max_time, else 120
    eval_every_seconds: float | None = None
    eval_characters: int = 500_000  # periodic validation scores at most this many characters
    eval_streams: int = 128  # parallel streams when evaluating a split
    log_every: int = 50  # steps between progress lines and training summaries
    histogram_every: int = 1000  # steps between weight and gradient histograms
    checkpoint_every: int = 1000  # steps between checkpoints
    keep_checkpoints: int = 3  # checkpoints kept on disk
    max_bad_steps: int = 5  # consecutive non-finite steps before the run stops
    sample_prime: str = "the "  # prime of the samples logged at each validation
    sample_length: int = 200  # characters of those samples
    export: bool = True  # write a SavedModel to <run>/export when training ends
    init_from: str | None = None  # a run directory or export whose weights a new run starts from
    init_optimizer: bool = False  # with init_from a run: also its optimizer and step (schedule goes on)
    strategy: str = "none"  # tf.distribute strategy: none, mirrored or multiworker (TF_CONFIG)

    def to_json(self):
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)


# Each preset's recipe: the Config fields it sets beside its model.
# The reference design's vanilla RNNs: adaptive or plain gradient descent with
# a large learning rate, a staircase decay and a global-norm clip.
ARCH1_RECIPE = {"batch_size": 32, "unrollings": 40, "optimizer": "adadelta", "learning_rate": 2.5,
                "decay_rate": 0.75, "decay_steps": 80_000, "staircase": True, "clip_norm": 1.25}
ARCH2_RECIPE = {"batch_size": 64, "unrollings": 20, "optimizer": "sgd", "learning_rate": 2.5,
                "decay_rate": 0.1, "decay_steps": 5_000, "staircase": True, "clip_norm": 1.25}
# Arch 1's tuned variant: Arch 1's decay and clip with Adam at 3e-3 and the gated presets'
# batch and unrollings, as measured against nn.RNN (BENCHMARKS.md, "Quality at equal time").
ARCH1_TUNED_RECIPE = {**ARCH1_RECIPE, "batch_size": 64, "unrollings": 50, "optimizer": "adam",
                      "learning_rate": 3e-3, "weight_average": 0.99}
# LSTM and GRU: Adam, a slow smooth decay, a clip of 5. The rate (3x char-rnn's 2e-3) and 50
# unrollings won on Tiny Shakespeare at equal time (BENCHMARKS.md, "recipes"); at that rate the
# weights' moving average scores 0.07-0.09 bpc better than the weights themselves at 300 s
# (BENCHMARKS.md, "Weight averaging").
GATED_RECIPE = {"batch_size": 64, "unrollings": 50, "optimizer": "adam", "learning_rate": 6e-3,
                "decay_rate": 0.5, "decay_steps": 50_000, "staircase": False, "clip_norm": 5.0,
                "weight_average": 0.99}
# gru-dropout at half that rate: on Tiny Shakespeare at 300 s its test BPC went from 2.175 to
# 2.149 (best validation's weights: 2.167 to 2.150) (BENCHMARKS.md, "At 300 s", run 4).
GRU_DROPOUT_RECIPE = {**GATED_RECIPE, "learning_rate": 3e-3}
# gru, over its N(0, 1) embedding, at char-rnn's 2e-3: best-validation test BPC 2.150-2.157 over
# three seeds at 300 s, against 2.208 at 6e-3 with Keras' embedding (BENCHMARKS.md, "The GRU's gap").
GRU_RECIPE = {**GATED_RECIPE, "learning_rate": 2e-3}
RECIPES = {"arch1": ARCH1_RECIPE, "arch1-add": ARCH1_RECIPE, "arch1-tanh": ARCH1_RECIPE, "arch1-mul": ARCH1_RECIPE,
           "arch1-orth": ARCH1_RECIPE, "arch1-ln": ARCH1_RECIPE, "arch1-tuned": ARCH1_TUNED_RECIPE,
           "arch1-tuned-dropout": ARCH1_TUNED_RECIPE,
           "irnn": ARCH1_RECIPE, "arch2": ARCH2_RECIPE, "lstm": GATED_RECIPE, "gru": GRU_RECIPE,
           "lstm-peephole": GATED_RECIPE, "lstm-cifg": GATED_RECIPE, "lstm-ln": GATED_RECIPE,
           "lstm-dropout": GATED_RECIPE, "gru-dropout": GRU_DROPOUT_RECIPE}

LOSS_STEPS = ("all", "last")
FIELD_TYPES = typing.get_type_hints(Config)
SETTABLE = tuple(name for name in FIELD_TYPES if name not in ("preset", "model"))


def resolve(preset, overrides=None):
    """The preset's model and recipe as a checked Config, with `overrides` applied.

    Args:
        preset: a name from `zoo.presets` (any case).
        overrides: dict of Config fields to typed values; `"model"` maps to a
            dict of CharLM arguments merged into the preset's.
    """
    name = str(preset).lower()
    model = presets.get(name)["model"]
    return override({"preset": name, "model": model, **RECIPES[name]}, overrides)


def override(values, overrides=None):
    """A checked Config from a dict of field values (a preset's, or a saved
    config.json) and a dict of typed overrides (as for `resolve`)."""
    overrides = dict(overrides or {})
    model = {**values["model"], **overrides.pop("model", {})}
    for key, value in overrides.items():
        if key not in SETTABLE:
            raise ValueError(f"--set {key}: unknown setting; valid: {', '.join(SETTABLE)}, "
                             "model.<argument>")
        overrides[key] = checked_type(key, value, FIELD_TYPES[key])
    config = Config(**{**values, **overrides, "model": model})
    check(config)
    check_arguments(model["family"], model)
    return config


def checked_type(key, value, kind):
    """`value` if it is a `kind` (ints pass as floats), else ValueError naming the field."""
    allowed = typing.get_args(kind) or (kind,)
    if value is None and type(None) in allowed:
        return None
    base = next(t for t in allowed if t is not type(None))
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, base) and not (base is int and isinstance(value, bool)):
        return value
    raise ValueError(f"{key}: expected {'an' if base is int else 'a'} {base.__name__}, got {value!r}")


def parse_settings(texts, field_types=FIELD_TYPES, settable=SETTABLE):
    """Command-line `KEY=VALUE` settings as typed overrides, parsed here and nowhere else.

    Keys are the names in `settable` (fields of the config class whose type hints are
    `field_types`; `Config`'s by default; dashes allowed) or `model.<argument>`, whose
    value is read as JSON where it parses (numbers, true/false, null) and as a string
    otherwise.
    """
    overrides = {"model": {}}
    for text in texts:
        key, sep, value = text.partition("=")
        key = key.strip().replace("-", "_")
        if not sep:
            raise ValueError(f"--set {text!r}: expected key=value")
        if key.startswith("model."):
            try:
                overrides["model"][key[len("model."):]] = json.loads(value)
            except ValueError:
                overrides["model"][key[len("model."):]] = value
        elif key in settable:
            overrides[key] = parse_value(key, value, field_types[key])
        else:
            raise ValueError(f"--set {key}: unknown setting; valid: {', '.join(settable)}, "
                             "model.<argument>")
    return overrides


def parse_value(key, text, kind):
    allowed = typing.get_args(kind) or (kind,)
    base = next(t for t in allowed if t is not type(None))
    if text.lower() in ("none", "null") and type(None) in allowed:
        return None
    try:
        if base is bool:
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError
            return text.lower() in ("true", "1")
        return base(text)
    except ValueError:
        raise ValueError(f"--set {key}={text}: expected a {base.__name__}") from None


def check(config):
    if config.loss_steps not in LOSS_STEPS:
        raise ValueError(f"unknown loss_steps {config.loss_steps!r}; valid: {', '.join(LOSS_STEPS)}")
    if config.optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {config.optimizer!r}; valid: {', '.join(OPTIMIZERS)}")
    if config.strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {config.strategy!r}; valid: {', '.join(STRATEGIES)}")
    for name in ("batch_size", "unrollings", "steps_per_execution", "decay_steps", "log_every", "checkpoint_every", "keep_checkpoints", "max_bad_steps",
                 "eval_streams"):
        if getattr(config, name) <= 0:
            raise ValueError(f"{name} must be positive, got {getattr(config, name)}")
    for name in ("learning_rate", "clip_norm", "decay_rate"):  # inf: clipping to inf gave NaN
        if not 0 < getattr(config, name) < float("inf"):
            raise ValueError(f"{name} must be positive and finite, got {getattr(config, name)}")
    if config.batch_shards is not None and not (
            config.batch_shards > 0 and config.batch_size % config.batch_shards == 0):
        raise ValueError(f"batch_shards must be a positive divisor of batch_size "
                         f"({config.batch_size}), got {config.batch_shards}")
    if config.init_optimizer and not config.init_from:
        raise ValueError("init_optimizer carries the optimizer of the --init-from run; give --init-from")
    if config.bfloat16_products and config.strategy != "none":
        raise ValueError("bfloat16_products is for one process's train step; "
                         f"strategy {config.strategy!r} trains in float32")
    if config.weight_average is not None and not 0 < config.weight_average < 1:
        raise ValueError(f"weight_average must be between 0 and 1 (or none), got {config.weight_average}")
    for name in ("steps", "epochs", "max_time", "eval_characters", "sample_length"):
        value = getattr(config, name)
        if value is not None and not value >= 0:  # NaN too: it never ran out
            raise ValueError(f"{name} must be zero or more, got {value}")
    for name in ("eval_every", "eval_every_seconds"):
        value = getattr(config, name)
        if value is not None and not value > 0:
            raise ValueError(f"{name} must be positive (or none), got {value}")
