"""The saved zoo: every preset trained on one corpus, exported into one models directory."""

from pathlib import Path

from training import config as configuration
from training import data
from training.export import export_run
from training.loop import train
from training.run_dir import RunDir, read_json, write_json
from zoo import presets

COLUMNS = ["name", "family", "parameters", "valid_bpc", "test_bpc", "chars_per_second",
           "steps", "characters_seen", "version", "checkpoint"]


def build(models_dir, runs_dir, data_spec="text8", normalize=None, max_time=None, steps=None,
          names=None, overrides=None):
    """Trains (or resumes) each preset in `names`, exports it and writes the index.

    A preset whose run already finished is exported again only if it has no
    export in `models_dir`, so an interrupted build picks up where it stopped.

    Returns:
        The index rows, one per preset.
    """
    models_dir, runs_dir = Path(models_dir), Path(runs_dir)
    corpus = data.load(data_spec, normalize)
    rows = []
    for name in names or presets.names():
        run = RunDir(runs_dir / name)
        limits = {"max_time": max_time, "steps": steps}
        config = configuration.resolve(name, {
            "data": data_spec, "normalize": normalize, "export": False, **(overrides or {}),
            **{key: value for key, value in limits.items() if value is not None}})
        if run.metrics() is None:
            print(f"charzoo: zoo build: training {name}", flush=True)
            train(config, run.path, corpus)
        existing = sorted(int(p.name) for p in (models_dir / name).glob("[0-9]*")) if (
            models_dir / name).exists() else []
        version = existing[-1] if existing else int(export_run(run.path, models_dir, name).name)
        card = read_json(models_dir / name / str(version) / "assets" / "model.json")
        rows.append(index_row(name, version, card))
    write_json(models_dir / "index.json", {"corpus": corpus.name, "normalize": corpus.normalize,
                                           "models": rows})
    (models_dir / "index.md").write_text(markdown_table(rows, corpus.name))
    return rows


def index_row(name, version, card):
    """A row of the index, from the export's model card: what was exported, not what was meant."""
    return {"name": name, "family": card["family"], "parameters": card["parameters"],
            "valid_bpc": card["valid_bpc"], "test_bpc": card["test_bpc"],
            "chars_per_second": card["metrics"]["chars_per_second"], "steps": card["steps"],
            "characters_seen": card["characters_seen"], "version": version,
            "checkpoint": f"{card['checkpoint']['which']} (step {card['checkpoint']['step']:,})"}


def markdown_table(rows, corpus_name):
    lines = [f"Models trained on {corpus_name}.", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    for row in rows:
        cells = [f"{row[c]:,.0f}" if c == "chars_per_second" else
                 f"{row[c]:.3f}" if c.endswith("bpc") else
                 f"{row[c]:,}" if isinstance(row[c], int) else str(row[c]) for c in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
