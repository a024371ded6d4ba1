"""`charzoo bench --quality`: the model each side has after the same wall-clock time.

charzoo (`charzoo train PRESET --max-time S`, in a fresh process, as a user runs
it) and the PyTorch reference (`benchmarks.torch_lm`, also a fresh process)
train one after the other on the same corpus and split for the same budget,
validations included on both sides. Two rows compare their test BPC: of the last
weights, and of the weights early stopping keeps (the best validation's, which
`charzoo train` exports); others their characters trained, chars/s over the whole
budget, and start-up.
`plot` draws both sides' validation curves against wall-clock time.
"""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from training import data

# name: (charzoo preset, model overrides, PyTorch cell, its hidden size). Arch 1's
# state and Arch 2's hidden layer are 2n wide: the nn.RNN of matching state size.
ROWS = {
    "lstm-256": ("lstm", {"units": 256}, "lstm", 256),
    "lstm-512": ("lstm", {}, "lstm", 512),
    "gru-512": ("gru", {}, "gru", 512),
    # Dropout 0.2 (`lstm-dropout`, `gru-dropout`): for small corpora and long budgets.
    "lstm-256-dropout": ("lstm-dropout", {"units": 256}, "lstm", 256),
    "lstm-512-dropout": ("lstm-dropout", {}, "lstm", 512),
    "gru-512-dropout": ("gru-dropout", {}, "gru", 512),
    "arch1": ("arch1", {}, "rnn", 200),
    "arch1-mul": ("arch1-mul", {}, "rnn", 200),
    "arch1-tuned": ("arch1-tuned", {}, "rnn", 200),
    "arch1-tuned-dropout": ("arch1-tuned-dropout", {}, "rnn", 200),
    "arch2": ("arch2", {}, "rnn", 100),
}
ROOT = Path(__file__).resolve().parent.parent
VALIDATIONS = 10  # per budget, on both sides: the points of the curves


def charzoo_command(preset, overrides, corpus_spec, normalize, seconds, seed, run):
    """`charzoo train` as a user types it, with the row's model overrides and seed."""
    command = [sys.executable, "-m", "training.cli", "train", preset, "--data", corpus_spec,
               "--max-time", str(seconds), "--run-dir", str(run), "--seed", str(seed),
               "--set", "export=false", "--set", f"eval_every_seconds={seconds / VALIDATIONS}"]
    command += [f"--set=model.{key}={value}" for key, value in overrides.items()]
    return command + (["--normalize", normalize] if normalize else [])


def run_charzoo(name, preset, overrides, corpus_spec, normalize, seconds, seed, directory):
    """Trains like a user does, in a fresh process; returns its metrics and curve."""
    run = Path(directory) / name  # a run directory per row: rows of one preset must not resume
    command = charzoo_command(preset, overrides, corpus_spec, normalize, seconds, seed, run)
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"charzoo train {preset} failed:\n{done.stderr[-2000:]}")
    metrics = json.loads((run / "metrics.json").read_text())
    return {"test_bpc": metrics["test_bpc"], "valid_bpc": metrics["valid_bpc"],
            "best": {key: metrics["best"][key] for key in ("valid_bpc", "test_bpc")},
            "unaveraged": metrics.get("unaveraged"),  # with weight_average: the trained weights'
            "characters": metrics["characters_seen"], "seconds": metrics["seconds"],
            "chars_per_second": metrics["chars_per_second_overall"],
            "start_up_seconds": metrics["timing"]["start_up"],
            "first_call_seconds": metrics["timing"]["first_call"], "curve": read_curve(run)}


def read_curve(run):
    """The run's validations as `[{seconds, characters, bpc}]`, from its TensorBoard logs."""
    from training.tensorboard import read_summaries

    validation = run / "logs" / "validation"
    by_seconds, by_characters = (read_summaries(validation, tag)
                                 for tag in ("bpc_by_seconds", "bpc_by_characters"))
    return [{"seconds": s, "characters": c, "bpc": float(bpc)}
            for (s, bpc), (c, _) in zip(by_seconds, by_characters)]


