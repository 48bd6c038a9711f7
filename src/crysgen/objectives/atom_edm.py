"""EDM preconditioning and loss for atom sets (Karras et al. 2022), with periodic coordinates.

Three parts share one noise level σ per crystal: element codes and lattice features are
Euclidean and take EDM's preconditioning with their own σ_data; fractional coordinates live on
the torus, so their noise is wrapped (x_t = wrap(x + σ n)) and the network predicts the periodic
displacement towards the clean point, D = x_t + c_out(σ) F, with the loss taken on the wrapped
difference (a network with a displacement head gets 1 / c_out(σ) as ``coord_gain``, so its
displacement in fractional units enters D unscaled). With ``csp_fraction`` of the crystals the
element codes are given clean (σ = 0 for that part, a flag tells the network), so one model does
both de novo generation and crystal structure prediction (composition → structure). The settings,
:class:`~crysgen.models.atoms.AtomEDMConfig`, are the model's (saved in its config.json).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch

from crysgen.models.atom_transformer import lattice_matrix
from crysgen.models.atoms import AtomEDMConfig


class Parts(NamedTuple):
    """One batch of atom sets: element codes (B, S, D), coordinates (B, S, 3), lattice (B, 6)."""

    types: torch.Tensor
    frac: torch.Tensor
    lattice: torch.Tensor


@dataclass
class Constants:
    """Data statistics the denoiser needs (from the model's AtomSetSpec), as tensors.

    ``empty_code`` (D,) is the centred code of no element (an empty site's; None: the model has
    no empty sites); ``lattice_code`` how the lattice features encode a cell
    (:data:`~crysgen.representations.atoms.LATTICE_CODES`).
    """

    type_sigma: float
    lattice_mean: torch.Tensor = field(default_factory=lambda: torch.zeros(6))
    lattice_std: torch.Tensor = field(default_factory=lambda: torch.ones(6))
    empty_code: torch.Tensor | None = None
    lattice_code: str = "lengths_angles"

    @classmethod
    def from_spec(cls, spec: Any) -> Constants:
        """From an :class:`~crysgen.representations.atoms.AtomSetSpec`."""
        return cls(float(spec.type_sigma), torch.tensor(spec.lattice_mean, dtype=torch.float32),
                   torch.tensor(spec.lattice_std, dtype=torch.float32),
                   torch.as_tensor(spec.codes()[0], dtype=torch.float32), spec.lattice_code)


def wrap(x: torch.Tensor) -> torch.Tensor:
    """Into [0, 1)."""
    return x - torch.floor(x)


def wrap_centered(x: torch.Tensor) -> torch.Tensor:
    """Into [-½, ½): the shortest periodic displacement."""
    return x - torch.round(x)


def permute_axes(frac: torch.Tensor, lattice: torch.Tensor, consts: Constants,
                 perm: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Each crystal with its cell axes in another order: the same atoms (or their mirror image).

    Relabelling the axes a, b, c as ``perm`` permutes the fractional coordinates' columns, the
    lengths and the angles (α lies opposite a, β opposite b, γ opposite c) alike, so interatomic
    distances and the volume are unchanged; an odd permutation gives the mirror image, which a
    cell built from lengths and angles cannot tell apart (and which has the same energy). A
    training augmentation against memorised lattices: a Niggli cell always lists a ≤ b ≤ c.

    Args:
        frac: (N, S, 3) fractional coordinates (padding rows stay zero).
        lattice: (N, 6) standardised lattice features (:mod:`crysgen.representations.atoms`).
        consts: the features' mean and std.
        perm: (N, 3) the new order of each crystal's axes (None: uniformly random).

    Returns:
        (frac, lattice) in the new axis order, the lattice standardised as before.
    """
    if perm is None:
        perm = torch.argsort(torch.rand(len(frac), 3, device=frac.device), dim=1)
    frac = torch.gather(frac, 2, perm[:, None, :].expand_as(frac))
    if consts.lattice_code == "cholesky":  # through the metric: G'_ij = G_perm(i) perm(j)
        g = lattice_metric(lattice, consts)
        g = torch.gather(torch.gather(g, 1, perm[:, :, None].expand_as(g)), 2, perm[:, None, :].expand_as(g))
        return frac, metric_features(g, consts).to(lattice.dtype)
    mean, std = consts.lattice_mean.to(lattice), consts.lattice_std.to(lattice)
    raw = torch.gather(lattice * std + mean, 1, torch.cat([perm, perm + 3], dim=1))
    return frac, (raw - mean) / std


def add_empty_sites(x0: Parts, mask: torch.Tensor, empty: torch.Tensor, consts: Constants, *,
                    extra: int | None = None, generator: torch.Generator | None = None
                    ) -> tuple[Parts, torch.Tensor]:
    """Each crystal with ``empty[i]`` empty sites ("no atom" tokens) in its first free slots.

    An empty site has the code of no element (``consts.empty_code``) and a uniformly random
    position; the lattice features, whose lengths are per token (ln a - ln(tokens) / 3), are
    shifted so that they describe the same cell with the new number of tokens. Decoding the
    result (:func:`~crysgen.representations.atoms.decode` with ``empty_sites``) gives back the
    crystals.

    Args:
        x0: clean parts, element codes (B, S, D), coordinates (B, S, 3), lattice (B, 6).
        mask: bool (B, S) real sites.
        empty: int (B,) empty sites per crystal (>= 0).
        consts: data statistics with ``empty_code``.
        extra: slots added to every row (at least ``empty.max()``; None: that many), so that a
            compiled network sees one width.
        generator: a CPU generator for the positions (None: the global one, on the parts' device).

    Returns:
        (parts, mask) of width S + ``extra``; ``mask`` marks every token, real or empty.
    """
    if consts.empty_code is None:
        raise ValueError("these constants have no empty-site code (Constants.from_spec gives one)")
    b, s = mask.shape
    dev = mask.device
    empty = empty.to(dev)
    most = int(empty.max()) if len(empty) else 0
    extra = most if extra is None else int(extra)
    if extra < most:
        raise ValueError(f"extra={extra} slots cannot hold {most} empty sites")
    real = torch.nn.functional.pad(mask, (0, extra))
    free = ~real
    hole = free & (torch.cumsum(free.long(), 1) <= empty[:, None])
    pad = (0, 0, 0, extra)
    if generator is None:
        pos = torch.rand(b, s + extra, 3, device=dev)
    else:
        pos = torch.rand(b, s + extra, 3, generator=generator, device="cpu").to(dev)
    code = consts.empty_code.to(x0.types)
    types = torch.where(hole[..., None], code, torch.nn.functional.pad(x0.types, pad))
    frac = torch.where(hole[..., None], pos.to(x0.frac), torch.nn.functional.pad(x0.frac, pad))
    n = mask.sum(1).clamp_min(1).float()
    ratio = ((n + empty.float()) / n).log() / 3
    shift = torch.zeros_like(x0.lattice)
    shift[:, :3] = ratio[:, None] / consts.lattice_std[:3].to(shift)
    return Parts(types, frac, x0.lattice - shift), real | hole


def _precond(sigma: torch.Tensor, sd: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """EDM's c_skip, c_out, c_in for σ (any shape)."""
    s2 = sigma**2 + sd**2
    return sd**2 / s2, sigma * sd / s2.sqrt(), 1 / s2.sqrt()


MAX_SHEAR = 2.0
"""The largest |shear| (L21 / L11, L31 / L11, L32 / L22) :func:`current_cell` lets a noisy
Cholesky-coded lattice have (a Niggli-reduced cell's are within ½)."""


def _cholesky_factor(scale: torch.Tensor, shears: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) lower-triangular L (rows: cell vectors) from its diagonal (B, 3) and shears (B, 3)."""
    zero = torch.zeros_like(scale[:, 0])
    a, b, c = scale.unbind(-1)
    return torch.stack([torch.stack([a, zero, zero], -1),
                        torch.stack([shears[:, 0] * a, b, zero], -1),
                        torch.stack([shears[:, 1] * a, shears[:, 2] * b, c], -1)], 1)


def _raw(features: torch.Tensor, consts: Constants) -> torch.Tensor:
    dev = features.device
    return features.double() * consts.lattice_std.to(dev).double() + consts.lattice_mean.to(dev).double()


def lattice_metric(features: torch.Tensor, consts: Constants,
                   log_n: torch.Tensor | float = 0.0) -> torch.Tensor:
    """Standardised lattice features (B, 6) -> the metrics G (B, 3, 3), float64.

    ``log_n`` (B, 1) is ln(sites) / 3 per cell (the features' lengths are per atom); the default 0
    gives the metric of the per-atom cell, enough where it is turned back by :func:`metric_features`
    with the same ``log_n``.
    """
    raw = _raw(features, consts)
    scale = torch.exp(raw[:, :3] + log_n)
    if consts.lattice_code == "cholesky":
        chol = _cholesky_factor(scale, raw[:, 3:])
        return chol @ chol.transpose(1, 2)
    a, b, c = scale.unbind(-1)
    ca, cb, cg = torch.cos(raw[:, 3:]).unbind(-1)
    return torch.stack([torch.stack([a * a, a * b * cg, a * c * cb], -1),
                        torch.stack([a * b * cg, b * b, b * c * ca], -1),
                        torch.stack([a * c * cb, b * c * ca, c * c], -1)], 1)


def metric_features(g: torch.Tensor, consts: Constants, log_n: torch.Tensor | float = 0.0) -> torch.Tensor:
    """Metrics (B, 3, 3) -> standardised lattice features (B, 6), float64.

    The inverse of :func:`lattice_metric`; a metric that is not positive definite gives
    non-finite Cholesky features.
    """
    dev = g.device
    std, mean = consts.lattice_std.to(dev).double(), consts.lattice_mean.to(dev).double()
    g = g.double()
    if consts.lattice_code == "cholesky":
        chol, info = torch.linalg.cholesky_ex(g)
        diag = torch.diagonal(chol, dim1=1, dim2=2)
        shears = torch.stack([chol[:, 1, 0] / diag[:, 0], chol[:, 2, 0] / diag[:, 0],
                              chol[:, 2, 1] / diag[:, 1]], -1)
        raw = torch.cat([diag.log() - log_n, shears], -1)
        raw = torch.where((info == 0)[:, None], raw, torch.full_like(raw, float("nan")))
        return (raw - mean) / std
    lengths = torch.sqrt(torch.diagonal(g, dim1=1, dim2=2).clamp_min(1e-12))
    a, b, c = lengths.unbind(-1)
    cos = torch.stack([g[:, 1, 2] / (b * c), g[:, 0, 2] / (a * c), g[:, 0, 1] / (a * b)], -1)
    raw = torch.cat([lengths.log() - log_n, torch.arccos(cos.clamp(-1.0, 1.0))], -1)
    return (raw - mean) / std


def current_cell(lattice_t: torch.Tensor, mask: torch.Tensor, consts: Constants) -> torch.Tensor:
    """(B, 3, 3) Å: the cell that the noisy lattice features describe (clamped to be finite).

    Per-site lengths (the first three features) are clamped to 0.5-50 Å, angles to 20-160° and
    Cholesky shears to ±:data:`MAX_SHEAR`.
    """
    dev = lattice_t.device
    raw = lattice_t.float() * consts.lattice_std.to(dev) + consts.lattice_mean.to(dev)
    n = mask.sum(1).clamp_min(1).float()
    lengths = torch.exp((raw[:, :3] + n.log()[:, None] / 3).clamp(math.log(0.5), math.log(50.0)))
    if consts.lattice_code == "cholesky":
        return _cholesky_factor(lengths, raw[:, 3:].clamp(-MAX_SHEAR, MAX_SHEAR))
    return lattice_matrix(torch.cat([lengths, raw[:, 3:]], -1))


def denoise(net: torch.nn.Module, xt: Parts, sigma: torch.Tensor, mask: torch.Tensor, given: torch.Tensor,
            cfg: AtomEDMConfig, consts: Constants, *, raw: bool = False,
            conditions: dict[str, torch.Tensor] | None = None) -> Any:
    """The denoised estimate D(x_t; σ) of every part (or the raw network outputs).

    Args:
        net: an :class:`~crysgen.models.atom_transformer.AtomTransformer`.
        xt: noisy parts (coordinates already wrapped); given element codes are clean.
        sigma: (B,) noise levels.
        mask: bool (B, S) real sites.
        given: bool (B,) element codes given clean.
        cfg: the EDM settings.
        consts: data statistics.
        raw: also return the raw outputs (for the loss).
        conditions: int (B,) tensors by the network's keyword (``space_group`` 1-230,
            ``num_elements``; 0 = not given), for conditioned networks.
    """
    st = torch.where(given, torch.zeros_like(sigma), sigma)[:, None, None]
    sl = sigma[:, None]
    skip_t, out_t, in_t = _precond(st, consts.type_sigma)
    skip_l, out_l, in_l = _precond(sl, cfg.sigma_data_lattice)
    _, out_c, _ = _precond(sigma[:, None, None], cfg.sigma_data_coords)
    cell = current_cell(xt.lattice, mask, consts)
    f_t, f_c, f_l = net(xt.types * in_t, xt.frac, xt.lattice * in_l, mask, sigma.log() / 4, given, cell,
                        coord_gain=1 / out_c.flatten(), **(conditions or {}))
    f_t, f_c, f_l = f_t.float(), f_c.float(), f_l.float()
    d = Parts(skip_t * xt.types + out_t * f_t, xt.frac + out_c * f_c, skip_l * xt.lattice + out_l * f_l)
    return (d, (f_t, f_c, f_l), (skip_t, out_t, out_c, skip_l, out_l)) if raw else d


def crystal_weights(mask: torch.Tensor, site_weighting: str) -> torch.Tensor:
    """Each crystal's weight in a batch's per-site losses (:attr:`AtomEDMConfig.site_weighting`).

    Args:
        mask: (B, S) real sites.
        site_weighting: "crystal" (every crystal 1), "site" (its number of real sites, so that
            the weighted mean of the crystals' per-site means weighs every site alike) or "sqrt"
            (the square root of its number of real sites).

    Returns:
        (B,) float weights.
    """
    if site_weighting == "site":
        return mask.float().sum(1)
    if site_weighting == "sqrt":
        return mask.float().sum(1).sqrt()
    if site_weighting == "crystal":
        return torch.ones(mask.shape[0], device=mask.device)
    raise ValueError(f"unknown site weighting {site_weighting!r}")


def edm_loss(net: torch.nn.Module, x0: Parts, mask: torch.Tensor, cfg: AtomEDMConfig, consts: Constants,
             *, generator: torch.Generator | None = None,
             conditions: dict[str, torch.Tensor] | None = None,
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """EDM loss of one batch: weighted sum of the three parts' losses, and each part's.

    Each part's loss is the mean squared error of the raw output against its EDM target
    (equivalently λ(σ)·|D − x|², which weighs every σ alike); padding sites never count, and the
    types' loss skips crystals whose element codes were given. ``conditions`` (int (B,) tensors by
    the network's keyword) condition a conditioned network; for each, ``cfg.cond_dropout`` of the
    crystals get 0 (none) instead. With ``cfg.empty_sites``, each crystal whose element codes are
    not given first gets empty sites (:func:`add_empty_sites`), which count as sites in every part.
    ``cfg.site_weighting`` says how the per-site parts average over
    the batch in the returned total; the returned parts are always per-crystal means (each
    crystal's sites averaged, then the crystals), so that runs with either weighting compare.
    """
    b, dev = mask.shape[0], mask.device
    where = "cpu" if generator is not None else dev  # where a draw from ``generator`` happens

    def randn(*shape: int) -> torch.Tensor:  # a CPU generator makes the noise device-independent
        if generator is None:
            return torch.randn(*shape, device=dev)
        return torch.randn(*shape, generator=generator, device="cpu").to(dev)

    sigma = (randn(b) * cfg.p_std + cfg.p_mean).exp()
    given = (torch.rand(b, generator=generator, device=where) < cfg.csp_fraction).to(dev)
    if cfg.empty_sites > 0:  # de novo crystals only: a given composition fixes the atoms
        empty = torch.randint(0, cfg.empty_sites + 1, (b,), generator=generator, device=where).to(dev)
        x0, mask = add_empty_sites(x0, mask, torch.where(given, torch.zeros_like(empty), empty), consts,
                                   extra=cfg.empty_sites, generator=generator)
    m = mask[..., None].float()
    n_t = randn(*x0.types.shape) * sigma[:, None, None]
    xt = Parts(torch.where(given[:, None, None], x0.types, x0.types + n_t) * m,
               wrap(x0.frac + randn(*x0.frac.shape) * sigma[:, None, None]) * m,
               x0.lattice + randn(*x0.lattice.shape) * sigma[:, None])
    kept = {}
    for name, value in sorted((conditions or {}).items()):
        drop = torch.rand(b, generator=generator, device=where) < cfg.cond_dropout
        kept[name] = torch.where(drop.to(dev), torch.zeros_like(value), value)
    _, (f_t, f_c, f_l), (skip_t, out_t, out_c, skip_l, out_l) = denoise(
        net, xt, sigma, mask, given, cfg, consts, raw=True, conditions=kept)
    target_t = (x0.types - skip_t * xt.types) / out_t.clamp_min(1e-8)
    target_c = wrap_centered(x0.frac - xt.frac) / out_c
    target_l = (x0.lattice - skip_l * xt.lattice) / out_l
    per_site = m.sum((1, 2)).clamp_min(1)
    loss_t = ((f_t - target_t) ** 2 * m).sum((1, 2)) / (per_site * x0.types.shape[-1])
    loss_c = ((f_c - target_c) ** 2 * m).sum((1, 2)) / (per_site * 3)
    loss_l = ((f_l - target_l) ** 2).mean(1)
    free = (~given).float()
    lt = (loss_t * free).sum() / free.sum().clamp_min(1)
    lc, ll = loss_c.mean(), loss_l.mean()
    cw = crystal_weights(mask, cfg.site_weighting)
    opt_t = (loss_t * free * cw).sum() / (free * cw).sum().clamp_min(1)
    opt_c = (loss_c * cw).sum() / cw.sum().clamp_min(1)
    w = cfg.weights
    total = (w[0] * opt_t + w[1] * opt_c + w[2] * ll) / sum(w)
    # the parts are reported per crystal whatever the weighting, so that runs compare
    return total, {"loss_types": lt.detach(), "loss_coords": lc.detach(), "loss_lattice": ll.detach()}
