"""The loss terms of issue #20 and #19: nodata never enters an SSIM window (normalised convolution, in the loss and in
the reconstruction metric), and the faster loss equals the loss before issue #20 (values and gradients, no nodata):
`frozen_losses_6c94a9b.py` is a verbatim copy of hyperkd/losses.py at commit 6c94a9b."""
import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hyperkd import kernels, losses
from hyperkd.evaluate import reconstruction_metrics

_spec = importlib.util.spec_from_file_location("frozen_losses", Path(__file__).parent / "frozen_losses_6c94a9b.py")
frozen = importlib.util.module_from_spec(_spec)
sys.modules["frozen_losses"] = frozen  # dataclasses look their module up there
_spec.loader.exec_module(frozen)

SSIM_HAND = (2 * 0.31 * 0.30 + 0.01 ** 2) / (0.31 ** 2 + 0.30 ** 2 + 0.01 ** 2)  # constant images: the luminance part


def _constant_pair(nodata_rows: int, dtype=torch.float64):
    "float64: in float32 the windowed variances E[p²] − E[p]² of a constant 0.31 carry ~1e-8 rounding, 1e-5 of C2"
    target = torch.full((1, 4, 16, 16), 0.30, dtype=dtype)
    pred = torch.full((1, 4, 16, 16), 0.31, dtype=dtype)
    target[:, :, :nodata_rows] = float("nan")
    return pred, target


def test_ssim_windows_leave_nodata_out():
    assert round(SSIM_HAND, 5) == 0.99946
    pred, clean = _constant_pair(0)
    _, holed = _constant_pair(4)  # the top 4 rows nodata: the same valid pixels as the bottom 12 rows of `clean`
    assert round(1 - float(losses.ssim_loss(pred, clean, data_range=1.0)), 5) == 0.99946
    # before the fix the windows of the rows next to the nodata saw zeros: 0.777
    assert round(1 - float(frozen.ssim_loss(pred, holed, data_range=1.0)), 3) == 0.777
    assert round(1 - float(losses.ssim_loss(pred, holed, data_range=1.0)), 5) == 0.99946
    # the loss term inside HyperKDLoss, with and without the MAE mask
    mask = torch.zeros(1, 1, 16, 16, dtype=torch.float64); mask[..., 8:] = 1
    for m in (None, mask):
        _, terms = losses.HyperKDLoss(ssim_data_range=1.0)(pred, holed, m)
        assert round(1 - float(terms["ssim"]), 5) == 0.99946
    # the map itself at every valid pixel, and a window range taken from valid pixels only (data_range=None)
    s = losses.ssim_map(pred, holed.nan_to_num(0.0), data_range=1.0, valid=losses._finite(holed))
    torch.testing.assert_close(s[..., 4:, :], torch.full_like(s[..., 4:, :], SSIM_HAND), rtol=0, atol=1e-9)
    # in float32 too, to the rounding of float32 variances
    p32, h32 = pred.float(), holed.float()
    assert abs(1 - float(losses.ssim_loss(p32, h32, data_range=1.0)) - SSIM_HAND) < 3e-5
    noisy = holed + 0.02 * torch.randn(holed.shape, generator=torch.Generator().manual_seed(0), dtype=holed.dtype)
    assert float(losses.ssim_loss(pred, noisy)) == pytest.approx(float(losses.ssim_loss(pred[..., 4:, :], noisy[..., 4:, :])), rel=0.2)


def test_reconstruction_metric_ssim_leaves_nodata_out():
    pred, holed = _constant_pair(4)
    r = reconstruction_metrics(pred, holed, data_range=1.0)
    assert round(r["all"]["ssim"], 5) == 0.99946
    assert (r["per_band"].ssim.round(5) == 0.99946).all()
    # nodata in the prediction only is left out as well
    pred2, clean = _constant_pair(0)
    pred2 = pred2.clone(); pred2[:, :, :4] = float("nan")
    assert round(reconstruction_metrics(pred2, clean, data_range=1.0)["all"]["ssim"], 5) == 0.99946


