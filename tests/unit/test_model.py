"""SIDN network: shapes, gradients, GSRM attention, input checks, ablations, FLOPs."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from sidn.config import LossConfig, ModelConfig
from sidn.losses import SIDNLoss
from sidn.model import FEM, FSEM, GSRM, SIDN, SM, SIDNOutput, count_flops, count_parameters

S = 64  # test image size (multiple of 16)


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(n)


def _batch(b: int = 2, s: int = S) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.rand(b, 1, s, s)
    mask = torch.zeros(b, 1, s, s)
    mask[:, :, 10:20, 30:44] = 1.0
    return x, mask


# ------------------------------------------------------------------------------- shapes
def test_module_shapes() -> None:
    c = 16
    x = torch.rand(2, 1, S, S)
    z = FEM(1, c)(x)
    assert z.shape == (2, 2 * c, S // 2, S // 2)  # eq. (2)
    fsem = FSEM(c, 12)
    z_t, z_d = fsem(z)
    assert z_t.shape == z_d.shape == (2, 16 * c, S // 16, S // 16)  # eq. (6)-(7)
    assert fsem.centres_t.shape == fsem.centres_d.shape == (12, 16 * c)
    assert (z_t >= 0).all() and (z_d >= 0).all()  # leave a ReLU -> L_z bounded below
    zp = GSRM(16 * c)(z_t, fsem.centres_t)
    assert zp.shape == z_t.shape  # eq. (24)
    assert SM(c)(zp).shape == (2, 1, S, S)  # eq. (3)


def test_sidn_output_fields_and_fusion() -> None:
    cfg = ModelConfig(lambda_f=0.3)
    m = SIDN(cfg).eval()
    x, _ = _batch()
    with torch.no_grad():
        out = m(x)
    assert isinstance(out, SIDNOutput)
    for name in ("texture", "defect", "fused", "texture_logits", "defect_logits"):
        t = getattr(out, name)
        assert t.shape == (2, 1, S, S) and t.dtype == torch.float32, name
    assert out.z_t.shape == out.z_d.shape == (2, 256, S // 16, S // 16)
    assert torch.allclose(out.texture, torch.sigmoid(out.texture_logits))
    assert ((out.texture > 0) & (out.texture < 1)).all()
    expected = 0.7 * (1 - out.texture) + 0.3 * out.defect  # eq. (26)
    assert torch.allclose(out.fused, expected)
    assert m.centres_t is m.fsem.centres_t and m.centres_t.shape == (12, 256)


def test_non_square_input() -> None:
    m = SIDN().eval()
    with torch.no_grad():
        out = m(torch.rand(1, 1, 32, 48))
    assert out.fused.shape == (1, 1, 32, 48)
    assert out.z_t.shape == (1, 256, 2, 3)


# ---------------------------------------------------------------------------- gradients
def test_backward_every_parameter_gets_gradient() -> None:
    """timm ``test_model_backward`` style: one SIDNLoss backward, all grads present and finite."""
    mc = ModelConfig()
    m = SIDN(mc).train()
    x, mask = _batch()
    terms = SIDNLoss(LossConfig(), mc)(m(x), mask, m)
    assert torch.isfinite(terms.total)
    terms.total.backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None]
    assert not missing, f"no gradient for: {missing}"
    bad = [n for n, p in m.named_parameters() if not torch.isfinite(p.grad).all()]
    assert not bad, f"non-finite gradient for: {bad}"
    assert m.centres_t.grad.abs().sum() > 0 and m.centres_d.grad.abs().sum() > 0


def test_bf16_autocast_forward_backward() -> None:
    mc = ModelConfig()
    m = SIDN(mc).train()
    x, mask = _batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(x)
        terms = SIDNLoss(LossConfig(), mc)(out, mask, m)
    assert out.fused.dtype == torch.float32 and torch.isfinite(out.fused).all()
    assert terms.total.dtype == torch.float32
    terms.total.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())


def test_channels_last_matches_contiguous() -> None:
    a = SIDN(channels_last=True).eval()
    b = SIDN(channels_last=False).eval()
    b.load_state_dict(a.state_dict())
    x = torch.rand(1, 1, S, S)
    with torch.no_grad():
        oa, ob = a(x), b(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(oa.fused, ob.fused, atol=1e-5)
    assert a.fem.stem[0].weight.is_contiguous(memory_format=torch.channels_last)


# --------------------------------------------------------------------------------- GSRM
def test_gsrm_attention_rows_sum_to_one_and_is_n_by_k() -> None:
    d, k = 32, 5
    g = GSRM(d)
    centres = torch.randn(k, d)
    for h, w in ((4, 4), (8, 6)):
        z = torch.randn(2, d, h, w)
        out, m = g(z, centres, return_attention=True)
        assert m.shape == (2, h * w, k)  # O(N*K), never N x N
        assert torch.allclose(m.sum(-1), torch.ones(2, h * w), atol=1e-6)
        assert out.shape == z.shape


def test_gsrm_matches_equations_23_24() -> None:
    d, k = 8, 3
    g = GSRM(d)
    centres = torch.randn(k, d)
    z = torch.randn(1, d, 2, 3)
    keys = g.key(z).reshape(d, 6).T  # K' [N, D]
    m = torch.softmax(keys @ centres.T, dim=1)  # eq. (23)
    expected = g.value(z) + (m @ centres).T.reshape(1, d, 2, 3)  # eq. (24)
    assert torch.allclose(g(z, centres), expected, atol=1e-5)


# -------------------------------------------------------------------------- input checks
@pytest.mark.parametrize(
    ("shape", "needle"),
    [((1, 1, 250, 250), "256x256"), ((1, 1, 8, 40), "16x48"), ((1, 1, 64, 70), "64x64")],
)
def test_bad_size_names_a_valid_size(shape: tuple[int, ...], needle: str) -> None:
    m = SIDN().eval()
    with pytest.raises(ValueError, match=needle):
        m(torch.rand(*shape))


def test_bad_channels_and_rank() -> None:
    m = SIDN().eval()
    with pytest.raises(ValueError, match="channel"):
        m(torch.rand(1, 3, S, S))
    with pytest.raises(ValueError, match="4-D"):
        m(torch.rand(1, S, S))


def test_bad_config_values() -> None:
    with pytest.raises(ValueError, match="center_init"):
        SIDN(ModelConfig(center_init="bogus"))
    with pytest.raises(ValueError, match="lambda_f"):
        SIDN(ModelConfig(lambda_f=1.5))


# ------------------------------------------------------------------- buffers / centres
def test_threshold_buffers_start_nan_and_travel_in_state_dict() -> None:
    m = SIDN()
    assert torch.isnan(m.threshold) and torch.isnan(m.score_threshold)
    assert not m.is_calibrated
    sd = m.state_dict()
    assert "threshold" in sd and "score_threshold" in sd
    m.threshold.fill_(0.42)
    m.score_threshold.fill_(0.7)
    assert m.is_calibrated
    m2 = SIDN()
    m2.load_state_dict(m.state_dict())
    assert m2.is_calibrated and float(m2.threshold) == pytest.approx(0.42)


def test_kmeans_centre_init() -> None:
    m = SIDN(ModelConfig(center_init="kmeans"))
    assert m.needs_centre_init
    x, _ = _batch()
    with torch.no_grad():
        out = m(x)
    before = m.centres_t.detach().clone()
    m.init_centres_from(out.z_t, out.z_d)
    assert not m.needs_centre_init
    assert not torch.equal(before, m.centres_t)
    # every centre sits at the mean of some features -> inside the (non-negative) feature cone
    assert (m.centres_t >= 0).all()
    assert not SIDN(ModelConfig(center_init="normal")).needs_centre_init
    # the flag is persistent (resume does not redo the init)
    m2 = SIDN(ModelConfig(center_init="kmeans"))
    m2.load_state_dict(m.state_dict())
    assert not m2.needs_centre_init


# ----------------------------------------------------------------------------- ablations
def test_ablation_no_gsrm_feeds_fsem_features_to_sm() -> None:
    m = SIDN(ModelConfig(use_gsrm=False)).eval()
    assert m.gsrm_t is None and m.gsrm_d is None
    seen: dict[str, torch.Tensor] = {}

    def hook(mod: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        seen["sm_in"] = inp[0]

    m.sm_t.register_forward_hook(hook)
    with torch.no_grad():
        out = m(torch.rand(1, 1, S, S))
    assert torch.equal(seen["sm_in"], out.z_t)  # Z' = Z
    full = SIDN(ModelConfig())
    assert count_parameters(full) - count_parameters(m) == 2 * 2 * (256 * 256 + 256)


def test_ablation_switches_change_output() -> None:
    torch.manual_seed(1)
    full = SIDN(ModelConfig()).eval()
    ablated = SIDN(ModelConfig(use_gsrm=False)).eval()
    ablated.load_state_dict(full.state_dict(), strict=False)
    x = torch.rand(1, 1, S, S)
    with torch.no_grad():
        assert not torch.allclose(full(x).fused, ablated(x).fused)


# -------------------------------------------------------------------------------- FLOPs
def test_count_flops_single_conv_by_hand() -> None:
    conv = nn.Conv2d(1, 16, 3, padding=1)
    assert count_flops(conv, size=64) == 2 * 64 * 64 * 16 * 9
    deconv = nn.ConvTranspose2d(4, 2, 4, stride=2, padding=1)
    assert count_flops(deconv, size=8) == 2 * (4 * 8 * 8) * 2 * 16
    g = GSRM(8)
    assert g.macs(256, 12) == 2 * 256 * 12 * 8


def test_count_flops_sidn_scales_with_pixels() -> None:
    m = SIDN()
    f64 = count_flops(m, size=64)
    assert count_flops(m, size=128) == 4 * f64  # every term is per-pixel
    assert m.training  # mode restored
    # FEM first conv alone: 64*64*16*9 MACs are part of it
    assert f64 > 2 * 64 * 64 * 16 * 9
    assert count_parameters(m) == sum(p.numel() for p in m.parameters())


def test_config_dataclass_unchanged_by_model() -> None:
    cfg = ModelConfig()
    SIDN(cfg)
    assert dataclasses.asdict(cfg) == dataclasses.asdict(ModelConfig())
