"""The denoising network for CrysTens tensors: a diffusers ``UNet2DModel`` built from a config.

The network maps (noisy tensor, timestep) to a tensor of the same shape; it knows nothing about
noise schedules or losses (those live in :mod:`crysgen.objectives.diffusion`). A cascade's
super-resolution stage sees the up-sampled low-resolution sample as extra input channels.

Any input side works: a UNet with L levels halves the input L - 1 times, so
:class:`PaddedUNet2DModel` pads the input with zeros at the bottom and right up to the next
multiple of 2**(L - 1) and crops the output back (a CrysTens layout of 12 + 32 = 44 runs at
48 x 48 in a 4-level UNet). The padded rows and columns are outside every tensor, so neither the
loss nor a sample ever sees them; the paper's 64 needs no padding. The parameters are those of
diffusers' ``UNet2DModel`` (same state-dict keys), so models saved before this keep loading.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from crysgen.errors import CrysgenError

if TYPE_CHECKING:
    import torch
    from diffusers.models.unets.unet_2d import UNet2DModel


@dataclass(frozen=True)
class UNetConfig:
    """Constructor arguments of the denoiser (its config, saved with every model).

    Attributes:
        sample_size: side of the square input: the CrysTens layout's size (64 for the paper's,
            12 + S in general, 22 + S with element codes), 32 for a cascade's base. Any side
            works (inputs are padded to a multiple of 2**(levels - 1) inside the network).
        channels: CrysTens layers (4).
        cond_channels: extra input channels (4 for a super-resolution stage, else 0).
        block_out_channels: channels per resolution level.
        layers_per_block: ResNet blocks per level.
        attention: per level, whether it uses self-attention.
        norm_num_groups: GroupNorm groups.
        dropout: dropout in the ResNet blocks.
    """

    sample_size: int = 64
    channels: int = 4
    cond_channels: int = 0
    block_out_channels: tuple[int, ...] = (64, 128, 128, 160)
    layers_per_block: int = 2
    attention: tuple[bool, ...] = field(default=(False, False, True, True))
    norm_num_groups: int = 32
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if len(self.attention) != len(self.block_out_channels):
            raise CrysgenError("unet.attention needs one flag per entry of block_out_channels")
        if any(c % self.norm_num_groups for c in self.block_out_channels):
            raise CrysgenError("unet.block_out_channels must be multiples of norm_num_groups")
        if self.sample_size < 1:
            raise CrysgenError(f"unet.sample_size must be positive, got {self.sample_size}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        d = asdict(self)
        d["block_out_channels"] = list(self.block_out_channels)
        d["attention"] = list(self.attention)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UNetConfig:
        """Inverse of :meth:`to_dict`."""
        data = dict(data)
        data["block_out_channels"] = tuple(data.get("block_out_channels", cls.block_out_channels))
        data["attention"] = tuple(data.get("attention", (False,) * len(data["block_out_channels"])))
        return cls(**data)


def pad_amount(side: int, multiple: int) -> int:
    """Rows (or columns) to add to ``side`` to reach the next multiple of ``multiple``."""
    return -side % multiple


@lru_cache(maxsize=1)
def _padded_unet_class() -> type[UNet2DModel]:
    """The padded UNet class (defined on first use, so importing this module needs no diffusers)."""
    import torch.nn.functional as F
    from diffusers.models.unets.unet_2d import UNet2DModel, UNet2DOutput

    class PaddedUNet2DModel(UNet2DModel):
        """diffusers' ``UNet2DModel`` for inputs of any side (see the module docstring)."""

        def forward(self, sample: torch.Tensor, timestep: torch.Tensor | float | int,
                    class_labels: torch.Tensor | None = None, return_dict: bool = True) -> Any:
            """(B, C, H, W) -> ``UNet2DOutput`` of (B, C_out, H, W): zero-pad to a multiple, crop."""
            h, w = sample.shape[-2:]
            m = 2 ** (len(self.config["block_out_channels"]) - 1)
            ph, pw = pad_amount(h, m), pad_amount(w, m)
            if ph or pw:
                sample = F.pad(sample, (0, pw, 0, ph))
            out = super().forward(sample, timestep, class_labels=class_labels, return_dict=False)[0]
            out = out[..., :h, :w]
            return UNet2DOutput(sample=out) if return_dict else (out,)

    PaddedUNet2DModel.__module__ = __name__  # pickled by name, found by the module __getattr__
    PaddedUNet2DModel.__qualname__ = "PaddedUNet2DModel"
    return PaddedUNet2DModel


def __getattr__(name: str) -> Any:
    """``PaddedUNet2DModel`` is built on first use (PEP 562)."""
    if name == "PaddedUNet2DModel":
        return _padded_unet_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_unet(cfg: UNetConfig) -> UNet2DModel:
    """A freshly initialised UNet for ``cfg`` (diffusers' ``UNet2DModel``, padded for any side)."""
    down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in cfg.attention)
    up = tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(cfg.attention))
    return _padded_unet_class()(
        sample_size=cfg.sample_size,
        in_channels=cfg.channels + cfg.cond_channels,
        out_channels=cfg.channels,
        block_out_channels=cfg.block_out_channels,
        layers_per_block=cfg.layers_per_block,
        down_block_types=down,
        up_block_types=up,
        norm_num_groups=cfg.norm_num_groups,
        dropout=cfg.dropout,
        # a super-resolution stage also embeds its conditioning's noise level (class_labels)
        class_embed_type="timestep" if cfg.cond_channels else None,
    )
