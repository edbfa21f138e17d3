"""What reproduces: the same training twice in fresh processes gives the same weights bit for bit;
a checkpoint resumes only onto the data it was trained on; a killed run's temporaries are cleaned."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sidn.bundle import load_bundle
from sidn.train import train
from helpers.training import TRAIN, VAL, tiny_config

TRAIN_IN_A_FRESH_PROCESS = """
import sys
sys.path.insert(0, 'tests')
from helpers.training import TRAIN, VAL, tiny_config
from sidn.train import train
train(tiny_config(steps=3), TRAIN, VAL, sys.argv[1], progress=False)
"""


@pytest.mark.slow
def test_two_fresh_processes_train_the_same_weights_bit_for_bit(tmp_path):
    root = Path(__file__).resolve().parents[2]
    for name in ("a", "b"):
        subprocess.run([sys.executable, "-c", TRAIN_IN_A_FRESH_PROCESS, str(tmp_path / name)], cwd=root, check=True,
                       env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    a, _, extra = load_bundle(tmp_path / "a" / "model.pt")
    b, _, _ = load_bundle(tmp_path / "b" / "model.pt")
    for (name, ta), tb in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(ta, tb, rtol=0, atol=0, equal_nan=True, msg=name)
    assert extra["precision"] == "fp32" and extra["cpu_model"] and extra["cpu_isa"] and extra["threads"] == 1


def test_resume_onto_other_images_is_refused(tmp_path):
    train(tiny_config(steps=2), TRAIN, VAL, tmp_path, progress=False)
    with pytest.raises(ValueError, match="trained on other images"):
        train(tiny_config(steps=4), TRAIN[::-1].copy(), VAL, tmp_path, resume=True, progress=False)


def test_stale_temporaries_of_a_killed_run_are_removed(tmp_path):
    stale = tmp_path / ".checkpoint.pt.abc123.tmp"
    stale.write_bytes(b"")
    train(tiny_config(steps=1), TRAIN, VAL, tmp_path, progress=False)
    assert not stale.exists()
    assert not list(tmp_path.glob(".*.tmp"))
