"""charzoo's models: Arch 1 / Arch 2 vanilla RNNs beside LSTM and GRU."""

from zoo.arch1 import Arch1, Arch1Cell
from zoo.arch2 import Arch2, Arch2Cell
from zoo.char_lm import FAMILIES, CharLM
from zoo.gated import GRU, LSTM
from zoo import presets, sampling

__all__ = ["Arch1", "Arch1Cell", "Arch2", "Arch2Cell", "CharLM", "FAMILIES", "GRU", "LSTM",
           "presets", "sampling"]
