"""The paper's two adversarial networks on CrysTens (Alverson et al. 2024, seed code §3.1–3.2).

Both treat the 64×64×4 tensor as a depth-4 volume with one channel, as the authors' Keras code
does with its ``(64, 64, 4, 1)`` input. In PyTorch's ``(N, C, D, H, W)`` layout that is
``(N, 1, 4, 64, 64)``: a Keras kernel ``(kx, ky, kz)`` becomes ``(kz, kx, ky)`` here. All
convolutions are "valid" (no padding), so every layer's output size is as in the Keras code.

* ``gan``: generator with dense skip branches added at 22², 28², 32² and 64²; discriminator with
  a dense path added at 32² and 3²; BatchNorm (Keras momentum 0.99, eps 1e-3) and ReLU /
  LeakyReLU(0.2); the discriminator returns a *logit* (the Keras sigmoid is folded into the
  loss, :func:`crysgen.objectives.adversarial.bce_loss`, which is the same function and stable
  in bf16).
* ``wgan``: every layer spectrally normalised (one power iteration), LayerNorm over channels
  (Keras's last axis), LeakyReLU(0.2); a linear critic; a generator without skip branches.

``width`` multiplies every convolution's filter count (1.0 = the paper's networks; the tests use
small widths to run in seconds on a CPU). Dense sizes are fixed by the spatial shapes they are
added to.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, TypedDict, TypeVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from crysgen.errors import CrysgenError
from crysgen.models.saved import ModelContents, SavedModel
from crysgen.representations.crystens import CrysTensScaling
from crysgen.representations.crystens.layout import LAYERS, SIZE

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from crysgen.models.model_dir import ModelFiles

KINDS = ("gan", "wgan")
"""Adversarial model kinds: the vanilla GAN and the WGAN-GP."""
B = TypeVar("B", bound="AdversarialBundle")


@dataclass(frozen=True)
class AdversarialNetConfig:
    """The networks' constructor arguments (saved with every model).

    Attributes:
        kind: "gan" or "wgan".
        latent_dim: size of the Gaussian noise vector z.
        width: multiplier of every convolution's filter count (1.0 = the paper's).
    """

    kind: str = "gan"
    latent_dim: int = 128
    width: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise CrysgenError(f"unknown adversarial kind {self.kind!r}; choose one of {', '.join(KINDS)}")
        if self.latent_dim < 1 or self.width <= 0:
            raise CrysgenError(f"latent_dim must be >= 1 and width > 0, got {self.latent_dim}, {self.width}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return asdict(self)

    def filters(self, n: int) -> int:
        """A Keras layer's filter count scaled by ``width``."""
        return max(1, round(n * self.width))


def _k(kx: int, ky: int, kz: int) -> tuple[int, int, int]:
    """A Keras (x, y, z) kernel or stride in PyTorch's (z, x, y) order."""
    return (kz, kx, ky)


class FlatDepthConv3d(nn.Conv3d):
    """A Conv3d whose kernel and stride are 1 along depth, computed as a Conv2d on every slice.

    The same function and parameters as ``nn.Conv3d`` (weight (O, I, 1, kh, kw)), but cuDNN's
    2-D kernels run it several times faster than its 3-D ones. Input and output are
    (N, C, D, H, W); eagerly the output is a (N, D, C, H, W) buffer seen through a transpose, so a
    chain of these layers reshapes without copying. Under ``torch.compile`` the output is made
    contiguous: the traced graph assumed BatchNorm3d keeps a strided input's layout, which the
    eager kernel it calls does not, and the next layer's reshape then failed as a view.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, D, H, W) -> (N, O, D, H', W')."""
        n, c, d, h, w = x.shape
        y = F.conv2d(x.transpose(1, 2).reshape(n * d, c, h, w), self.weight.squeeze(2), self.bias,
                     self.stride[1:])
        out = y.view(n, d, *y.shape[1:]).transpose(1, 2)
        return out.contiguous() if torch.compiler.is_compiling() else out


