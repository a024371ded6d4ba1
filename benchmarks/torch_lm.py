"""The PyTorch reference char-LM of the quality benchmark, trained for a wall-clock budget.

The maths of the reference script the issue names (`torch_charlm.py`):
`nn.Embedding(V, 64)` -> `nn.LSTM` / `nn.GRU` / `nn.RNN` -> `nn.Linear`, batch 64,
50 unrollings, Adam at 2e-3 without decay, the global gradient norm clipped to
1.25, the state carried across windows. Two things differ, both so that its
figures compare with charzoo's: it reads the same split (`.npy` files the
benchmark writes from `training.data`), and it validates the way charzoo
does (parallel streams, the state carried), every `eval_every_seconds`
inside its budget, so that both curves pay for their validations. Like
`charzoo train`, it also keeps the weights of its best periodic validation
and scores them at the end, so the two sides compare as early stopping
would leave them as well as by their last weights.

Run as `python -m benchmarks.torch_lm SPEC.json`; prints one JSON line.
"""

import copy
import json
import math
import sys
import time

import numpy as np

from training.batches import evaluation_windows

RECIPE = {"embedding": 64, "batch_size": 64, "unrollings": 50, "learning_rate": 2e-3,
          "clip_norm": 1.25}


def build(torch, cell, vocabulary, hidden, activation="tanh", seed=0):
    nn = torch.nn
    torch.manual_seed(seed)
    embed = nn.Embedding(vocabulary, RECIPE["embedding"])
    if cell == "rnn":
        core = nn.RNN(RECIPE["embedding"], hidden, nonlinearity=activation, batch_first=True)
    else:
        core = {"lstm": nn.LSTM, "gru": nn.GRU}[cell](RECIPE["embedding"], hidden, batch_first=True)
    return embed, core, nn.Linear(hidden, vocabulary)


def evaluate(torch, parts, ids, vocabulary, max_characters=None, streams=128, window=64):
    """Bits per character over `ids`, as `training.step.Trainer.evaluate` scores them."""
    embed, core, head = parts
    if max_characters is not None:
        ids = ids[: max_characters + 1]
    total, count, state = 0.0, 0, None
    with torch.inference_mode():
        for inputs, targets in evaluation_windows(ids, streams, window):
            outputs, state = core(embed(torch.from_numpy(inputs).long()), state)
            logits = head(outputs).reshape(-1, vocabulary)
            total += torch.nn.functional.cross_entropy(
                logits, torch.from_numpy(targets).long().reshape(-1), reduction="sum").item()
            count += targets.size
    return total / count / math.log(2)


def train(spec):
    """Trains for `spec["seconds"]` of wall-clock, validations included; returns the figures.

    Args:
        spec: dict with `train`, `valid`, `test` (paths of uint8 `.npy` id arrays),
            `vocabulary`, `cell` (lstm, gru or rnn), `hidden`, `activation` (rnn only),
            `seconds`, `eval_every_seconds`, `eval_characters`, and optionally
            `seed` (of the initialisation; default 0).
    """
    import torch

    nn = torch.nn
    started = time.monotonic()
    splits = {name: np.load(spec[name]) for name in ("train", "valid", "test")}
    vocabulary = spec["vocabulary"]
    parts = build(torch, spec["cell"], vocabulary, spec["hidden"], spec.get("activation", "tanh"),
                  spec.get("seed", 0))
    embed, core, head = parts
    parameters = [p for part in parts for p in part.parameters()]
    optimizer = torch.optim.Adam(parameters, RECIPE["learning_rate"])
    batch, unrollings = RECIPE["batch_size"], RECIPE["unrollings"]
    ids = torch.from_numpy(splits["train"].astype(np.int64))
    stream = len(ids) // batch
    streams = ids[: stream * batch].view(batch, stream)

    def validate():
        return evaluate(torch, parts, splits["valid"], vocabulary, spec["eval_characters"])

    curve, position, state, characters, best = [], 0, None, 0, None
    clock = time.monotonic()  # the budget starts here, as charzoo's --max-time does
    next_validation = spec["eval_every_seconds"]
    while (elapsed := time.monotonic() - clock) < spec["seconds"]:
        if elapsed >= next_validation:
            curve.append({"seconds": elapsed, "characters": characters, "bpc": validate()})
            if best is None or curve[-1]["bpc"] < best["bpc"]:
                best = {"bpc": curve[-1]["bpc"], "weights": copy.deepcopy(
                    [part.state_dict() for part in parts])}
            next_validation += spec["eval_every_seconds"]
        if position + unrollings + 1 > stream:
            position, state = 0, None
        x = streams[:, position:position + unrollings]
        y = streams[:, position + 1:position + unrollings + 1]
        position += unrollings
        outputs, state = core(embed(x), state)
        state = tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()
        loss = nn.functional.cross_entropy(head(outputs).reshape(-1, vocabulary), y.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(parameters, RECIPE["clip_norm"])
        optimizer.step()
        characters += x.numel()
    seconds = time.monotonic() - clock
    valid = evaluate(torch, parts, splits["valid"], vocabulary)
    test = evaluate(torch, parts, splits["test"], vocabulary)
    curve.append({"seconds": seconds, "characters": characters, "bpc": valid})
    return {"seconds": seconds, "start_up_seconds": clock - started, "characters": characters,
            "chars_per_second": characters / seconds, "valid_bpc": valid, "test_bpc": test,
            "best": best_weights(torch, parts, splits, vocabulary, best, valid, test),
            "curve": curve, "torch": torch.__version__}


def best_weights(torch, parts, splits, vocabulary, best, last_valid, last_test):
    """`{"valid_bpc", "test_bpc"}` of the weights early stopping keeps, as `charzoo train`
    chooses them: the best periodic validation's, if they also beat the last weights over
    the whole validation split, else the last."""
    if best is not None:
        for part, weights in zip(parts, best["weights"]):
            part.load_state_dict(weights)
        valid = evaluate(torch, parts, splits["valid"], vocabulary)
        if valid < last_valid:
            return {"valid_bpc": valid, "test_bpc": evaluate(torch, parts, splits["test"], vocabulary)}
    return {"valid_bpc": last_valid, "test_bpc": last_test}


if __name__ == "__main__":
    print(json.dumps(train(json.loads(open(sys.argv[1]).read()))))
