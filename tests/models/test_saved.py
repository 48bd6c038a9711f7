"""The shared save/load mechanism of saved-model bundles (crysgen.models.saved)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from crysgen import CrysgenError, __version__
from crysgen.models.model_dir import FORMAT, ModelFiles
from crysgen.models.saved import ModelContents, SavedModel


@dataclass
class Toy(SavedModel):
    """A minimal bundle: a linear layer with an integer buffer, a note file and optional parts."""

    KINDS = ("toy",)
    DESCRIPTION = "toy model"
    REQUIRED_FILES = ("note.txt",)

    net: torch.nn.Module
    note: str = "hello"
    parts: dict[str, Toy] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def contents(self) -> ModelContents:
        return ModelContents("toy", {"note": self.note, **self.extra}, self.net.state_dict(), {"name": "t"},
                             files={"note.txt": lambda p: p.write_text(self.note)}, parts=dict(self.parts))

    @classmethod
    def from_files(cls, files: ModelFiles) -> Toy:
        net = _net()
        net.load_state_dict(files.state_dict)
        return cls(net, (files.path / "note.txt").read_text())


def _net(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = torch.nn.Linear(5, 3)
    net.register_buffer("count", torch.tensor([7, 8], dtype=torch.int64))
    return net


def _files(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


def test_half_round_trip_stores_fp16_and_loads_float32(tmp_path):
    net = _net()
    Toy(net).save_pretrained(tmp_path / "m")  # HALF: fp16 by default
    stored = load_file(str(tmp_path / "m" / "weights.safetensors"))
    assert stored["weight"].dtype == torch.float16 and stored["count"].dtype == torch.int64
    again = Toy.from_pretrained(tmp_path / "m")
    state = again.net.state_dict()
    assert state["weight"].dtype == torch.float32
    assert torch.equal(state["weight"], net.weight.detach().half().float())
    assert not torch.equal(state["weight"], net.weight.detach())  # the values were rounded
    assert torch.equal(state["count"], torch.tensor([7, 8]))
    assert again.note == "hello"


def test_full_precision_is_exact(tmp_path):
    net = _net()
    Toy(net).save_pretrained(tmp_path / "m", half=False)
    assert load_file(str(tmp_path / "m" / "weights.safetensors"))["weight"].dtype == torch.float32
    assert torch.equal(Toy.from_pretrained(tmp_path / "m").net.weight, net.weight)


def test_loaded_state_dict_is_float32_whatever_was_stored(tmp_path):
    """The upcast belongs to the loader, so a bundle's from_files never sees fp16."""
    Toy(_net()).save_pretrained(tmp_path / "m", half=True)
    seen: list[torch.dtype] = []

    class Spy(Toy):
        @classmethod
        def from_files(cls, files: ModelFiles) -> Toy:
            seen.extend(v.dtype for v in files.state_dict.values() if v.is_floating_point())
            return super().from_files(files)

    Spy.from_pretrained(tmp_path / "m")
    assert seen and set(seen) == {torch.float32}


def test_metadata(tmp_path):
    Toy(_net()).save_pretrained(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    assert meta == {"format": FORMAT, "kind": "toy", "crysgen_version": __version__,
                    "config": {"note": "hello"}, "data": {"name": "t"}}


def test_failed_save_leaves_the_old_files(tmp_path):
    path = Toy(_net(0)).save_pretrained(tmp_path / "m")
    before = _files(path)

    def broken(p: Path) -> None:
        p.write_text("half")
        raise OSError("disk full")

    class Broken(Toy):
        def contents(self) -> ModelContents:
            c = super().contents()
            # written after the weights and note.txt: renaming each file as soon as it is written
            # would already have replaced those two
            c.files["zzz.bin"] = broken
            return c

    with pytest.raises(OSError, match="disk full"):
        Broken(_net(1), note="new").save_pretrained(path)
    assert _files(path) == before  # nothing replaced, no temporary file left


def test_config_that_is_not_json_leaves_the_old_files(tmp_path):
    path = Toy(_net(0)).save_pretrained(tmp_path / "m")
    before = _files(path)
    with pytest.raises(TypeError):
        Toy(_net(1), extra={"bad": object()}).save_pretrained(path)
    assert _files(path) == before


def test_parts_are_saved_with_the_same_precision(tmp_path):
    path = Toy(_net(0), parts={"sub": Toy(_net(1), note="inner")}).save_pretrained(tmp_path / "m", half=False)
    assert (path / "sub" / "note.txt").read_text() == "inner"
    assert load_file(str(path / "sub" / "weights.safetensors"))["weight"].dtype == torch.float32
    assert json.loads((path / "sub" / "config.json").read_text())["kind"] == "toy"
    own = Toy(_net(0), parts={"sub": Toy(_net(2))}).save_pretrained(tmp_path / "own", parts=False)
    assert not (own / "sub").exists()


def test_kind_and_required_files_are_checked(tmp_path):
    path = Toy(_net()).save_pretrained(tmp_path / "m")

    class Other(Toy):
        KINDS = ("other",)
        DESCRIPTION = "other model"

    with pytest.raises(CrysgenError, match=r"holds a 'toy' model, not an other model"):
        Other.from_pretrained(path)
    (path / "note.txt").unlink()
    with pytest.raises(CrysgenError, match=r"not a complete toy model \(missing note\.txt\)"):
        Toy.from_pretrained(path)
    (path / "weights.safetensors").unlink()
    with pytest.raises(CrysgenError, match=r"missing weights\.safetensors"):
        Toy.from_pretrained(path)
    with pytest.raises(CrysgenError, match="does not exist"):
        Toy.from_pretrained(tmp_path / "nowhere")


def test_a_failed_save_leaves_the_folder_as_it_was(tmp_path):
    from crysgen.models.model_dir import write_all_or_none

    (tmp_path / "a.txt").write_text("old")

    def broken(path):
        path.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_all_or_none(tmp_path, {"a.txt": lambda p: p.write_text("new"), "b.txt": broken})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]  # no temporary file left
    assert (tmp_path / "a.txt").read_text() == "old"
    write_all_or_none(tmp_path, {"a.txt": lambda p: p.write_text("new")})
    assert (tmp_path / "a.txt").read_text() == "new"
