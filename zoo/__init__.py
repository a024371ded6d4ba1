"""charzoo's models: Arch 1 / Arch 2 vanilla RNNs beside LSTM, GRU and LSTM variants,
as language models (`CharLM`) and classifiers (`CharClassifier`)."""

from zoo.arch1 import Arch1, Arch1Cell
from zoo.arch2 import Arch2, Arch2Cell
from zoo.char_lm import FAMILIES, CharLM
from zoo.classifier import CharClassifier
from zoo.gated import GRU, LSTM
from zoo.lstm_variants import (CoupledInputForgetGateLSTM, CoupledInputForgetGateLSTMCell,
                               LayerNormLSTM, LayerNormLSTMCell, PeepholeLSTM, PeepholeLSTMCell)
from zoo import presets, sampling

__all__ = ["Arch1", "Arch1Cell", "Arch2", "Arch2Cell", "CharClassifier", "CharLM",
           "CoupledInputForgetGateLSTM", "CoupledInputForgetGateLSTMCell", "FAMILIES", "GRU", "LSTM",
           "LayerNormLSTM", "LayerNormLSTMCell", "PeepholeLSTM", "PeepholeLSTMCell", "presets",
           "sampling"]
