"""SIDN losses against values computed by hand on tiny tensors (eq. 5, 8, 11-18, 19, 25)."""

from __future__ import annotations

import doctest
import math
from types import SimpleNamespace

import pytest
import torch

import sidn.losses as L
from sidn.config import LossConfig, ModelConfig
from sidn.losses import (
    SIDNLoss,
    centre_cosine_loss,
    feature_separation_loss,
    hypersphere_radii,
    kl_loss,
    segmentation_loss,
    student_t_assignment,
    target_distribution,
)
from sidn.model import SIDNOutput


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_docstring_examples() -> None:
    res = doctest.testmod(L, verbose=False)
    assert res.attempted >= 7 and res.failed == 0


# ------------------------------------------------------------------------------ eq. (5)
def test_segmentation_loss_by_hand() -> None:
    t = torch.tensor([0.9, 0.2]).reshape(1, 1, 1, 2)  # texture map
    d = torch.tensor([0.3, 0.6]).reshape(1, 1, 1, 2)  # defect map
    m = torch.tensor([0.0, 1.0]).reshape(1, 1, 1, 2)  # pixel 0 background, pixel 1 defect
    lam = 0.1
    texture_term = (-lam * math.log(0.9) - math.log(1 - 0.2)) / 2
    defect_term = (-lam * math.log(1 - 0.3) - math.log(0.6)) / 2
    got = segmentation_loss(t, d, m, lambda1=lam)
    assert got.item() == pytest.approx(texture_term + defect_term, rel=1e-5)
    assert got.item() > 0
    # logits path agrees
    lt, ld = torch.logit(t), torch.logit(d)
    got2 = segmentation_loss(t, d, m, lam, texture_logits=lt, defect_logits=ld)
    assert got2.item() == pytest.approx(got.item(), rel=1e-5)


def test_segmentation_loss_stable_when_saturated() -> None:
    a = torch.tensor([100.0, -100.0]).reshape(1, 1, 1, 2)
    m = torch.tensor([1.0, 0.0]).reshape(1, 1, 1, 2)  # the worst possible prediction
    p = torch.sigmoid(a)
    a.requires_grad_(True)
    loss = segmentation_loss(p, p, m, 0.1, texture_logits=a, defect_logits=-a)
    loss.backward()
    assert torch.isfinite(loss) and loss.item() > 50 and torch.isfinite(a.grad).all()


# ------------------------------------------------------------------------------ eq. (8)
def test_feature_separation_loss_by_hand() -> None:
    zt = torch.tensor([[1.0, 2.0], [0.0, 1.0]])
    zd = torch.tensor([[3.0, 1.0], [2.0, 0.0]])
    assert feature_separation_loss(zt, zd).item() == pytest.approx((5.0 + 0.0) / 2)
    cos0 = 5.0 / (math.sqrt(5) * math.sqrt(10))
    assert feature_separation_loss(zt, zd, mode="cosine").item() == pytest.approx(cos0 / 2, rel=1e-5)
    # [B, D, h, w] layout: positions are (b, y, x); same two positions as above
    zt4 = zt.T.reshape(1, 2, 1, 2)
    zd4 = zd.T.reshape(1, 2, 1, 2)
    assert feature_separation_loss(zt4, zd4).item() == pytest.approx(2.5)
    with pytest.raises(ValueError, match="mode"):
        feature_separation_loss(zt, zd, mode="x")


# ------------------------------------------------------------------------ eq. (11)-(17)
Z = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
C = torch.tensor([[0.0, 0.0], [2.0, 0.0]])


def test_student_t_assignment_by_hand() -> None:
    # alpha = 1: kernel 1 / (1 + d^2); d^2 = [[0, 4], [2, 2]]
    q = student_t_assignment(Z, C, alpha=1.0)
    expected = torch.tensor([[1 / 1.2, 0.2 / 1.2], [0.5, 0.5]])
    assert torch.allclose(q, expected, atol=1e-6)
    assert torch.allclose(q.sum(1), torch.ones(2))
    # alpha = 2: kernel (1 + d^2/2)^(-1.5)
    k0 = [1.0, (1 + 4 / 2) ** -1.5]
    q2 = student_t_assignment(Z, C, alpha=2.0)
    assert q2[0, 0].item() == pytest.approx(k0[0] / sum(k0), rel=1e-5)


