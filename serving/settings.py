"""What a sampling request may ask for: its settings, their defaults and limits, checked once.

Every field is checked here, before a request is queued, so that a bad value
never reaches a batch it shares with other requests.
"""

import dataclasses
import math

import numpy as np

INT32_MAX = 2**31 - 1
FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclasses.dataclass(frozen=True)
class Settings:
    """How to sample: the one home of the defaults (the HTTP API and CLI read them here)."""

    length: int = 200  # characters to generate per sample
    temperature: float = 1.0  # 0 = greedy
    top_k: int = 0  # keep the k most likely characters; 0 = off
    top_p: float = 1.0  # keep the smallest set of characters holding this mass; 1 = off
    num_samples: int = 1  # samples of the same prime
    stop: tuple = ()  # a sample ends at the first of these strings it generates
    include_stop: bool = False  # keep that string at the end of the sample (else cut before it)
    beam_width: int = 1  # > 1: the most likely continuations by beam search, not samples


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one request may ask for; `None` is "only what the graph's types allow"."""

    max_length: int | None = None  # longest `length`
    max_samples: int | None = None  # most `num_samples`
    max_prime: int | None = None  # longest prime, in characters before normalisation
    max_characters: int | None = None  # most `length * num_samples`
    max_text: int | None = None  # longest text to score, in characters before normalisation

MAX_STOPS, MAX_STOP_LENGTH, MAX_BEAM_WIDTH = 8, 100, 16


class SettingError(ValueError):
    """A request field out of range; `field` names it."""

    def __init__(self, field, message):
        super().__init__(f"{field} {message}")
        self.field = field


def check_settings(settings, alphabet_size=None, limits=Limits()):
    """Raises SettingError unless the graph can run `settings` as they are.

    Everything is checked here, before a request is queued, so that a bad value
    never reaches a batch shared with other requests: floats must be finite and
    stay so in float32 (the graph's type), integers must fit int32.
    """
    longest = min(limits.max_length or INT32_MAX, INT32_MAX)
    if not 0 <= settings.length <= longest:
        raise SettingError("length", f"must be between 0 and {longest}, got {settings.length}")
    if not (math.isfinite(settings.temperature) and 0 <= settings.temperature <= FLOAT32_MAX):
        raise SettingError("temperature", f"must be a finite number >= 0, got {settings.temperature}")
    most_k = min(alphabet_size or INT32_MAX, INT32_MAX)
    if not 0 <= settings.top_k <= most_k:
        raise SettingError("top_k", f"must be between 0 (off) and {most_k}, got {settings.top_k}")
    # 1e-46 is positive in float64 but 0 in float32, which the graph refuses.
    if not (math.isfinite(settings.top_p) and 0 < np.float32(settings.top_p) and settings.top_p <= 1):
        raise SettingError("top_p", f"must be in (0, 1] (and > 0 in float32), got {settings.top_p}")
    most = min(limits.max_samples or 2**20, 2**20)
    if not 1 <= settings.num_samples <= most:
        raise SettingError("num_samples", f"must be between 1 and {most}, got {settings.num_samples}")
    if len(settings.stop) > MAX_STOPS or not all(0 < len(s) <= MAX_STOP_LENGTH for s in settings.stop):
        raise SettingError("stop", f"must be at most {MAX_STOPS} strings of 1 to {MAX_STOP_LENGTH} "
                                   f"characters, got {list(settings.stop)!r}"[:300])
    if not 1 <= settings.beam_width <= MAX_BEAM_WIDTH:
        raise SettingError("beam_width", f"must be between 1 (off) and {MAX_BEAM_WIDTH}, "
                                         f"got {settings.beam_width}")
    if settings.beam_width > 1 and settings.num_samples > settings.beam_width:
        raise SettingError("num_samples", f"must be at most beam_width ({settings.beam_width}) "
                                          f"with beam search, got {settings.num_samples}")
    total = settings.length * settings.num_samples
    if limits.max_characters is not None and total > limits.max_characters:
        raise SettingError("length", f"* num_samples must be <= {limits.max_characters}, got {total}")


def check_seed(seed):
    """Raises SettingError unless `seed` fits the graph's int64 and is not negative."""
    if not 0 <= seed < 2**63:
        raise SettingError("seed", f"must be between 0 and 2**63 - 1, got {seed}")


def new_seed():
    """A random seed that JSON and JavaScript round-trip exactly (< 2**53)."""
    return int(np.random.default_rng().integers(0, 2**53))