def _batch_norm(channels: int, dims: int) -> nn.Module:
    klass = nn.BatchNorm1d if dims == 1 else nn.BatchNorm3d
    return klass(channels, eps=1e-3, momentum=0.01)  # Keras defaults (momentum 0.99)


class ChannelLayerNorm(nn.Module):
    """Keras ``LayerNormalization()`` on a channels-last tensor: normalise over channels only.

    Computed in place on the channel axis, in float32 (as ``nn.LayerNorm`` runs under autocast):
    moving the channels last for ``nn.LayerNorm`` copied every 3-D map twice, and its kernel is
    slow for a few channels over millions of positions. The parameters are ``nn.LayerNorm``'s
    (``norm.weight``, ``norm.bias``), so checkpoints load either way.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, ...) -> (N, C, ...) in at least float32, each position normalised over its C values."""
        x = x.to(torch.promote_types(x.dtype, torch.float32))  # bf16/fp16 -> fp32, fp64 stays
        var, mean = torch.var_mean(x, dim=1, keepdim=True, correction=0)
        shape = (1, -1) + (1,) * (x.dim() - 2)
        scale = torch.rsqrt(var + self.norm.eps) * self.norm.weight.to(x.dtype).view(shape)
        return (x - mean) * scale + self.norm.bias.to(x.dtype).view(shape)


def _block(layer: nn.Module, out: int, *, norm: str, act: str, dims: int = 3) -> nn.Sequential:
    if norm == "batch":
        n: nn.Module = _batch_norm(out, dims)
    else:  # spectral norm on the layer, LayerNorm over channels after it
        layer = spectral_norm(layer)
        n = nn.LayerNorm(out, eps=1e-3) if dims == 1 else ChannelLayerNorm(out)
    a = nn.ReLU() if act == "relu" else nn.LeakyReLU(0.2)
    return nn.Sequential(layer, n, a)


class _Style(TypedDict):
    """Normalisation and activation of a block (the keyword arguments of :func:`_block`)."""

    norm: str
    act: str


def _dense(i: int, o: int, **kw: Unpack[_Style]) -> nn.Sequential:
    return _block(nn.Linear(i, o), o, dims=1, **kw)


def _conv(i: int, o: int, k: tuple[int, int, int], s: tuple[int, int, int] = (1, 1, 1),
          **kw: Unpack[_Style]) -> nn.Sequential:
    flat = k[2] == 1 and s[2] == 1  # depth-1 kernel: run as 2-D
    return _block((FlatDepthConv3d if flat else nn.Conv3d)(i, o, _k(*k), stride=_k(*s)), o, **kw)


def _convt(i: int, o: int, k: tuple[int, int, int], s: tuple[int, int, int] = (1, 1, 1),
           **kw: Unpack[_Style]) -> nn.Sequential:
    return _block(nn.ConvTranspose3d(i, o, _k(*k), stride=_k(*s)), o, **kw)


def _chain(first: int, widths: list[int], make: Any, *args: Any, **kw: Any) -> tuple[nn.Sequential, int]:
    layers, c = [], first
    for w in widths:
        layers.append(make(c, w, *args, **kw))
        c = w
    return nn.Sequential(*layers), c


def _to_output(c: int, spectral: bool) -> nn.Module:
    """Conv3D with 1 filter, Keras kernel = stride = (1, 1, 10): depth 40 -> 4, then sigmoid."""
    conv = nn.Conv3d(c, 1, _k(1, 1, 10), stride=_k(1, 1, 10))
    return nn.Sequential(spectral_norm(conv) if spectral else conv, nn.Sigmoid())


def _skip(y: torch.Tensor, side: int) -> torch.Tensor:
    """A dense vector (N, side²) as a (N, 1, 1, side, side) map broadcast over channels and depth."""
    return y.view(len(y), 1, 1, side, side)


