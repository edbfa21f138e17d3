"""sidn.heap: inside reuse_heap a training step stops page-faulting its buffers in anew (glibc)."""

from __future__ import annotations

import resource
import threading

import pytest
import torch

from sidn.config import SIDNConfig
from sidn.heap import _glibc, reuse_heap
from sidn.model.sidn import SIDN

pytestmark = pytest.mark.skipif(_glibc() is None, reason="needs glibc")


@pytest.fixture(scope="module")
def step():
    """A forward + backward pass of a SIDN at 128 px, batch 8; returns its minor page faults."""
    torch.manual_seed(0)
    model, x = SIDN(SIDNConfig().model), torch.rand(8, 1, 128, 128)

    def run() -> int:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        model(x).fused.mean().backward()
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    return run


def _steady_faults(step) -> int:
    """Fewest page faults of a step, over the three after three warm-up steps."""
    return min([step() for _ in range(6)][3:])


def test_training_steps_reuse_freed_buffers_inside_and_not_outside(step):
    outside = _steady_faults(step)
    assert outside > 1000  # glibc's default: large buffers are fresh mmap regions every step
    with reuse_heap() as active:
        assert active
        assert _steady_faults(step) < outside / 20
    assert _steady_faults(step) > outside / 4  # the defaults are back


def test_the_last_of_overlapping_users_restores_the_defaults(step):
    outside = _steady_faults(step)
    inside, leave = threading.Event(), threading.Event()

    def other_user() -> None:
        with reuse_heap():
            inside.set()
            leave.wait(30)

    t = threading.Thread(target=other_user)
    with reuse_heap():
        t.start()
        inside.wait(30)
    assert _steady_faults(step) < outside / 20  # the other user (a Prefect task thread) still trains
    leave.set()
    t.join()
    assert _steady_faults(step) > outside / 4