def test_target_distribution_by_hand() -> None:
    q = torch.tensor([[5 / 6, 1 / 6], [0.5, 0.5]], requires_grad=True)
    p = target_distribution(q)
    f = [5 / 6 + 0.5, 1 / 6 + 0.5]
    row0 = [(5 / 6) ** 2 / f[0], (1 / 6) ** 2 / f[1]]
    row1 = [0.25 / f[0], 0.25 / f[1]]
    expected = torch.tensor([[v / sum(row0) for v in row0], [v / sum(row1) for v in row1]])
    assert torch.allclose(p, expected, atol=1e-6)
    assert not p.requires_grad  # detached target


def test_kl_loss_by_hand() -> None:
    q = torch.tensor([[5 / 6, 1 / 6], [0.5, 0.5]])
    p = torch.tensor([[25 / 27, 2 / 27], [1 / 3, 2 / 3]])
    by_hand = sum(
        p[i, k].item() * math.log(p[i, k].item() / q[i, k].item()) for i in range(2) for k in range(2)
    ) / 2
    assert kl_loss(p, q).item() == pytest.approx(by_hand, rel=1e-5)
    assert kl_loss(p, log_q=q.log()).item() == pytest.approx(by_hand, rel=1e-5)
    assert kl_loss(q, q).item() == pytest.approx(0.0, abs=1e-7)
    # 0 log 0 = 0
    assert torch.isfinite(kl_loss(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.5, 0.5]])))


def test_assignment_stable_for_far_features() -> None:
    z = torch.full((3, 4), 1e4)
    c = torch.randn(5, 4)
    q = student_t_assignment(z, c)
    assert torch.isfinite(q).all() and torch.allclose(q.sum(1), torch.ones(3))


# ---------------------------------------------------------------------------- eq. (18)
def test_centre_cosine_loss_by_hand() -> None:
    ct = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    cd = torch.tensor([[3.0, 3.0], [-1.0, 0.0]])
    s = 1 / math.sqrt(2)
    assert centre_cosine_loss(ct, cd).item() == pytest.approx((s - 1 + s + 0) / 4, rel=1e-5)


# ------------------------------------------------------------------------ eq. (13)-(14)
def test_hypersphere_radii_by_hand_and_empty_cluster() -> None:
    z = torch.tensor([[0.0, 0.0], [0.0, 1.0], [2.0, 1.0]])
    c = torch.tensor([[0.0, 0.0], [2.0, 0.0], [50.0, 50.0]])
    r = hypersphere_radii(z, c)
    assert r[0].item() == pytest.approx(0.5 + 3 * 0.5, abs=1e-5)  # distances 0, 1
    assert r[1].item() == pytest.approx(1.0, abs=1e-5)  # one member: std 0
    assert math.isnan(r[2].item())  # empty cluster
    assert not r.requires_grad


# ------------------------------------------------------------------------ eq. (19), (25)
def _fake(requires_grad: bool = True):  # type: ignore[no-untyped-def]
    g = torch.Generator().manual_seed(0)
    lt = torch.randn(2, 1, 4, 4, generator=g, requires_grad=requires_grad)
    ld = torch.randn(2, 1, 4, 4, generator=g, requires_grad=requires_grad)
    zt = torch.rand(2, 3, 2, 2, generator=g, requires_grad=requires_grad)
    zd = torch.rand(2, 3, 2, 2, generator=g, requires_grad=requires_grad)
    t, d = torch.sigmoid(lt), torch.sigmoid(ld)
    out = SIDNOutput(t, d, 0.5 * (1 - t) + 0.5 * d, zt, zd, lt, ld)
    model = SimpleNamespace(
        centres_t=torch.randn(4, 3, generator=g, requires_grad=requires_grad),
        centres_d=torch.randn(4, 3, generator=g, requires_grad=requires_grad),
    )
    mask = torch.zeros(2, 1, 4, 4)
    mask[:, :, 1:3, 1:3] = 1.0
    return out, mask, model


