"""The denoising network for CrysTens tensors: a diffusers ``UNet2DModel`` built from a config.

The network maps (noisy tensor, timestep) to a tensor of the same shape; it knows nothing about
noise schedules or losses (those live in :mod:`crysgen.objectives.diffusion`). A cascade's
super-resolution stage sees the up-sampled low-resolution sample as extra input channels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from crysgen.errors import CrysgenError

if TYPE_CHECKING:
    from diffusers import UNet2DModel


@dataclass(frozen=True)
class UNetConfig:
    """Constructor arguments of the denoiser (its config, saved with every model).

    Attributes:
        sample_size: side of the square input (64 for CrysTens, 32 for a cascade's base).
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
        if self.sample_size % 2 ** (len(self.block_out_channels) - 1):
            raise CrysgenError("unet.sample_size must be divisible by 2**(levels - 1)")

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


def build_unet(cfg: UNetConfig) -> UNet2DModel:
    """A freshly initialised diffusers ``UNet2DModel`` for ``cfg``."""
    from diffusers import UNet2DModel

    down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in cfg.attention)
    up = tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(cfg.attention))
    return UNet2DModel(
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
