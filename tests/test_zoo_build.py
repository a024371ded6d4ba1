import json

from training import zoo_build
from training.cli import main


def test_zoo_build_trains_exports_indexes_and_resumes(tmp_path, capsys):
    models, runs = tmp_path / "models", tmp_path / "runs"
    overrides = {"model": {"units": 8}, "eval_every": 1000, "batch_size": 8, "unrollings": 10}
    rows = zoo_build.build(models, runs, "builtin", steps=6, names=["arch1", "lstm"], overrides=overrides)
    assert [r["name"] for r in rows] == ["arch1", "lstm"]
    for row in rows:
        assert (models / row["name"] / "1" / "saved_model.pb").exists()
        assert row["steps"] == 6 and 0 < row["valid_bpc"] < 6 and row["parameters"] > 0
        card = json.loads((models / row["name"] / "1" / "assets" / "model.json").read_text())
        assert (row["valid_bpc"], row["parameters"]) == (card["valid_bpc"], card["parameters"])
        assert row["checkpoint"] == f"{card['checkpoint']['which']} (step {card['checkpoint']['step']})"
    index = json.loads((models / "index.json").read_text())
    assert index["corpus"] == "builtin" and len(index["models"]) == 2
    assert "| arch1 | arch1 |" in (models / "index.md").read_text()
    again = zoo_build.build(models, runs, "builtin", steps=6, names=["arch1", "lstm"], overrides=overrides)
    assert again == rows  # finished runs are neither retrained nor exported again
    assert sorted(p.name for p in (models / "arch1").iterdir()) == ["1"]


def test_models_command_lists_every_preset(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in ("arch1", "arch1-add", "arch1-tanh", "arch1-mul", "arch1-orth", "arch2", "irnn", "lstm", "gru"):
        assert f"\n{name} " in out
    assert "28,327" in out  # the arch1 reference's parameter count
