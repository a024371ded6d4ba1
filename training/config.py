"""The resolved configuration of a run: a preset plus command-line overrides."""

import dataclasses
import json
import typing

from zoo import presets
from zoo.models import check_arguments

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
    steps_per_execution: int = 25  # train steps per compiled call; a call costs ~a small step
    data: str = "text8"  # corpus: text8, builtin, or a path
    normalize: str | None = None  # "text8" maps a text file to text8's alphabet
    steps: int | None = None  # stop after this many steps in all (None: no step limit)
    epochs: float | None = None  # stop after this many passes over the training split
    max_time: float | None = None  # stop cleanly after this many seconds of this process
    seed: int = 0  # seeds initialisation, sampling and everything random
    eval_every: int = 1000  # steps between validations
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
    strategy: str = "none"  # tf.distribute strategy: none, mirrored or multiworker (TF_CONFIG)

    def to_json(self):
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text):
        return cls(**json.loads(text))


def field_types():
    hints = typing.get_type_hints(Config)
    return {f.name: hints[f.name] for f in dataclasses.fields(Config)}


def parse_value(key, text, kind):
    base = [t for t in typing.get_args(kind) if t is not type(None)] or [kind]
    base = base[0]
    if text.lower() in ("none", "null") and type(None) in typing.get_args(kind):
        return None
    try:
        if base is bool:
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError
            return text.lower() in ("true", "1")
        return base(text) if base in (int, float, str) else json.loads(text)
    except ValueError:
        raise ValueError(f"--set {key}={text}: expected a {base.__name__}") from None


def resolve(preset, overrides=()):
    """The preset's configuration with `overrides` ("key=value" strings) applied.

    Keys are Config fields or `model.<argument>` for the model's arguments.
    """
    chosen = presets.get(preset)
    return override({"preset": preset.lower(), "model": chosen["model"], **chosen["training"]},
                    overrides)


def override(values, overrides):
    """A checked Config from a dict of field values and "key=value" overrides."""
    values = {**values, "model": dict(values["model"])}
    types = field_types()
    for override in overrides:
        key, sep, text = override.partition("=")
        key = key.strip().replace("-", "_")
        if not sep:
            raise ValueError(f"--set {override!r}: expected key=value")
        if key.startswith("model."):
            name = key[len("model."):]
            try:
                values["model"][name] = json.loads(text)
            except ValueError:
                values["model"][name] = text
        elif key in types and key not in ("preset", "model"):
            values[key] = parse_value(key, text, types[key])
        else:
            valid = ", ".join(k for k in types if k not in ("preset", "model"))
            raise ValueError(f"--set {key}: unknown setting; valid: {valid}, model.<argument>")
    config = Config(**values)
    check(config)
    check_arguments(config.model["family"], config.model)
    return config


def check(config):
    if config.optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {config.optimizer!r}; valid: {', '.join(OPTIMIZERS)}")
    if config.strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {config.strategy!r}; valid: {', '.join(STRATEGIES)}")
    for name in ("batch_size", "unrollings", "steps_per_execution", "decay_steps", "eval_every",
                 "log_every", "checkpoint_every", "keep_checkpoints", "max_bad_steps",
                 "eval_streams"):
        if getattr(config, name) <= 0:
            raise ValueError(f"{name} must be positive, got {getattr(config, name)}")
    for name in ("learning_rate", "clip_norm", "decay_rate"):
        if not getattr(config, name) > 0:
            raise ValueError(f"{name} must be positive, got {getattr(config, name)}")
    for name in ("steps", "epochs", "max_time"):
        value = getattr(config, name)
        if value is not None and value < 0:
            raise ValueError(f"{name} must not be negative, got {value}")
