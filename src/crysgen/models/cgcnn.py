"""CGCNN (Xie & Grossman, PRL 120, 145301, 2018) with the original code's parameter names.

The layer names and shapes are those of ``txie-93/cgcnn``'s ``CrystalGraphConvNet``, so its
pre-trained checkpoints load directly (``embedding``, ``convs.K.fc_full``/``bn1``/``bn2``,
``conv_to_fc``, ``fcs``, ``fc_out``). The element feature table (``atom_init.json``) is held as a
buffer, so a model directory written by crysgen needs no other file. Predictions are in the
model's normalised units; :class:`crysgen.properties.PropertyModel` undoes the normalisation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from crysgen.representations.graph import GraphBatch, GraphOptions, gaussian_expand


@dataclass(frozen=True)
class CGCNNConfig:
    """Constructor arguments of :class:`CGCNN` (the pre-trained models use the defaults).

    Attributes:
        atom_feature_len: width of the element feature vectors (92 for cgcnn's atom_init.json).
        neighbor_feature_len: Gaussians per distance (41 for 0..8 Å in steps of 0.2).
        atom_fea_len: hidden atom feature width.
        n_conv: graph convolution layers.
        h_fea_len: width of the hidden layer after pooling.
        n_h: hidden layers after pooling.
        n_out: outputs (1 for regression, 2 classes for classification).
        classification: log-softmax output over ``n_out`` classes.
        dropout: dropout before the output (classification only, as in cgcnn).
    """

    atom_feature_len: int = 92
    neighbor_feature_len: int = 41
    atom_fea_len: int = 64
    n_conv: int = 4
    h_fea_len: int = 32
    n_h: int = 1
    n_out: int = 1
    classification: bool = False
    dropout: float = 0.0

    def to_dict(self) -> dict:
        """JSON-serialisable form."""
        return asdict(self)


class ConvLayer(nn.Module):
    """One gated graph convolution: v_i <- softplus(v_i + BN(Σ_j σ(z_ij W_f) ⊙ softplus(z_ij W_s)))."""

    def __init__(self, atom_fea_len: int, nbr_fea_len: int) -> None:
        super().__init__()
        self.fc_full = nn.Linear(2 * atom_fea_len + nbr_fea_len, 2 * atom_fea_len)
        self.bn1 = nn.BatchNorm1d(2 * atom_fea_len)
        self.bn2 = nn.BatchNorm1d(atom_fea_len)
        self.softplus = nn.Softplus()

    def forward(self, atom: torch.Tensor, nbr_fea: torch.Tensor, nbr_idx: torch.Tensor) -> torch.Tensor:
        """Atom (A, F), nbr_fea (A, M, G), nbr_idx (A, M) -> (A, F)."""
        n, m = nbr_idx.shape
        z = torch.cat([atom[:, None, :].expand(n, m, atom.shape[1]), atom[nbr_idx], nbr_fea], dim=2)
        gated = self.bn1(self.fc_full(z).view(n * m, -1)).view(n, m, -1)
        filt, core = gated.chunk(2, dim=2)
        summed = self.bn2((torch.sigmoid(filt) * self.softplus(core)).sum(dim=1))
        return self.softplus(atom + summed)


class CGCNN(nn.Module):
    """Crystal graph convolutional network: graphs -> (B, n_out) per crystal."""

    atom_features: torch.Tensor  # a registered buffer

    def __init__(self, *, config: CGCNNConfig, atom_features: torch.Tensor,
                 graph: GraphOptions | None = None) -> None:
        """Build the network.

        Args:
            config: layer sizes and task.
            atom_features: (Zmax + 1, atom_feature_len) element feature table (row = Z).
            graph: how distances are expanded (must give ``neighbor_feature_len`` Gaussians).
        """
        super().__init__()
        self.config, self.graph = config, graph or GraphOptions()
        if len(self.graph.centers) != config.neighbor_feature_len:
            raise ValueError("graph options give a different number of Gaussians than the network expects")
        self.register_buffer("atom_features", torch.as_tensor(atom_features, dtype=torch.float32))
        c = config
        self.embedding = nn.Linear(c.atom_feature_len, c.atom_fea_len)
        self.convs = nn.ModuleList([ConvLayer(c.atom_fea_len, c.neighbor_feature_len)
                                    for _ in range(c.n_conv)])
        self.conv_to_fc = nn.Linear(c.atom_fea_len, c.h_fea_len)
        self.conv_to_fc_softplus = nn.Softplus()
        if c.n_h > 1:
            self.fcs = nn.ModuleList([nn.Linear(c.h_fea_len, c.h_fea_len) for _ in range(c.n_h - 1)])
            self.softpluses = nn.ModuleList([nn.Softplus() for _ in range(c.n_h - 1)])
        self.fc_out = nn.Linear(c.h_fea_len, c.n_out)
        self.dropout = nn.Dropout(c.dropout)

    def conv_parameters(self) -> list[nn.Parameter]:
        """The element embedding and graph convolutions (what transfer learning carries over)."""
        return [*self.embedding.parameters(), *self.convs.parameters()]

    def forward(self, batch: GraphBatch) -> torch.Tensor:
        """(B, n_out): normalised targets, or log-probabilities for classification."""
        if int(batch.atomic_numbers.max()) >= len(self.atom_features):
            raise ValueError(f"element Z={int(batch.atomic_numbers.max())} has no CGCNN features")
        atom = self.embedding(self.atom_features[batch.atomic_numbers])
        nbr = gaussian_expand(batch.neighbor_distance, self.graph)
        for conv in self.convs:
            atom = conv(atom, nbr, batch.neighbor_index)
        pooled = torch.zeros(batch.num_crystals, atom.shape[1], device=atom.device, dtype=atom.dtype)
        pooled.index_add_(0, batch.crystal_index, atom)
        counts = torch.bincount(batch.crystal_index, minlength=batch.num_crystals).clamp(min=1)
        crys = self.conv_to_fc_softplus(self.conv_to_fc(self.conv_to_fc_softplus(pooled / counts[:, None])))
        if self.config.classification:
            crys = self.dropout(crys)
        for fc, sp in zip(getattr(self, "fcs", []), getattr(self, "softpluses", []), strict=True):
            crys = sp(fc(crys))
        out = self.fc_out(crys)
        return torch.log_softmax(out, dim=1) if self.config.classification else out
