"""Run settings: one YAML file loaded into dataclasses, saved resolved into the run directory."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from crysgen.errors import CrysgenError
from crysgen.models.unet2d import UNetConfig
from crysgen.objectives.cascade import StageConfig
from crysgen.objectives.diffusion import DiffusionConfig
from crysgen.representations.crystens.layout import SIZE


@dataclass(frozen=True)
class OptimConfig:
    """Optimiser and loop settings.

    Attributes:
        batch_size: tensors per step (per device).
        lr: AdamW learning rate after warm-up.
        weight_decay: AdamW weight decay.
        warmup_steps: linear warm-up length.
        max_steps: optimiser steps in total (a resumed run continues up to it).
        ema_decay: decay of the exponential moving average used for sampling.
        checkpoint_every: steps between checkpoints (and model exports).
        log_every: steps between log lines.
        seed: seeds everything.
        precision: "auto" (bf16-mixed on GPU, 32-true on CPU) or a Lightning precision string.
        grad_clip: gradient-norm clip (0 = off).
    """

    batch_size: int = 64
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup_steps: int = 500
    max_steps: int = 20000
    ema_decay: float = 0.999
    checkpoint_every: int = 500
    log_every: int = 50
    seed: int = 0
    precision: str = "auto"
    grad_clip: float = 1.0


@dataclass(frozen=True)
class DiffusionTrainConfig:
    """Everything `crysgen train diffusion` needs besides the data.

    ``stage`` makes the model a single 64×64 model (default) or one stage of a cascade; the
    network's input size and channels must fit the stage (checked here, not at step 1 on a GPU).
    """

    unet: UNetConfig = field(default_factory=UNetConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    stage: StageConfig = field(default_factory=StageConfig)

    def __post_init__(self) -> None:
        role, u = self.stage.role, self.unet
        size = self.stage.low_res if role == "base" else SIZE
        if u.sample_size != size:
            raise CrysgenError(f"a {role!r} stage needs unet.sample_size {size}, got {u.sample_size}")
        cond = u.channels if role == "sr" else 0
        if u.cond_channels != cond:
            raise CrysgenError(f"a {role!r} stage needs unet.cond_channels {cond}, got {u.cond_channels}")

    def to_dict(self) -> dict[str, Any]:
        """Resolved, JSON/YAML-serialisable form."""
        return {"unet": self.unet.to_dict(), "diffusion": self.diffusion.to_dict(),
                "optim": asdict(self.optim), "stage": self.stage.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DiffusionTrainConfig:
        """Build from a nested dict (unknown keys are an error, so typos do not pass silently)."""
        data = dict(data or {})
        unknown = set(data) - {"unet", "diffusion", "optim", "stage"}
        if unknown:
            raise CrysgenError(f"unknown config section(s): {', '.join(sorted(unknown))}")
        for name, klass in (("diffusion", DiffusionConfig), ("optim", OptimConfig),
                            ("stage", StageConfig)):
            bad = set(data.get(name, {}) or {}) - {f.name for f in fields(klass)}
            if bad:
                raise CrysgenError(f"unknown key(s) in {name}: {', '.join(sorted(bad))}")
        try:
            return cls(
                unet=UNetConfig.from_dict(data.get("unet") or {}),
                diffusion=DiffusionConfig(**(data.get("diffusion") or {})),
                optim=OptimConfig(**(data.get("optim") or {})),
                stage=StageConfig(**(data.get("stage") or {})),
            )
        except TypeError as exc:
            raise CrysgenError(f"bad config: {exc}") from exc


def load_config(path: str | Path | None) -> DiffusionTrainConfig:
    """Read a YAML (or JSON) config file; None gives the defaults."""
    if path is None:
        return DiffusionTrainConfig()
    import yaml

    path = Path(path)
    if not path.is_file():
        raise CrysgenError(f"no such config file: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise CrysgenError(f"{path} is not valid YAML: {exc}") from exc
    return DiffusionTrainConfig.from_dict(data or {})


def save_config(config: DiffusionTrainConfig, path: str | Path) -> Path:
    """Write the resolved config as YAML."""
    import yaml

    path = Path(path)
    path.write_text(yaml.safe_dump(json.loads(json.dumps(config.to_dict())), sort_keys=False))
    return path
