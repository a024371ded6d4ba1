"""charzoo's models: Arch 1 / Arch 2 vanilla RNNs beside LSTM and GRU."""

from zoo.cells import Arch1Cell, Arch2Cell
from zoo.layers import Arch1, Arch2
from zoo.models import FAMILIES, CharLM
from zoo import presets

__all__ = ["Arch1", "Arch1Cell", "Arch2", "Arch2Cell", "CharLM", "FAMILIES", "presets"]