def run_torch(cell, hidden, splits, vocabulary, seconds, seed, directory):
    spec = {**splits, "vocabulary": vocabulary, "cell": cell, "hidden": hidden,
            "seconds": seconds, "eval_every_seconds": seconds / VALIDATIONS,
            "eval_characters": 500_000, "seed": seed}
    path = Path(directory) / f"torch-{cell}-{hidden}.json"
    path.write_text(json.dumps(spec))
    done = subprocess.run([sys.executable, "-m", "benchmarks.torch_lm", str(path)], cwd=ROOT,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the PyTorch reference failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def quality_rows(row, names, corpus_spec="tinyshakespeare", normalize="text8", seconds=300.0,
                 has_torch=True, seed=0):
    """Runs the rows `names` (keys of ROWS); returns (bench rows, curves by name).

    `seed` seeds both sides' initialisation (and charzoo's dropout and sampling): single
    runs of a row differ by ~0.01-0.02 bpc, so a verdict that close needs other seeds.
    """
    corpus = data.load(corpus_spec, normalize)
    rows, curves, torch_runs = [], {}, {}
    with tempfile.TemporaryDirectory() as directory:
        splits = {}
        for part in ("train", "valid", "test"):
            splits[part] = str(Path(directory) / f"{part}.npy")
            np.save(splits[part], getattr(corpus, part))
        for name in names:
            preset, overrides, cell, hidden = ROWS[name]
            ours = run_charzoo(name, preset, overrides, corpus_spec, normalize, seconds, seed,
                               directory)
            if has_torch and (cell, hidden) not in torch_runs:
                torch_runs[cell, hidden] = run_torch(cell, hidden, splits, len(corpus.alphabet),
                                                     seconds, seed, directory)
            peer = torch_runs.get((cell, hidden))
            curves[name] = {"charzoo": ours["curve"], "torch": peer and peer["curve"],
                            "peer": f"torch nn.{cell.upper()}({hidden})"}
            rows += pair_rows(row, name, seconds, ours, peer, f"torch nn.{cell.upper()}({hidden})",
                              seed)
    return rows, curves


def pair_rows(row, name, seconds, ours, peer, peer_name, seed=0):
    get = (lambda key: peer[key]) if peer else (lambda key: None)
    best = peer["best"]["test_bpc"] if peer else None
    note = None if peer else "torch not importable: skipped"
    label = f"quality {name}, {seconds:g} s" + (f", seed {seed}" if seed else "")
    return [
        row(f"{label}: test BPC", ours["test_bpc"], "bpc", peer_name, get("test_bpc"),
            target=get("test_bpc"), lower_is_better=True, note=note),
        row(f"{label}: test BPC, best validation's weights", ours["best"]["test_bpc"], "bpc",
            peer_name, best, target=best, lower_is_better=True, note=note),
        *([row(f"{label}: test BPC of the trained weights, unaveraged",
               ours["unaveraged"]["test_bpc"], "bpc", peer_name, get("test_bpc"),
               note="charzoo's rows above score the weights' moving average")]
          if ours.get("unaveraged") else []),
        row(f"{label}: characters trained", float(ours["characters"]), "chars", peer_name,
            get("characters")),
        row(f"{label}: chars/s over the budget", ours["chars_per_second"], "chars/s", peer_name,
            get("chars_per_second")),
        row(f"{label}: start-up before training", ours["start_up_seconds"] or 0.0, "s",
            peer_name, get("start_up_seconds"),
            note=f"charzoo's first call (mostly compilation): {ours['first_call_seconds']:.1f} s"),
    ]


def plot(curves, path, title):
    """Validation BPC against seconds of training: charzoo's rows solid, each PyTorch peer
    once, dashed; gated models and vanilla RNNs on separate panels."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    panels = {"LSTM and GRU": [], "vanilla RNNs": []}
    for name, sides in curves.items():
        panels["vanilla RNNs" if "RNN(" in sides["peer"] else "LSTM and GRU"].append(name)
    panels = {title: names for title, names in panels.items() if names}
    figure, axes = pyplot.subplots(1, len(panels), figsize=(6 * len(panels), 4.5), squeeze=False)
    for axis, (panel, names) in zip(axes[0], panels.items()):
        drawn = set()
        for index, name in enumerate(names):
            sides = curves[name]
            lines = [("charzoo", "-", f"charzoo {name}")]
            if sides["peer"] not in drawn:
                lines.append(("torch", "--", sides["peer"]))
                drawn.add(sides["peer"])
            for side, style, label in lines:
                points = sides[side]
                if points:
                    axis.plot([p["seconds"] for p in points], [p["bpc"] for p in points], style,
                              color=f"C{index}", marker="o", markersize=3, label=label)
        axis.set_title(panel, fontsize=10)
        axis.set_xlabel("seconds of training (validations included)")
        axis.set_ylabel("validation bits per character")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    pyplot.close(figure)
