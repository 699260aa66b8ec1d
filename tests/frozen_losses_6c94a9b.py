"""FROZEN copy of hyperkd/losses.py at commit 6c94a9b (before issue #20): the reference the faster loss must equal
(values and gradients, where no nodata is present). Do not edit."""



# %% ../nbs/01c_losses.ipynb #6defbab7
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field, asdict
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

# %% auto #0
__all__ = ['DISTILL_TARGETS', 'masked_mse', 'ssim_map', 'ssim_loss', 'block_ssim', 'patch_ssim_loss', 'spectral_kl',
           'spectral_angle', 'sam_loss', 'feature_distill_loss', 'target_signal', 'TargetNorm', 'LossWeights',
           'HyperKDLoss']

# %% ../nbs/01c_losses.ipynb #ddc53e5e
def _weights(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    "(B, 1, H, W) float weights; all ones when `mask` is None; NaN pixels get weight 0."
    w = torch.ones_like(x[:, :1]) if mask is None else mask.to(x.dtype).expand(x.shape[0], 1, *x.shape[-2:])
    return w * torch.isfinite(x).all(1, keepdim=True)

def _wmean(v: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    "Weighted mean of a (B, 1 or C, H, W) map; 0 when nothing is weighted (keeps gradients finite)."
    num = (v * w).sum()
    den = (w.sum() * (v.shape[1] if v.shape[1] != w.shape[1] else 1))
    return num / den.clamp_min(1e-12)

def _mse_w(pred, t0, w):
    return _wmean((pred - t0).square(), w)

def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    "Mean squared error over bands and the weighted pixels (the MAE reconstruction loss)."
    return _mse_w(pred, target.nan_to_num(0.0), _weights(target, mask))

# %% ../nbs/01c_losses.ipynb #815db3f0
def _gauss_1d(size: int, sigma: float, device, dtype):
    ax = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-0.5 * (ax / sigma) ** 2)
    return g / g.sum()

def _blur_matrix(g: torch.Tensor, n: int) -> torch.Tensor:
    "(n, n) matrix M with (z @ M)[j] = Σ_k g[k] z[reflect(j + k − pad)]: a 1-D blur with reflect padding."
    pad = len(g) // 2
    idx = torch.arange(n)[:, None] + torch.arange(len(g))[None, :] - pad  # (n out, taps) source positions
    idx = idx.abs()
    idx = torch.where(idx > n - 1, 2 * (n - 1) - idx, idx)
    m = torch.zeros(n, n, dtype=g.dtype, device=g.device)
    m.index_put_((idx.reshape(-1).to(g.device), torch.arange(n, device=g.device).repeat_interleave(len(g))),
                 g.repeat(n), accumulate=True)
    return m

def _ssim_constants(t: torch.Tensor, data_range) -> tuple:
    "C1, C2 of SSIM; `data_range` None: the target's range per band over the batch."
    if data_range is None:
        data_range = (t.amax(dim=(0, 2, 3)) - t.amin(dim=(0, 2, 3))).clamp_min(1e-6)[None, :, None, None]
    return (0.01 * data_range) ** 2, (0.03 * data_range) ** 2

def _ssim_from_moments(mu_p, mu_t, ep, et, ept, c1, c2) -> torch.Tensor:
    "SSIM from windowed means and second moments E[p²], E[t²], E[pt]."
    spp, stt, spt = ep - mu_p ** 2, et - mu_t ** 2, ept - mu_p * mu_t
    return ((2 * mu_p * mu_t + c1) * (2 * spt + c2)) / ((mu_p ** 2 + mu_t ** 2 + c1) * (spp + stt + c2))

def ssim_map(pred: torch.Tensor, target: torch.Tensor, window: int = 7, sigma: float = 1.5,
             data_range: torch.Tensor | float | None = None) -> torch.Tensor:
    "Per-band SSIM map (B, C, H, W) of NaN-free images (borders reflect-padded; nodata: `ssim_loss`)."
    t, p = target, pred
    H, W = t.shape[-2:]
    if H < window or W < window:
        raise ValueError(f"ssim_map: images of {H} x {W} px are smaller than the {window} x {window} SSIM window; "
                         f"pass a smaller odd `window` (at most {min(H, W)}), or use reconstruction_metrics, which "
                         "fits the window to the image.")
    c1, c2 = _ssim_constants(t, data_range)
    g = _gauss_1d(window, sigma, t.device, t.dtype)
    bh, bw = _blur_matrix(g, H), _blur_matrix(g, W)
    # separable Gaussian blur of the 5 stacked moment maps as two matrix products (BLAS-fast, forward and backward);
    # the target's two maps carry no gradient: blurred apart, outside autograd (~20% less work per step)
    if t.requires_grad:
        mu_p, mu_t, ep, et, ept = bh.T @ torch.stack([p, t, p * p, t * t, p * t]) @ bw
    else:
        with torch.no_grad():
            mu_t, et = bh.T @ torch.stack([t, t * t]) @ bw
        mu_p, ep, ept = bh.T @ torch.stack([p, p * p, p * t]) @ bw
    return _ssim_from_moments(mu_p, mu_t, ep, et, ept, c1, c2)

def ssim_loss(pred, target, mask=None, window: int = 7, data_range=None) -> torch.Tensor:
    "1 − mean SSIM over bands and weighted pixels."
    return _ssim_w(pred, target.nan_to_num(0.0), _weights(target, mask), window, data_range)

def _ssim_w(pred, t0, w, window, data_range):
    return 1.0 - _wmean(ssim_map(pred, t0, window, data_range=data_range), w)

# %% ../nbs/01c_losses.ipynb #225b9d7d
def block_ssim(pred: torch.Tensor, target: torch.Tensor, block: int, mask: torch.Tensor | None = None,
               data_range: torch.Tensor | float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """SSIM per band in non-overlapping `block` x `block` windows: (B, C, H/block, W/block) SSIM, and the
    (B, 1, H/block, W/block) fraction of each block's pixels its statistics use (weighted, valid pixels)."""
    return _block_ssim_w(pred, target.nan_to_num(0.0), _weights(target, mask), block, data_range)

def _block_ssim_w(p, t, w, block, data_range):
    H, W = t.shape[-2:]
    if H % block or W % block:
        raise ValueError(f"Image size {H}x{W} is not a multiple of the SSIM block size {block} "
                         "(use the model's patch size).")
    c1, c2 = _ssim_constants(t, data_range)
    n = F.avg_pool2d(w, block)
    inv = n.clamp_min(1e-12).reciprocal()  # weighted means: pooled (w·z) / pooled w
    with (contextlib.nullcontext() if t.requires_grad else torch.no_grad()):
        tw = t * w
        mu_t, et = F.avg_pool2d(tw, block) * inv, F.avg_pool2d(tw * t, block) * inv
    pw = p * w
    mu_p, ep, ept = (F.avg_pool2d(z, block) * inv for z in (pw, pw * p, pw * t))
    return _ssim_from_moments(mu_p, mu_t, ep, et, ept, c1, c2), n

def patch_ssim_loss(pred, target, mask=None, patch: int = 16, data_range=None) -> torch.Tensor:
    "1 − mean block SSIM over bands and blocks (`patch` x `patch`), blocks weighted by their weighted pixels."
    return _patch_ssim_w(pred, target.nan_to_num(0.0), _weights(target, mask), patch, data_range)

def _patch_ssim_w(pred, t0, w, patch, data_range):
    s, n = _block_ssim_w(pred, t0, w, patch, data_range)
    return 1.0 - (s * n).sum() / (n.sum() * s.shape[1]).clamp_min(1e-12)

# %% ../nbs/01c_losses.ipynb #1d0684fe
def spectral_kl(pred, target, mask=None, eps: float = 1e-4) -> torch.Tensor:
    "KL(target ‖ pred) between per-pixel spectra normalised to distributions over bands (use reflectance)."
    return _kl_w(pred, target.nan_to_num(eps), _weights(target, mask), eps)

def _kl_w(pred, target, w, eps: float = 1e-4):
    p = pred.clamp_min(eps)
    t = target.clamp_min(eps)
    # KL(t || p) with p, t normalised = sum t' (log t' - log p'), and log p' = log p - log sum p (no full-size division)
    tn = t * t.sum(1, keepdim=True).reciprocal()
    kl = (tn * (t.log() - p.log())).sum(1, keepdim=True) - tn.sum(1, keepdim=True) * (
        t.sum(1, keepdim=True).log() - p.sum(1, keepdim=True).log())
    return _wmean(kl, w)

def spectral_angle(pred, target, eps: float = 1e-12) -> torch.Tensor:
    "Per-pixel spectral angle (radians), (B, 1, H, W)."
    a = pred * pred.norm(dim=1, keepdim=True).clamp_min(eps).reciprocal()  # multiply by (B,1,H,W): cheaper backward than div
    b = target * target.norm(dim=1, keepdim=True).clamp_min(eps).reciprocal()
    diff = (a - b).square().sum(1, keepdim=True)
    summ = (a + b).square().sum(1, keepdim=True)
    # sqrt with a zero-safe gradient: d sqrt(x)/dx is infinite at 0, so route x == 0 through a constant (NaN stays NaN)
    sq = lambda v: torch.where(v == 0, torch.zeros_like(v), v.clamp_min(1e-30).sqrt())
    return 2 * torch.atan2(sq(diff), sq(summ))

def sam_loss(pred, target, mask=None) -> torch.Tensor:
    "Mean spectral angle (radians) over weighted pixels."
    w = _weights(target, mask)
    return _wmean(spectral_angle(pred, target.nan_to_num(0.0)), w)

# %% ../nbs/01c_losses.ipynb #dfb5b9ca
def feature_distill_loss(student: torch.Tensor, teacher: torch.Tensor, kind: str = "mse",
                         normalize_target: bool = True) -> torch.Tensor:
    "Distillation between (B, T, D) student (projected) and teacher tokens: 'mse' or 'cosine'."
    if student.shape != teacher.shape:
        raise ValueError(f"Student tokens {tuple(student.shape)} and teacher tokens {tuple(teacher.shape)} differ: "
                         "check the projector width and that both use the same mask and patch grid.")
    t = teacher.detach().float()
    if normalize_target:
        t = F.layer_norm(t, t.shape[-1:])
    s = student.float()
    if kind == "mse":
        return (s - t).square().mean()
    if kind == "cosine":
        return (1 - F.cosine_similarity(s, t, dim=-1)).mean()
    raise ValueError(f"Unknown distillation loss {kind!r}; choose 'mse' or 'cosine'.")

# %% ../nbs/01c_losses.ipynb #aa38eb73
DISTILL_TARGETS = ("layernorm", "standardize", "none")

def target_signal(tokens: torch.Tensor) -> dict:
    """How much a distillation target carries: tokens (..., D) → {'constant_share', 'effective_rank', 'floor', 'dim',
    'n_tokens'}. `constant_share`: the share of the target's mean square that the best *constant* predictor (the mean
    token) explains (1: every token the same vector; ~0: zero-mean targets); `floor`: that predictor's MSE per element
    (the value the distill term reaches by learning the constant alone); `effective_rank`: exp of the entropy of the
    centred tokens' normalised singular-value spectrum (1: one direction; D: all directions equally)."""
    t = tokens.detach().reshape(-1, tokens.shape[-1]).double()
    n, d = t.shape
    if n < 2:
        raise ValueError(f"target_signal: need at least 2 tokens, got {n}.")
    mu = t.mean(0)
    total = t.square().sum(1).mean()
    resid = (t - mu).square().sum(1).mean()
    s = torch.linalg.svdvals(t - mu)
    p = s.square() / s.square().sum().clamp_min(1e-300)
    p = p[p > 0]
    return {"constant_share": float(1 - resid / total) if total > 0 else float("nan"),
            "effective_rank": float(torch.exp(-(p * p.log()).sum())) if len(p) else 0.0,
            "floor": float(resid / d), "dim": d, "n_tokens": n}

class TargetNorm(nn.Module):
    """Per-dimension standardisation of teacher tokens (B, T, D) across tokens, with running statistics (as
    feature-prediction self-supervision normalises its targets, e.g. data2vec, MaskFeat): a direction shared by every
    token, which per-token layer norm keeps, is removed. The first batch sets the statistics; later batches move them
    by `momentum` (all processes' batches together under DDP). Buffers: saved with the trainer's checkpoint."""
    def __init__(self, dim: int, momentum: float = 0.01, eps: float = 1e-6):
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("var", torch.ones(dim))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, t: torch.Tensor):
        t = t.detach().float().reshape(-1, t.shape[-1])
        stats = torch.cat([t.mean(0), t.square().mean(0)])
        import torch.distributed as dist
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(stats)
            stats /= dist.get_world_size()
        m, sq = stats.chunk(2)
        v = (sq - m.square()).clamp_min(0)
        if int(self.count) == 0:
            self.mean.copy_(m); self.var.copy_(v)
        else:
            self.mean.lerp_(m, self.momentum); self.var.lerp_(v, self.momentum)
        self.count += 1

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.update(t)
        return (t.detach().float() - self.mean) / torch.sqrt(self.var + self.eps)

# %% ../nbs/01c_losses.ipynb #5ccb04dc
@dataclass
class LossWeights:
    mse: float = 1.0
    ssim: float = 0.2
    kl: float = 1.0
    sam: float = 0.5
    distill: float = 1.0

class HyperKDLoss(nn.Module):
    "Weighted sum of the HyperKD loss terms; returns (total, {term: value}) with each term logged separately."
    def __init__(self, weights: LossWeights | dict | None = None, distill_kind: str = "mse", ssim_window: int | str = 7,
                 ssim_data_range: float | None = None, patch_size: int | None = None, normalize_target: bool = True):
        """`ssim_window`: the Gaussian window's size, or 'patch' (one window per `patch_size` patch: `patch_ssim_loss`).
        `normalize_target`: layer-normalise the teacher tokens (False when the caller normalised them, e.g. `TargetNorm`)."""
        super().__init__()
        w = weights if isinstance(weights, LossWeights) else LossWeights(**(weights or {}))
        if isinstance(ssim_window, str) and (ssim_window != "patch" or not patch_size):
            raise ValueError(f"ssim_window must be a Gaussian window size (int) or 'patch' with patch_size given; "
                             f"got ssim_window={ssim_window!r}, patch_size={patch_size!r}.")
        self.weights, self.distill_kind, self.ssim_window, self.patch_size = w, distill_kind, ssim_window, patch_size
        self.normalize_target = normalize_target
        self.ssim_data_range = ssim_data_range  # fixed range: the loss then does not depend on the batch composition

    def forward(self, pred, target, mask=None, pred_refl=None, target_refl=None, student_tokens=None,
                teacher_tokens=None):
        """pred/target in normalised units (B, C, H, W); `mask` (B, 1, H, W) weights; `*_refl` the same in
        reflectance for the spectral terms (defaults to pred/target; `target_refl` has `target`'s nodata);
        token dicts {layer: (B, T, D)}."""
        w, terms = self.weights, {}
        pr = pred if pred_refl is None else pred_refl
        tr = target if target_refl is None else target_refl
        valid = _weights(target, mask)  # nodata found once (the reflectance target shares it) and filled once
        t0 = target.nan_to_num(0.0)
        if w.mse: terms["mse"] = _mse_w(pred, t0, valid)
        if w.ssim:
            terms["ssim"] = (_patch_ssim_w(pred, t0, valid, self.patch_size, self.ssim_data_range)
                             if self.ssim_window == "patch" else
                             _ssim_w(pred, t0, valid, self.ssim_window, self.ssim_data_range))
        if w.kl or w.sam:
            tr0 = t0 if tr is target else tr.nan_to_num(1e-4)
            if w.kl: terms["kl"] = _kl_w(pr, tr0, valid)
            if w.sam: terms["sam"] = _wmean(spectral_angle(pr, tr0), valid)
        if w.distill and student_tokens and teacher_tokens:
            missing = set(student_tokens) ^ set(teacher_tokens)
            if missing:
                raise ValueError(f"Distillation layers differ between student and teacher: {sorted(missing)}.")
            terms["distill"] = sum(feature_distill_loss(student_tokens[k], teacher_tokens[k], self.distill_kind,
                                                        self.normalize_target)
                                   for k in student_tokens) / len(student_tokens)
        if not terms:
            raise ValueError("All loss weights are zero.")
        total = sum(getattr(w, k) * v for k, v in terms.items())
        return total, terms
