import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from training import config as configuration
from training.distribute import check_tf_config, make_strategy
from training.run_dir import load_run_model
from training.loop import train

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}


@pytest.fixture(scope="module")
def mirrored():
    """tests/mirrored_check.py's comparison of two logical CPUs with one device."""
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "mirrored_check.py")], cwd=ROOT,
                          env=ENV, capture_output=True, text=True, timeout=300)  # 94 s on a 2-core AVX2 host
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def test_two_logical_cpus_are_two_replicas(mirrored):
    assert mirrored["replicas"] == 2


@pytest.mark.parametrize("case", ["adam_arch1", "adam_lstm", "sgd", "sgd_clipped"])
def test_mirrored_training_matches_one_device(mirrored, case):
    result = mirrored[case]
    assert result["initial"] == 0.0  # the comparison starts from the same weights
    assert result["weights"] < 1e-5, result
    assert result["replicas_apart"] == 0.0  # the replicas' copies stay identical
    assert result["state"] < 1e-5 and result["loss"] < 1e-5, result
    assert result["grad_norm"] < 1e-5, result
    assert result["iterations"] == 4  # one optimizer step per train step, not one per replica


def test_mirrored_training_with_dropout_keeps_the_replicas_identical(mirrored):
    result = mirrored["dropout_lstm"]
    assert result["replicas_apart"] == 0.0 and result["iterations"] == 4, result
    assert 0 < result["loss"] < 0.1, result  # other masks than one device's, the same model


def test_a_mirrored_run_resumes_and_matches_a_single_device_run(mirrored):
    result = mirrored["runs"]
    assert result["steps"] == 12
    assert result["weights"] < 1e-5 and result["valid_bpc"] < 1e-4, result


def test_clipping_binds_and_uses_the_global_norm(mirrored):
    assert all(mirrored["sgd_clipped"]["clipped"])
    assert not any(mirrored["sgd"]["clipped"])


def test_a_non_finite_replica_updates_nothing(mirrored):
    result = mirrored["non_finite"]
    assert not result["finite"] and result["weights"] == 0.0 and result["state_kept"]
    assert result["iterations"] == 0


def test_an_indivisible_global_batch_is_a_clear_error(mirrored):
    assert "divisible by the 2 replicas" in mirrored["indivisible"]


@pytest.mark.parametrize("text, message", [
    (None, "needs TF_CONFIG"),
    ("{not json", "malformed"),
    ('{"cluster": {"worker": ["a:1"]}}', "malformed"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 1}}', "malformed"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}', "malformed"),
])
def test_bad_tf_config_is_a_clear_error(text, message, monkeypatch):
    with pytest.raises(ValueError, match=message):
        check_tf_config(text)
    if text is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
        with pytest.raises(ValueError, match="TF_CONFIG='"):
            make_strategy("multiworker")


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow  # ~30 s: two processes; the mirrored test checks the distributed step's maths in CI
def test_two_workers_train_to_completion(tmp_path):
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    run = tmp_path / "run"  # one directory, as on a shared filesystem
    settings = ["model.units=8", "eval_every=1000", "eval_characters=2000", "export=false"]
    processes = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        command = [sys.executable, "-m", "training.cli", "train", "arch1", "--strategy",
                   "multiworker", "--data", "builtin", "--steps", "5", "--run-dir", str(run),
                   *(f"--set={setting}" for setting in settings)]
        processes.append(subprocess.Popen(
            command, cwd=ROOT, env={**ENV, "TF_CONFIG": json.dumps(tf_config)},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    deadline = time.monotonic() + 120
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=max(deadline - time.monotonic(), 1))[0])
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
    for process, output in zip(processes, outputs):
        assert process.returncode == 0, output[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    config = json.loads((run / "config.json").read_text())
    assert metrics["steps"] == 5
    assert metrics["characters_seen"] == 5 * config["batch_size"] * config["unrollings"]
    assert [p.name for p in (run / "checkpoints").glob("ckpt-5.index")] == ["ckpt-5.index"]
    single = train(configuration.resolve("arch1", configuration.parse_settings(
        ["data=builtin", "steps=5", *settings])),
                   tmp_path / "single")
    assert abs(single["valid_bpc"] - metrics["valid_bpc"]) < 1e-4
    for a, b in zip(load_run_model(run)[2].get_weights(),
                    load_run_model(tmp_path / "single")[2].get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