def test_sidn_loss_combines_terms() -> None:
    out, mask, model = _fake()
    lc = LossConfig(lambda1=0.2, lambda2=0.3, lambda3=0.4, lambda4=0.5)
    terms = SIDNLoss(lc, ModelConfig(alpha=1.0))(out, mask, model)
    l_s = segmentation_loss(out.texture, out.defect, mask, 0.2)
    l_z = feature_separation_loss(out.z_t, out.z_d)
    q_t = student_t_assignment(out.z_t, model.centres_t)
    q_d = student_t_assignment(out.z_d, model.centres_d)
    l_kl = kl_loss(target_distribution(q_t), q_t) + kl_loss(target_distribution(q_d), q_d)
    l_td = centre_cosine_loss(model.centres_t, model.centres_d)
    assert terms.l_s.item() == pytest.approx(l_s.item(), rel=1e-5)
    assert terms.l_z.item() == pytest.approx(l_z.item(), rel=1e-5)
    assert terms.l_kl.item() == pytest.approx(l_kl.item(), rel=1e-4)
    assert terms.l_td.item() == pytest.approx(l_td.item(), rel=1e-5)
    total = l_s + 0.3 * l_z + 0.4 * l_kl + 0.5 * l_td
    assert terms.total.item() == pytest.approx(total.item(), rel=1e-5)
    assert terms.radii_t.shape == terms.radii_d.shape == (4,)
    terms.total.backward()
    assert model.centres_t.grad is not None and out.z_t.grad is not None and out.texture_logits.grad is not None
    assert set(terms.scalars()) == {"total", "l_s", "l_z", "l_kl", "l_td"}


def test_ablation_a_no_clustering_losses() -> None:
    out, mask, model = _fake()
    terms = SIDNLoss(LossConfig(), ModelConfig(use_clustering=False))(out, mask, model)
    assert terms.l_kl.item() == 0.0 and terms.l_td.item() == 0.0
    assert terms.total.item() == pytest.approx(terms.l_s.item() + 0.01 * terms.l_z.item(), rel=1e-6)


def test_ablation_b_lambda4_zero() -> None:
    out, mask, model = _fake()
    full = SIDNLoss(LossConfig(), ModelConfig())(out, mask, model)
    b = SIDNLoss(LossConfig(lambda4=0.0), ModelConfig())(out, mask, model)
    assert b.l_td.item() == pytest.approx(full.l_td.item())  # still reported
    assert b.total.item() == pytest.approx(full.total.item() - 0.01 * full.l_td.item(), rel=1e-6)


def test_sidn_loss_without_logits_falls_back_to_probabilities() -> None:
    out, mask, model = _fake(requires_grad=False)
    a = SIDNLoss(LossConfig(), ModelConfig())(out, mask, model)
    out.texture_logits = out.defect_logits = None
    b = SIDNLoss(LossConfig(), ModelConfig())(out, mask, model)
    assert a.l_s.item() == pytest.approx(b.l_s.item(), rel=1e-5)


def test_sidn_loss_rejects_bad_config_and_shapes() -> None:
    with pytest.raises(ValueError, match="target_refresh"):
        SIDNLoss(LossConfig(target_refresh="epoch"), ModelConfig())
    with pytest.raises(ValueError, match="lambda2"):
        SIDNLoss(LossConfig(lambda2=-1.0), ModelConfig())
    out, mask, model = _fake()
    with pytest.raises(ValueError, match="mask shape"):
        SIDNLoss(LossConfig(), ModelConfig())(out, mask[:, :, :2], model)


def test_sidn_loss_under_bf16_autocast_is_float32() -> None:
    out, mask, model = _fake(requires_grad=False)
    out.z_t, out.z_d = out.z_t.bfloat16(), out.z_d.bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        terms = SIDNLoss(LossConfig(), ModelConfig())(out, mask, model)
    for name in ("total", "l_s", "l_z", "l_kl", "l_td"):
        assert getattr(terms, name).dtype == torch.float32, name