def _batch(seed=0, B=2, C=24, H=32, W=40, patch=8):
    g = torch.Generator().manual_seed(seed)
    target = torch.randn(B, C, H, W, generator=g)
    target = target + torch.nn.functional.avg_pool2d(target, 5, 1, 2) * 3  # spatial structure: SSIM not ~0
    pred = target + 0.5 * torch.randn(B, C, H, W, generator=g)
    mask = (torch.rand(B, 1, H // patch, W // patch, generator=g) < 0.75).float()
    mask = mask.repeat_interleave(patch, 2).repeat_interleave(patch, 3)
    mean = 0.05 + 0.3 * torch.rand(1, C, 1, 1, generator=g)
    std = 0.02 + 0.05 * torch.rand(1, C, 1, 1, generator=g)
    return pred, target, mask, mean, std


def _terms_and_grads(mod, pred, target, mask, mean, std, **kw):
    "Each term's value and its gradient w.r.t. the prediction, the spectral terms on reflectance (as the trainer does)."
    out = {}
    for term in ("mse", "ssim", "kl", "sam"):
        weights = {k: float(k == term) for k in ("mse", "ssim", "kl", "sam", "distill")}
        p = pred.clone().requires_grad_(True)
        _, terms = mod.HyperKDLoss(weights, **kw)(p, target, mask, pred_refl=p * std + mean, target_refl=target * std + mean)
        terms[term].backward()
        out[term] = (terms[term].detach(), p.grad)
    return out


@pytest.mark.parametrize("kw", [dict(ssim_data_range=4.0), dict(), dict(ssim_window="patch", patch_size=8, ssim_data_range=4.0)],
                         ids=["trainer", "range-from-batch", "patch"])
@pytest.mark.parametrize("masked", [True, False])
@pytest.mark.parametrize("kernels", [True, False], ids=["cpu-kernels", "torch"])
def test_terms_and_gradients_equal_the_loss_before(kw, masked, kernels):
    with losses.cpu_kernels(kernels):
        _equal_the_loss_before(kw, masked)


def _equal_the_loss_before(kw, masked):
    pred, target, mask, mean, std = _batch()
    m = mask if masked else None
    new = _terms_and_grads(losses, pred, target, m, mean, std, **kw)
    old = _terms_and_grads(frozen, pred, target, m, mean, std, **kw)
    for term in old:
        (v1, g1), (v0, g0) = new[term], old[term]
        assert float(v0) > 1e-3, term  # a term that is ~0 would test nothing
        assert abs(float(v1) - float(v0)) <= 1e-5 * abs(float(v0)), (term, float(v1), float(v0))
        assert float((g1 - g0).norm()) <= 1e-5 * float(g0.norm()), (term, float((g1 - g0).norm() / g0.norm()))
        torch.testing.assert_close(g1, g0, rtol=1e-5, atol=1e-5 * float(g0.abs().max()))


def test_public_functions_equal_the_loss_before():
    pred, target, mask, mean, std = _batch(seed=1)
    for name in ("masked_mse", "ssim_loss", "spectral_kl", "sam_loss"):
        fn_new, fn_old = getattr(losses, name), getattr(frozen, name)
        args = (pred * std + mean, target * std + mean) if name in ("spectral_kl", "sam_loss") else (pred, target)
        for m in (None, mask):
            torch.testing.assert_close(fn_new(*args, m), fn_old(*args, m), rtol=1e-5, atol=0)
    torch.testing.assert_close(losses.ssim_map(pred, target, data_range=4.0), frozen.ssim_map(pred, target, data_range=4.0),
                               rtol=1e-5, atol=1e-6)


def _default_loss(mod, pred, target, mask, mean, std):
    "The trainer's form (all four terms, the spectral ones on reflectance): ({term: value}, the total's gradient, terms)."
    w = dict(mse=1.0, ssim=0.2, kl=1.0, sam=0.5, distill=0.0)
    p = pred.clone().requires_grad_(True)
    refl = dict(reflectance=(mean, std)) if mod is losses else dict(pred_refl=p * std + mean, target_refl=target * std + mean)
    total, terms = mod.HyperKDLoss(w, ssim_data_range=4.0)(p, target, mask, **refl)
    total.backward()
    return {k: float(v.detach()) for k, v in terms.items()}, p.grad, terms


def test_default_terms_from_one_node_equal_the_loss_before():
    "On a CPU the four terms come from one node (hyperkd.fused._ReconKernel): values and gradient as before issue #20."
    pred, target, mask, mean, std = _batch(seed=4)
    new, g1, terms = _default_loss(losses, pred, target, mask, mean, std)
    assert {type(v.grad_fn).__name__ for v in terms.values()} == {"_ReconKernelBackward"}
    old, g0, _ = _default_loss(frozen, pred, target, mask, mean, std)
    for k in old:
        assert abs(new[k] - old[k]) <= 1e-5 * abs(old[k]), (k, new[k], old[k])
    assert float((g1 - g0).norm()) <= 1e-5 * float(g0.norm())
    torch.testing.assert_close(g1, g0, rtol=1e-5, atol=1e-5 * float(g0.abs().max()))


@pytest.mark.parametrize("nodata", [False, True])
def test_later_steps_take_the_gradient_made_in_the_forward_pass(nodata):
    "From the second step on the one node makes the gradient in its forward pass, for the last backward pass's factors."
    pred, target, mask, mean, std = _batch(seed=6)
    if nodata:  # the kernels then read p·v, t·v for SSIM and MSE and p, t for KL and SAM
        target = target.clone(); target[0, :, :5] = float("nan"); target[1, :, :, -3:] = float("nan")
    w = dict(mse=1.0, ssim=0.2, kl=1.0, sam=0.5, distill=0.0)
    mod, grads = losses.HyperKDLoss(w, ssim_data_range=4.0), []
    for _ in range(3):
        p = pred.clone().requires_grad_(True)
        total, terms = mod(p, target, mask, reflectance=(mean, std))
        made = terms["ssim"].grad_fn.grad.clone()  # the node's buffer after the forward pass
        total.backward()
        grads.append(p.grad)
    assert torch.equal(grads[0], grads[1]) and torch.equal(grads[1], grads[2])  # the same bits as made in the backward pass
    assert torch.equal(made, grads[2])  # whole before the backward pass: it only handed the buffer out
    if not nodata:  # (the loss before #20 differs at nodata: issue #19)
        _, g0, _ = _default_loss(frozen, pred, target, mask, mean, std)
        torch.testing.assert_close(grads[2], g0, rtol=1e-5, atol=1e-5 * float(g0.abs().max()))
    mod.weights.kl = 2.0  # a weight changed between steps: the guess is wrong once, and corrected in the backward pass
    p = pred.clone().requires_grad_(True)
    mod(p, target, mask, reflectance=(mean, std))[0].backward()
    fresh = pred.clone().requires_grad_(True)
    losses.HyperKDLoss({**w, "kl": 2.0}, ssim_data_range=4.0)(fresh, target, mask, reflectance=(mean, std))[0].backward()
    torch.testing.assert_close(p.grad, fresh.grad, rtol=1e-6, atol=1e-6 * float(fresh.grad.abs().max()))
    assert not torch.equal(p.grad, grads[0])


def test_default_terms_from_one_node_equal_two_nodes_with_nodata(monkeypatch):
    "With nodata (the loss before issue #19 differs there): the one node against the two kernel nodes it replaces."
    pred, target, mask, mean, std = _batch(seed=5)
    target = target.clone(); target[0, :, :6] = float("nan"); target[1, :, :, -3:] = float("nan")
    one, g1, terms = _default_loss(losses, pred, target, mask, mean, std)
    assert type(terms["kl"].grad_fn).__name__ == "_ReconKernelBackward"
    monkeypatch.setattr(losses, "_recon_w", lambda *a, **k: None)
    two, g2, terms = _default_loss(losses, pred, target, mask, mean, std)
    assert type(terms["kl"].grad_fn).__name__ == "_SpectralKernelBackward"
    assert one == two  # the same kernels make the values
    torch.testing.assert_close(g1, g2, rtol=1e-6, atol=1e-6 * float(g2.abs().max()))
    assert (g1 * ~torch.isfinite(target).all(1, keepdim=True) == 0).all()  # no gradient at nodata


def test_nodata_changes_the_ssim_term_only():
    pred, target, mask, mean, std = _batch(seed=2)
    target = target.clone(); target[0, :, :6] = float("nan"); target[1, :, :, -3:] = float("nan")  # nodata borders
    new = _terms_and_grads(losses, pred, target, mask, mean, std, ssim_data_range=4.0)
    old = _terms_and_grads(frozen, pred, target, mask, mean, std, ssim_data_range=4.0)
    for term in ("mse", "kl", "sam"):
        torch.testing.assert_close(new[term][0], old[term][0], rtol=1e-5, atol=0)
    assert abs(float(new["ssim"][0]) - float(old["ssim"][0])) > 1e-3
    finite = torch.isfinite(target).all(1, keepdim=True)
    assert torch.isfinite(new["ssim"][1]).all() and (new["ssim"][1] * ~finite == 0).all()  # no gradient at nodata


def _autograd_term(term, p, t0, w, valid=None, dr=4.0):
    "The same term through autograd (the path compiled code takes), as a reference for the forward-made gradients."
    if term == "mse":
        return losses._wmean((p - t0).square(), w)
    if term == "ssim":
        return 1.0 - losses._wmean(losses.ssim_map(p, t0, 7, data_range=dr, valid=valid), w)
    if term == "kl":
        pc, tc = p.clamp_min(1e-4), t0.clamp_min(1e-4)
        tn = tc / tc.sum(1, keepdim=True)
        return losses._wmean((tn * (tc.log() - pc.log())).sum(1, keepdim=True)
                             - tn.sum(1, keepdim=True) * (tc.sum(1, keepdim=True).log() - pc.sum(1, keepdim=True).log()), w)
    return losses._wmean(losses.spectral_angle(p, t0), w)


@pytest.mark.parametrize("term", ["mse", "ssim", "ssim-torch", "kl", "kl-torch", "sam", "sam-torch"])
def test_fused_terms_equal_autograd_with_nodata_and_edge_values(term):
    """The forward-made gradients (_MSETerm, _SSIMTerm with normalised convolution, _KLTerm with values below eps,
    _SAMTerm with a zero spectrum) against autograd through the formulas, in float32 at the trainer's sizes' kind.
    "ssim", "kl", "sam" take the numba CPU kernels (_SSIMKernel, _SpectralKernel), "-torch" the PyTorch path."""
    with losses.cpu_kernels(term != "ssim-torch"):
        _fused_term_equals_autograd(term.removesuffix("-torch"))


def _fused_term_equals_autograd(term):
    pred, target, mask, mean, std = _batch(seed=3, C=30)
    if term in ("kl", "sam"):
        pred, target = pred * std + mean, target * std + mean
        pred[0, :, 1, 1] = -0.2  # below eps in every band: KL's clamp passes no gradient there
        pred[1, 2, 3, 3] = 0.0
        target[1, :, 5, 5] = 0.0  # a zero target spectrum (SAM's norm at eps)
    target = target.clone(); target[0, :, :5] = float("nan"); target[1, :, :, -2:] = float("nan")
    finite = losses._finite(target)
    w = losses._weights(target, mask, finite)
    t0 = target.nan_to_num(1e-4 if term in ("kl", "sam") else 0.0)
    pa, pb = pred.clone().requires_grad_(), pred.clone().requires_grad_()
    fused = {"mse": lambda p: losses._mse_w(p, t0, w), "ssim": lambda p: losses._ssim_w(p, t0, w, 7, 4.0, finite),
             "kl": lambda p: losses._kl_w(p, t0, w), "sam": lambda p: losses._sam_w(p, t0, w)}[term]
    la, lb = fused(pa), _autograd_term(term, pb, t0, w, finite)
    assert abs(la.item() - lb.item()) <= 1e-5 * abs(lb.item()), (la.item(), lb.item())
    la.backward(); lb.backward()
    assert float((pa.grad - pb.grad).norm()) <= 1e-5 * float(pb.grad.norm())
    assert (pa.grad * ~finite == 0).all()  # no gradient at nodata


def test_finite_answers_band_by_band_when_a_sum_overflows():
    x = torch.full((1, 3, 2, 2), 3e38)  # every value finite, each pixel's band sum is inf
    assert losses._finite(x).all()
    x[0, 1, 0, 0] = float("nan"); x[0, 2, 1, 1] = -float("inf")
    assert losses._finite(x).tolist() == [[[[False, True], [True, False]]]]


def test_first_kernel_call_waits_for_the_compile_lock(tmp_path):
    """A process's first call of a CPU kernel compiles it (or loads numba's disk cache) under an inter-process file
    lock (`kernels._COMPILE_LOCK`): while this test holds the lock, a fresh process's first loss call waits."""
    import filelock
    code = ("import torch\nfrom hyperkd import losses\nt = torch.rand(1, 3, 8, 8)\n"
            "print(float(losses._kl_w(t + 0.1, t + 0.1, torch.ones(1, 1, 8, 8))))\n")
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    with filelock.FileLock(kernels._COMPILE_LOCK):
        proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
        try:
            proc.wait(timeout=15)  # importing hyperkd takes a few seconds; the call itself must wait for the lock
            finished = True
        except subprocess.TimeoutExpired:
            finished = False
    out, _ = proc.communicate(timeout=300)
    assert not finished, "the first kernel call did not wait for the compile lock"
    assert proc.returncode == 0 and abs(float(out)) < 1e-6, out


@pytest.mark.parametrize("layout", ["channels_last", "permuted"])
def test_kernels_equal_torch_for_a_prediction_in_any_memory_layout(layout):
    "The kernels write into contiguous buffers whatever the prediction's layout (a new user's case: channels_last nets)."
    t = 0.05 + 0.3 * torch.rand(2, 8, 16, 16, generator=torch.Generator().manual_seed(5))
    net = torch.nn.Conv2d(8, 8, 3, padding=1)
    x = t.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else t
    if layout == "channels_last":
        net = net.to(memory_format=torch.channels_last)
    grads = {}
    for on in (True, False):
        net.zero_grad()
        with losses.cpu_kernels(on):
            out = net(x)
            out = out if layout == "channels_last" else out.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
            assert not out.is_contiguous()
            total, _ = losses.HyperKDLoss()(out, t)
            total.backward()
        grads[on] = net.weight.grad.clone()
    assert torch.isfinite(grads[True]).all()
    torch.testing.assert_close(grads[True], grads[False], rtol=1e-4, atol=1e-6)


def test_reflectance_shapes_checked_the_same_on_both_paths():
    pred, target, mask, mean, std = _batch(seed=4)
    for on in (True, False):
        with losses.cpu_kernels(on):
            with pytest.raises(ValueError, match=r"\(1, C, 1, 1\) or \(B, C, 1, 1\) with C = 24"):
                losses.HyperKDLoss()(pred, target, mask, reflectance=(mean.flatten(), std.flatten()))
    per_image = (mean.expand(2, -1, -1, -1), std.expand(2, -1, -1, -1))  # (B, C, 1, 1): converted in torch
    a = losses.HyperKDLoss()(pred, target, mask, reflectance=per_image)[1]
    b = losses.HyperKDLoss()(pred, target, mask, reflectance=(mean, std))[1]
    for k in ("kl", "sam"):
        assert abs(float(a[k]) - float(b[k])) <= 1e-5 * abs(float(b[k])), k


@pytest.mark.parametrize("case", ["no-numba", "read-only-cache", "env-off"])
def test_losses_work_without_numba_a_writable_cache_or_with_the_kernels_off(case):
    """No numba (a platform without its wheels): the PyTorch path. No writable place for numba's cache: compiled per
    process. HYPERKD_CPU_KERNELS=0: the PyTorch path."""
    pre = {"no-numba": "import sys; sys.modules['numba'] = None\n",
           "read-only-cache": ("from numba.core import caching\n"
                               "def _no(self): raise OSError('read-only')\n"
                               "caching._CacheLocator.ensure_cache_path = _no\n"),
           "env-off": ""}[case]
    code = pre + (
        "import torch\nfrom hyperkd import kernels, losses\n"
        "t = 0.05 + 0.3 * torch.rand(2, 6, 12, 12); p = (t + 0.02 * torch.randn_like(t)).requires_grad_()\n"
        "total, terms = losses.HyperKDLoss()(p, t); total.backward()\n"
        "with kernels.cpu_kernels(False):\n"
        "    q = p.detach().clone().requires_grad_(); total2, _ = losses.HyperKDLoss()(q, t); total2.backward()\n"
        "assert abs(total.item() - total2.item()) <= 1e-5 * abs(total2.item())\n"
        "assert torch.allclose(p.grad, q.grad, rtol=1e-4, atol=1e-7)\n"
        "print(kernels._CPU_KERNELS)\n")
    env = {**os.environ, **({"HYPERKD_CPU_KERNELS": "0"} if case == "env-off" else {})}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip() == ("True" if case == "read-only-cache" else "False"), r.stdout
