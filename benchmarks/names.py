"""`charzoo bench --only names`: classifiers of names by language at equal wall-clock time.

charzoo (`charzoo classify train`, in a fresh process, as a user runs it) and
the PyTorch reference (`benchmarks.torch_names`, also a fresh process) train
one after the other on the same split of a class directory for the same
budget; a row compares their test accuracy. Default data: PyTorch's `names/`
folder (18 languages, ~20,000 surnames), given with `--data`.
"""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

BIDIRECTIONAL = {"model.bidirectional": True}
# name: (charzoo classifier preset, `--set` settings, PyTorch cell or None, bidirectional)
ROWS = {
    "gru": ("gru", {}, "gru", False),
    "gru-bi": ("gru", BIDIRECTIONAL, "gru", True),
    "gru-balanced": ("gru", {"balanced": True}, None, False),
    "lstm": ("lstm", {}, "lstm", False),
    "lstm-bi": ("lstm", BIDIRECTIONAL, "lstm", True),
    "arch1": ("arch1", {}, "rnn", False),
    "arch1-bi": ("arch1", BIDIRECTIONAL, "rnn", True),
    "lstm-peephole": ("lstm-peephole", {}, None, False),
    "lstm-peephole-bi": ("lstm-peephole", BIDIRECTIONAL, None, False),
    "lstm-cifg": ("lstm-cifg", {}, None, False),
    "lstm-cifg-bi": ("lstm-cifg", BIDIRECTIONAL, None, False),
    "lstm-ln": ("lstm-ln", {}, None, False),
    "lstm-ln-bi": ("lstm-ln", BIDIRECTIONAL, None, False),
}
ROOT = Path(__file__).resolve().parent.parent
HIDDEN = 128


def run_charzoo(preset, settings, directory, seconds, run_dir):
    command = [sys.executable, "-m", "training.cli", "classify", "train", preset, "--data",
               str(directory), "--max-time", str(seconds), "--run-dir", str(run_dir),
               "--set", "export=false"]
    command += [f"--set={key}={json.dumps(value)}" for key, value in settings.items()]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"charzoo classify train {preset} failed:\n{done.stderr[-2000:]}")
    metrics = json.loads((Path(run_dir) / "metrics.json").read_text())
    return {"test_accuracy": metrics["test"]["accuracy"], "steps": metrics["steps"],
            "majority": metrics["majority"],
            "balanced_accuracy": metrics["test"]["balanced_accuracy"]}


def run_torch(cell, bidirectional, directory, seconds):
    command = [sys.executable, "-m", "benchmarks.torch_names", str(directory), cell, str(HIDDEN),
               str(seconds)] + (["--bidirectional"] if bidirectional else [])
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the PyTorch names reference failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def names_rows(directory, seconds, names, row, has_torch=True):
    """One row per name of `ROWS`: charzoo's test accuracy (%) against PyTorch's."""
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for name in names:
            preset, settings, cell, bidirectional = ROWS[name]
            ours = run_charzoo(preset, settings, directory, seconds, Path(scratch) / name)
            theirs = run_torch(cell, bidirectional, directory, seconds) if cell and has_torch else None
            peer = f"torch nn.{cell.upper()}({HIDDEN}{', bidirectional' if bidirectional else ''})" if cell else None
            rows.append(row(f"names {name}, {seconds:.0f} s: test accuracy", 100 * ours["test_accuracy"], "%",
                            peer, theirs and 100 * theirs["test_accuracy"], target=1.0 if cell else None,
                            note=f"{ours['steps']:,} steps" + (f" vs {theirs['steps']:,}" if theirs else "")
                            + f"; mean recall per class {100 * ours['balanced_accuracy']:.1f}%"
                            + f"; majority class {100 * ours['majority']:.1f}%"))
    return rows
