"""A diffusion transformer over atom tokens plus one lattice token.

Tokens: one per site (element code + Fourier features of its fractional coordinates) and one for
the lattice. There is no positional encoding over atoms, so the network is permutation
equivariant: permuting the input sites permutes the outputs. Geometry enters attention as a
learned bias per head and layer from the pairs' periodic coordinate differences (Fourier
features of wrap(x_i - x_j)) and their Cartesian distances in the current (noisy) cell, which is
invariant to a common shift of all fractional coordinates. Attention only weighs the other
atoms' tokens by these pair features; with ``pair_messages`` each block also adds to every atom
token the mean over the other atoms of a message computed from both tokens and their pair
features (as a graph network's messages, DiffCSP's among them), so that an atom's output can
carry where its neighbours lie relative to it. With ``displacement_head`` the coordinate output
also gets a displacement built from the atoms' own periodic differences, Δ_i = mean_j w_ij ·
wrap(x_j − x_i) with learned pair weights w_ij (EGNN's coordinate update), in fractional units
and float32, scaled by the caller's ``coord_gain`` (EDM: 1 / c_out(σ)): a correction of the size
of the noise, however small σ is, without the network having to resolve it through Fourier
features. Time (the noise level) and a "types are given" flag condition every block through
adaLN-Zero (DiT).

Inputs and outputs are plain tensors; the EDM preconditioning lives in
:mod:`crysgen.objectives.atom_edm`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from crysgen.representations.atoms import MAX_ELEMENTS

MAX_SITE_COUNT = 256
"""Largest number of sites with its own row in the ``num_sites`` embedding (more share it)."""


@dataclass(frozen=True)
class AtomNetConfig:
    """Constructor arguments of :class:`AtomTransformer`.

    Attributes:
        type_dim: length of an element code (D).
        d_model: token width.
        n_layers: transformer blocks.
        n_heads: attention heads.
        mlp_ratio: hidden width of each block's MLP, in multiples of ``d_model``.
        n_freqs: Fourier frequencies per axis of the site coordinates (k = 1..n_freqs).
        edge_freqs: Fourier frequencies per axis of the pair differences.
        edge_rbf: Gaussian radial basis functions of pair distances (0-10 Å).
        edge_hidden: width of the pair-bias MLP.
        space_groups: condition on the space group (an embedding of 1-230, 0 = none given)
            for classifier-free guidance; False: no such input.
        num_elements: condition on the number of distinct elements (an embedding of
            1-``MAX_ELEMENTS``, 0 = none given; it starts at zero, so switching it on for a
            trained network leaves its outputs unchanged); False: no such input.
        num_sites: condition on the crystal's number of real sites, counted from the mask (an
            embedding of 1-``MAX_SITE_COUNT``, larger counts sharing the last row; it starts at
            zero like ``num_elements``). Attention and pair messages average over the sites, so
            without it the count reaches the network only through the lattice token's share of
            each site's attention; False: no such input.
        pair_messages: add a pair-message sublayer to every block (its output projection starts
            at zero, so switching it on for a trained network leaves its outputs unchanged);
            False: attention only.
        message_width: hidden width of each pair-message sublayer (0: ``edge_hidden``). Its
            parameters grow about as ``n_layers · (3 · d_model + edge inputs) · message_width``.
        displacement_head: add :class:`PairDisplacement` to the coordinate output (its output
            layer starts at zero, so switching it on for a trained network leaves its outputs
            unchanged); False: the coordinates come from each atom's token alone.
        head_width: hidden width of the displacement head's pair MLP.
        dropout: dropout probability during training, on the attention weights and on each
            block's two residual branches (0: none). It changes no weight, so ``--init`` may
            set it freely, and sampling (eval mode) never applies it.
    """

    type_dim: int = 39
    d_model: int = 256
    n_layers: int = 12
    n_heads: int = 8
    mlp_ratio: float = 4.0
    n_freqs: int = 8
    edge_freqs: int = 6
    edge_rbf: int = 16
    edge_hidden: int = 128
    space_groups: bool = False
    num_elements: bool = False
    num_sites: bool = False
    pair_messages: bool = False
    message_width: int = 0
    displacement_head: bool = False
    head_width: int = 32
    dropout: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return asdict(self)


def fourier(x: torch.Tensor, n: int) -> torch.Tensor:
    """(..., 3) periodic coordinates -> (..., 6n): sin and cos of 2πk·x for k = 1..n."""
    k = torch.arange(1, n + 1, device=x.device, dtype=x.dtype)
    ang = 2 * math.pi * x[..., None] * k  # (..., 3, n)
    return torch.cat([ang.sin(), ang.cos()], -1).flatten(-2)


def fourier_positions(n_old: int, n_new: int) -> torch.Tensor:
    """Where :func:`fourier`'s 6·n_old features of x land among its 6·n_new features (n_old ≤ n_new).

    Both lay out axis by axis, sines then cosines, k = 1..n; a feature keeps its axis, function
    and frequency.
    """
    if n_old > n_new:
        raise ValueError(f"cannot narrow Fourier features from {n_old} to {n_new} frequencies")
    axis, fn, k = torch.meshgrid(torch.arange(3), torch.arange(2), torch.arange(n_old), indexing="ij")
    return (axis * 2 * n_new + fn * n_new + k).flatten()


def widen_frequencies(state: dict[str, torch.Tensor], old: dict[str, Any],
                      new: dict[str, Any]) -> dict[str, torch.Tensor]:
    """A network's weights made to fit a network with more Fourier frequencies, computing the same.

    The layers that read Fourier features (``coord_in``: the sites' ``n_freqs``; the pair-bias
    MLP's, every pair-message sublayer's and the displacement head's first layer: the pairs'
    ``edge_freqs``, then the ``edge_rbf`` distances) get their input columns moved to the
    features' new positions (:func:`fourier_positions`) and zero columns for the new
    frequencies, so the wider network's outputs equal the old one's until it trains. Every other
    weight is passed through.

    Args:
        state: the old network's ``state_dict()``.
        old: the old network's config (:attr:`AtomTransformer.config`).
        new: the new network's config; only its ``n_freqs`` and ``edge_freqs`` may differ here
            (each at least the old one's).

    Raises:
        ValueError: for fewer frequencies than ``old``'s.
    """
    coords = fourier_positions(old["n_freqs"], new["n_freqs"])
    pairs = torch.cat([fourier_positions(old["edge_freqs"], new["edge_freqs"]),
                       6 * new["edge_freqs"] + torch.arange(new["edge_rbf"])])
    sizes = {"coord_in.weight": (coords, 6 * new["n_freqs"]),
             "edge.0.weight": (pairs, 6 * new["edge_freqs"] + new["edge_rbf"])}
    out = {}
    for key, w in state.items():
        reads_pairs = key.endswith((".msg.edge.weight", "displace.edge.weight"))
        where, width = sizes.get("edge.0.weight" if reads_pairs else key, (None, 0))
        if where is None:
            out[key] = w
            continue
        wide = w.new_zeros(w.shape[0], width)
        wide[:, where] = w
        out[key] = wide
    return out


def kept_blocks(old_layers: int, new_layers: int) -> list[int]:
    """Which of ``old_layers`` blocks a network of ``new_layers`` keeps.

    Evenly spaced, the first and the last always (``[0, 2, 4, 5, 7, 9]`` of 10 for 6).

    Raises:
        ValueError: for more blocks than ``old_layers`` or fewer than one.
    """
    if not 1 <= new_layers <= old_layers:
        raise ValueError(f"cannot keep {new_layers} of {old_layers} blocks")
    if new_layers == 1:
        return [old_layers - 1]
    return [round(i * (old_layers - 1) / (new_layers - 1)) for i in range(new_layers)]


def resize_blocks(state: dict[str, torch.Tensor], old: dict[str, Any], new: dict[str, Any],
                  fresh: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """A network's weights made to fit a network with fewer or more blocks.

    Fewer (layer dropping before a fine-tune): the blocks :func:`kept_blocks` picks are renumbered
    in order, with their rows of the pair-bias MLP's output layer (``edge.2``: one bias per block
    and head); the shallower network computes something else until it trains.

    More (growing a trained network): the old blocks keep their order and are spread evenly among
    the new ones (old block *i* becomes block ``kept_blocks(new, old)[i]``, the first and the last
    stay first and last), with their ``edge.2`` rows; the new blocks and their ``edge.2`` rows come
    from ``fresh``, the deeper network's own initialisation, whose adaLN-Zero gates and pair-message
    read-outs start at zero: each new block is the identity, so the deeper network computes what the
    old one did until it trains. Every other weight is passed through.

    Args:
        state: the old network's ``state_dict()``.
        old: the old network's config (:attr:`AtomTransformer.config`).
        new: the new network's config; only its ``n_layers`` may differ here.
        fresh: the new network's initial ``state_dict()``; needed to grow.

    Raises:
        ValueError: for no block, or more blocks without ``fresh``.
    """
    heads = old["n_heads"]
    base: dict[str, torch.Tensor] = {}  # where the new blocks (and their edge.2 rows) come from
    if new["n_layers"] > old["n_layers"]:
        if fresh is None:
            raise ValueError(f"growing {old['n_layers']} blocks to {new['n_layers']} needs the deeper "
                             "network's initial weights")
        base = fresh
        where = dict(enumerate(kept_blocks(new["n_layers"], old["n_layers"])))  # old block -> new index
    else:
        where = {b: i for i, b in enumerate(kept_blocks(old["n_layers"], new["n_layers"]))}
    out = {k: w for k, w in base.items() if k.split(".")[0] == "blocks"}
    for key, w in state.items():
        parts = key.split(".")
        if key in ("edge.2.weight", "edge.2.bias"):  # one row per block and head, layer-major
            rows = base[key].clone() if base else w.new_empty(new["n_layers"] * heads, *w.shape[1:])
            for b, i in where.items():
                rows[i * heads:(i + 1) * heads] = w[b * heads:(b + 1) * heads]
            out[key] = rows
        elif parts[0] != "blocks":
            out[key] = w
        elif int(parts[1]) in where:
            out[".".join(["blocks", str(where[int(parts[1])]), *parts[2:]])] = w
    return out


def timestep_embedding(c: torch.Tensor, dim: int) -> torch.Tensor:
    """(B,) scalars -> (B, dim) sinusoidal features (frequencies 1 … 1000)."""
    half = dim // 2
    freqs = torch.exp(-math.log(1000.0) * torch.arange(half, device=c.device, dtype=torch.float32) / half)
    ang = c.float()[:, None] * freqs * 100.0
    return torch.cat([ang.sin(), ang.cos()], -1)


def lattice_matrix(params: torch.Tensor) -> torch.Tensor:
    """(B, 6) a, b, c (Å), α, β, γ (radians) -> (B, 3, 3) row vectors (pymatgen's convention).

    Angles are clamped to 20-160° and the third vector's height to ≥ 1e-3 so that a noisy
    lattice still gives finite distances.
    """
    a, b, c = params[:, 0], params[:, 1], params[:, 2]
    al, be, ga = (params[:, 3:].clamp(math.radians(20), math.radians(160))).unbind(-1)
    ca, cb, cg, sg = al.cos(), be.cos(), ga.cos(), ga.sin()
    zero = torch.zeros_like(a)
    cx = c * cb
    cy = c * (ca - cb * cg) / sg
    cz = (c**2 - cx**2 - cy**2).clamp_min(1e-6).sqrt()
    return torch.stack([torch.stack([a, zero, zero], -1),
                        torch.stack([b * cg, b * sg, zero], -1),
                        torch.stack([cx, cy, cz], -1)], 1)


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


class PairMLP(nn.Module):
    """φ(W_s h_i + W_d h_j + W_e e_ij) for every pair of atom tokens, read out by a zero-initialised ``out``.

    φ is SiLU → Linear → SiLU over layer-normed tokens. ``W_out`` (``out``, to ``out_dim``) starts
    at zero, so a new module adds nothing until trained.
    """

    def __init__(self, d: int, edge_in: int, width: int, out_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.src = nn.Linear(d, width)
        self.dst = nn.Linear(d, width, bias=False)
        self.edge = nn.Linear(edge_in, width, bias=False)
        self.mlp = nn.Sequential(nn.SiLU(), nn.Linear(width, width), nn.SiLU())
        self.out = nn.Linear(width, out_dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def pairs(self, h: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
        """H (B, S, d) atom tokens, edges (B, S, S, E) pair features -> (B, S, S, width)."""
        h = self.norm(h)
        return self.mlp(self.src(h)[:, :, None] + self.dst(h)[:, None] + self.edge(edges))


class PairMessages(PairMLP):
    """Messages between atom tokens: m_i = W_out mean_j φ(W_s h_i + W_d h_j + W_e e_ij) over real j."""

    def __init__(self, d: int, edge_in: int, width: int) -> None:
        super().__init__(d, edge_in, width, d)

    def forward(self, h: torch.Tensor, edges: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """H (B, S, d) atom tokens, edges (B, S, S, E) pair features, mask bool (B, S) -> (B, S, d)."""
        m = self.pairs(h, edges)  # (B, S, S, W)
        keep = mask[:, None, :, None].to(m.dtype)
        return self.out((m * keep).sum(2) / mask.sum(1).clamp_min(1)[:, None, None].to(m.dtype))


class PairDisplacement(PairMLP):
    """Each atom's displacement from its neighbours: Δ_i = mean_j w_ij · wrap(x_j − x_i) over real j ≠ i.

    w_ij = W_out φ(W_s h_i + W_d h_j + W_e e_ij), one scalar per pair, so Δ_i is a combination of
    the atom's periodic difference vectors: it moves with the atoms (permutation equivariant),
    ignores a common shift, and is as fine as the coordinates themselves. The weighted sum runs in
    float32 even under autocast (a bf16 sum of differences of ~0.3 would lose a displacement of
    0.002).
    """

    def __init__(self, d: int, edge_in: int, width: int) -> None:
        super().__init__(d, edge_in, width, 1)

    def forward(self, h: torch.Tensor, edges: torch.Tensor, diff: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        """Displacements (B, S, 3) float32, fractional units.

        Args:
            h: (B, S, d) atom tokens.
            edges: (B, S, S, E) pair features.
            diff: (B, S, S, 3) float32 wrap(x_i − x_j) (:meth:`AtomTransformer.pair_differences`).
            mask: bool (B, S) real atoms.
        """
        w = self.out(self.pairs(h, edges))  # (B, S, S, 1)
        keep = (mask[:, None, :] & ~torch.eye(mask.shape[1], dtype=torch.bool, device=mask.device))[..., None]
        with torch.autocast(device_type=diff.device.type, enabled=False):
            step = (w.float() * keep * -diff.float()).sum(2)
        return step / mask.sum(1).clamp_min(1)[:, None, None].float()


class Block(nn.Module):
    """Pre-norm transformer block: adaLN-Zero, attention with an additive bias, pair messages.

    The pair messages (optional) pass among the atom tokens only; token 0, the lattice, takes none.
    """

    def __init__(self, d: int, heads: int, mlp_ratio: float, dropout: float = 0.0,
                 messages: PairMessages | None = None) -> None:
        super().__init__()
        self.msg = messages
        self.heads = heads
        self.dropout = dropout
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        hidden = int(d * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(d, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, d))
        ada = nn.Linear(d, 6 * d)
        nn.init.zeros_(ada.weight)
        nn.init.zeros_(ada.bias)
        self.ada = nn.Sequential(nn.SiLU(), ada)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, bias: torch.Tensor,
                edges: torch.Tensor | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
        """X (B, T, d), cond (B, d), bias (B, heads, T, T) additive (−inf for masked keys).

        ``edges`` (B, T−1, T−1, E) pair features and ``mask`` bool (B, T−1) real atoms are needed
        by a block with pair messages.
        """
        b, t, d = x.shape
        s1, sc1, g1, s2, sc2, g2 = self.ada(cond).chunk(6, -1)
        h = _modulate(self.norm1(x), s1, sc1)
        q, k, v = self.qkv(h).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        p = self.dropout if self.training else 0.0
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), dropout_p=p)
        x = x + g1[:, None] * F.dropout(self.proj(att.transpose(1, 2).reshape(b, t, d)), p, self.training)
        if self.msg is not None:
            if edges is None or mask is None:
                raise ValueError("a block with pair messages needs the pair features and the mask")
            msg = F.dropout(self.msg(x[:, 1:], edges, mask), p, self.training)
            x = torch.cat([x[:, :1], x[:, 1:] + msg], 1)
        return x + g2[:, None] * F.dropout(self.mlp(_modulate(self.norm2(x), s2, sc2)), p, self.training)


class AtomTransformer(nn.Module):
    """Denoiser of (element codes, fractional coordinates, lattice features).

    ``forward`` takes per-part network inputs (already scaled by the objective) and returns raw
    outputs of the same shapes: ``types`` (B, S, D), ``frac`` (B, S, 3), ``lattice`` (B, 6).
    """

    def __init__(self, **config: Any) -> None:
        super().__init__()
        self.config = AtomNetConfig(**config).to_dict()
        c = AtomNetConfig(**config)
        d = c.d_model
        self.cfg = c
        self.type_in = nn.Linear(c.type_dim, d)
        self.coord_in = nn.Linear(6 * c.n_freqs, d)
        self.lattice_in = nn.Linear(6, d)
        self.lattice_token = nn.Parameter(torch.zeros(d))
        self.time = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        self.given = nn.Embedding(2, d)
        self.space_group: nn.Embedding | None = None
        if c.space_groups:  # zero: switched on under --init, the network starts as it was
            groups = nn.Embedding(231, d)
            nn.init.zeros_(groups.weight)
            self.space_group = groups
        self.num_elements: nn.Embedding | None = None
        if c.num_elements:
            counts = nn.Embedding(MAX_ELEMENTS + 1, d)
            nn.init.zeros_(counts.weight)
            self.num_elements = counts
        self.num_sites: nn.Embedding | None = None
        if c.num_sites:
            sites = nn.Embedding(MAX_SITE_COUNT + 1, d)
            nn.init.zeros_(sites.weight)
            self.num_sites = sites
        edge_in = 6 * c.edge_freqs + c.edge_rbf
        self.edge = nn.Sequential(nn.Linear(edge_in, c.edge_hidden), nn.SiLU(),
                                  nn.Linear(c.edge_hidden, c.n_layers * c.n_heads))
        self.blocks = nn.ModuleList([
            Block(d, c.n_heads, c.mlp_ratio, c.dropout,
                  PairMessages(d, edge_in, c.message_width or c.edge_hidden) if c.pair_messages else None)
            for _ in range(c.n_layers)])
        self.displace = PairDisplacement(d, edge_in, c.head_width) if c.displacement_head else None
        self.norm_out = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        ada_out = nn.Linear(d, 2 * d)
        self.ada_out = nn.Sequential(nn.SiLU(), ada_out)
        self.type_out = nn.Linear(d, c.type_dim)
        self.coord_out = nn.Linear(d, 3)
        self.lattice_out = nn.Linear(d, 6)
        for lin in (ada_out, self.type_out, self.coord_out, self.lattice_out):
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)
        self.register_buffer("rbf_centers", torch.linspace(0.0, 10.0, c.edge_rbf), persistent=False)

    @staticmethod
    def pair_differences(frac: torch.Tensor) -> torch.Tensor:
        """(B, S, 3) fractional coordinates -> (B, S, S, 3) wrap(x_i − x_j) in [-½, ½]."""
        diff = frac[:, :, None] - frac[:, None, :]
        return diff - torch.round(diff)

    def pair_features(self, diff: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        """(B, S, S, 6·edge_freqs + edge_rbf) pair features, invariant to a common shift of all atoms.

        Fourier features of the wrapped differences ``diff`` (B, S, S, 3) (:meth:`pair_differences`)
        and Gaussian RBFs of the pair distance in ``cell`` (Å).
        """
        c = self.cfg
        dist = torch.linalg.norm(torch.einsum("bijk,bkl->bijl", diff, cell), dim=-1)
        width = 10.0 / max(c.edge_rbf - 1, 1)
        rbf = torch.exp(-(((dist[..., None] - self.rbf_centers) / width) ** 2))
        return torch.cat([fourier(diff, c.edge_freqs), rbf], -1)

    def pair_bias(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, L·H, S+1, S+1) attention biases from :meth:`pair_features` (−inf at padded keys).

        Token 0 is the lattice: it takes no bias from the pair features.
        """
        e = self.edge(features)  # (B, S, S, L·H)
        b, s = mask.shape
        bias = e.new_zeros(b, s + 1, s + 1, e.shape[-1])
        bias[:, 1:, 1:] = e
        keys = torch.cat([mask.new_ones(b, 1), mask], 1)
        bias = bias.masked_fill(~keys[:, None, :, None], float("-inf"))
        return bias.permute(0, 3, 1, 2)

    def forward(self, types: torch.Tensor, frac: torch.Tensor, lattice: torch.Tensor, mask: torch.Tensor,
                c_noise: torch.Tensor, given: torch.Tensor, cell: torch.Tensor,
                space_group: torch.Tensor | None = None, num_elements: torch.Tensor | None = None,
                coord_gain: torch.Tensor | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Denoise one batch.

        Args:
            types: (B, S, D) scaled noisy element codes.
            frac: (B, S, 3) noisy fractional coordinates in [0, 1).
            lattice: (B, 6) scaled noisy lattice features.
            mask: bool (B, S), real sites.
            c_noise: (B,) noise-level embedding input (EDM: ln σ / 4).
            given: bool (B,), the element codes are clean (composition given).
            cell: (B, 3, 3) the current cell in Å (for pair distances).
            space_group: int (B,) 1-230, 0 = not given (only for ``space_groups`` networks).
            num_elements: int (B,) distinct elements, 0 = not given (only for ``num_elements``
                networks).
            coord_gain: (B,) factor from a displacement in fractional units to the coordinate
                output (EDM: 1 / c_out(σ)); None: 1. Only a ``displacement_head`` network reads it.

        Returns:
            Raw outputs for types (B, S, D), coordinates (B, S, 3) and lattice (B, 6).
        """
        c = self.cfg
        b, s, _ = types.shape
        atoms = self.type_in(types) + self.coord_in(fourier(frac, c.n_freqs))
        lat = (self.lattice_in(lattice) + self.lattice_token)[:, None]
        x = torch.cat([lat, atoms], 1)
        cond = self.time(timestep_embedding(c_noise, c.d_model)) + self.given(given.long())
        for embed, value in ((self.space_group, space_group), (self.num_elements, num_elements)):
            if embed is not None:
                cond = cond + embed((value if value is not None else torch.zeros_like(given)).long())
        if self.num_sites is not None:
            cond = cond + self.num_sites(mask.sum(1).clamp(max=MAX_SITE_COUNT).long())
        diff = self.pair_differences(frac.float())
        feats = self.pair_features(diff, cell)
        bias = self.pair_bias(feats, mask).view(b, c.n_layers, c.n_heads, s + 1, s + 1)
        for i, block in enumerate(self.blocks):
            x = block(x, cond, bias[:, i], feats, mask)
        shift, scale = self.ada_out(cond).chunk(2, -1)
        x = _modulate(self.norm_out(x), shift, scale)
        coords = self.coord_out(x[:, 1:])
        if self.displace is not None:
            step = self.displace(x[:, 1:], feats, diff, mask)
            gain = coord_gain.float()[:, None, None] if coord_gain is not None else 1.0
            coords = coords.float() + gain * step
        return self.type_out(x[:, 1:]), coords, self.lattice_out(x[:, 0])