class GANGenerator(nn.Module):
    """Vanilla GAN generator: z (N, latent) -> CrysTens volume (N, 1, 4, 64, 64) in [0, 1]."""

    def __init__(self, cfg: AdversarialNetConfig) -> None:
        super().__init__()
        f = cfg.filters
        kw: _Style = {"norm": "batch", "act": "relu"}
        k3 = (3, 3, 3)
        self.stem = _dense(cfg.latent_dim, 1024, **kw)  # -> (1, 4, 16, 16)
        self.y1, _ = _chain(cfg.latent_dim, [484, 484], _dense, **kw)
        self.y2, _ = _chain(484, [784] * 3, _dense, **kw)
        self.y3, _ = _chain(784, [1024] * 2, _dense, **kw)
        self.y4, _ = _chain(1024, [4096], _dense, **kw)
        self.up1, c = _chain(1, [f(256), f(128), f(128)], _convt, k3, **kw)  # 22², depth 10
        self.up2, c = _chain(c, [f(128), f(64), f(64)], _convt, k3, **kw)  # 28², depth 16
        self.up3, c = _chain(c, [f(64), f(64)], _convt, k3, **kw)  # 32², depth 20
        self.up4, c = _chain(c, [f(32)], _convt, (2, 2, 2), (2, 2, 2), **kw)  # 64², depth 40
        self.out = _to_output(c, spectral=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """(N, latent) -> (N, 1, 4, 64, 64)."""
        y1 = self.y1(z)
        y2 = self.y2(y1)
        y3 = self.y3(y2)
        x = self.stem(z).view(len(z), 1, 4, 16, 16)
        x = self.up1(x) + _skip(y1, 22)
        x = self.up2(x) + _skip(y2, 28)
        x = self.up3(x) + _skip(y3, 32)
        x = self.up4(x) + _skip(self.y4(y3), 64)
        return self.out(x)


class GANDiscriminator(nn.Module):
    """Vanilla GAN discriminator: (N, 1, 4, 64, 64) -> logit (N,)."""

    def __init__(self, cfg: AdversarialNetConfig) -> None:
        super().__init__()
        f = cfg.filters
        kw: _Style = {"norm": "batch", "act": "lrelu"}
        self.dense, _ = _chain(LAYERS * SIZE * SIZE, [1024] * 4, _dense, **kw)
        self.dense9 = _dense(1024, 9, **kw)
        convs = [_conv(1, f(32), (1, 1, 1), **kw)]
        c = f(32)
        for w, k in [(f(32), 3), (f(32), 3), (f(32), 3), (f(64), 3)] + [(f(64), 7)] * 4:
            convs.append(_conv(c, w, (k, k, 1), **kw))
            c = w
        self.convs = nn.Sequential(*convs)  # -> (C, 4, 32, 32)
        self.down = nn.Sequential(_conv(c, f(128), (5, 5, 2), (5, 5, 1), **kw),  # (3, 6, 6)
                                  _conv(f(128), f(256), (2, 2, 2), (2, 2, 2), **kw))  # (1, 3, 3)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.25), nn.Linear(f(256) * 9, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, 4, 64, 64) -> (N,) logits."""
        d = self.dense(x.flatten(1))
        h = self.convs(x) + _skip(d, 32)
        h = self.down(h) + _skip(self.dense9(d), 3)
        return self.head(h).squeeze(1)


class WGANGenerator(nn.Module):
    """WGAN-GP generator: z (N, latent) -> (N, 1, 4, 64, 64) in [0, 1]; spectral norm + LayerNorm."""

    def __init__(self, cfg: AdversarialNetConfig) -> None:
        super().__init__()
        f = cfg.filters
        kw: _Style = {"norm": "layer", "act": "lrelu"}
        self.stem = _dense(cfg.latent_dim, 1024, **kw)
        widths = [f(n) for n in (128, 128, 64, 64, 32, 32, 32, 32)]
        self.up, c = _chain(1, widths, _convt, (3, 3, 3), **kw)  # (32, 20, 32, 32)
        self.up2 = _convt(c, f(32), (2, 2, 2), (2, 2, 2), **kw)  # (32, 40, 64, 64)
        self.out = _to_output(f(32), spectral=True)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """(N, latent) -> (N, 1, 4, 64, 64)."""
        x = self.stem(z).view(len(z), 1, 4, 16, 16)
        return self.out(self.up2(self.up(x)))


class WGANCritic(nn.Module):
    """WGAN-GP critic: (N, 1, 4, 64, 64) -> unbounded score (N,)."""

    def __init__(self, cfg: AdversarialNetConfig) -> None:
        super().__init__()
        f = cfg.filters
        kw: _Style = {"norm": "layer", "act": "lrelu"}
        spec = [(f(16), 1), (f(16), 1)] + [(f(16), 3)] * 4 + [(f(32), 7)] * 3 + [(f(64), 7)]
        convs, c = [], 1
        for w, k in spec:
            convs.append(_conv(c, w, (k, k, 1), **kw))
            c = w
        self.convs = nn.Sequential(*convs,  # (64, 4, 32, 32)
                                   _conv(c, f(64), (5, 5, 2), (5, 5, 1), **kw),  # (3, 6, 6)
                                   _conv(f(64), f(128), (2, 2, 2), (2, 2, 2), **kw))  # (1, 3, 3)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.25),
                                  spectral_norm(nn.Linear(f(128) * 9, 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, 4, 64, 64) -> (N,) scores."""
        return self.head(self.convs(x)).squeeze(1)


def _keras_init(module: nn.Module) -> None:
    """Keras's initialisation: Glorot-uniform kernels, zero biases."""
    for m in module.modules():
        if isinstance(m, nn.Linear | nn.Conv3d | nn.ConvTranspose3d):
            weight = (m.get_parameter("parametrizations.weight.original") if hasattr(m, "parametrizations")
                      else m.weight)
            nn.init.xavier_uniform_(weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def build_generator(cfg: AdversarialNetConfig) -> nn.Module:
    """The generator of ``cfg.kind``, Keras-initialised."""
    net = GANGenerator(cfg) if cfg.kind == "gan" else WGANGenerator(cfg)
    _keras_init(net)
    return net


def build_critic(cfg: AdversarialNetConfig) -> nn.Module:
    """The discriminator (``gan``) or critic (``wgan``), Keras-initialised."""
    net = GANDiscriminator(cfg) if cfg.kind == "gan" else WGANCritic(cfg)
    _keras_init(net)
    return net


@dataclass
class AdversarialBundle(SavedModel):
    """A trained GAN or WGAN-GP as saved: generator, its config, CrysTens scaling, data fingerprint.

    The model directory's ``kind`` is "gan" or "wgan"; it holds the generator only (the
    discriminator/critic stays in the run's checkpoints). Training builds and exports it;
    :class:`crysgen.pipelines.adversarial.AdversarialModel` (what ``from_pretrained`` of that class
    returns) samples from it.
    """

    KINDS = KINDS  # the module's
    DESCRIPTION = "GAN or WGAN-GP"
    NEEDS_SCALING = True

    generator: nn.Module
    net: AdversarialNetConfig
    scaling: CrysTensScaling
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        """The kind: "gan" or "wgan"."""
        return self.net.kind

    def contents(self) -> ModelContents:
        """The generator's config and weights, the scaling."""
        return ModelContents(self.net.kind, {"net": self.net.to_dict()}, self.generator.state_dict(),
                             self.data, self.scaling)

    @classmethod
    def from_files(cls: type[B], files: ModelFiles) -> B:
        """The model of a loaded "gan" or "wgan" directory (see :meth:`SavedModel.from_pretrained`)."""
        net = AdversarialNetConfig(**files.config["net"])
        generator = build_generator(net)
        generator.load_state_dict(files.state_dict)
        generator.eval()
        assert files.scaling is not None  # NEEDS_SCALING: load_model_dir checked it is there
        return cls(generator, net, files.scaling, files.data)
