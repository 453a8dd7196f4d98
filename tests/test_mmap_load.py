"""Checkpoints are memory-mapped, not copied: the loaders hand out views of a private mapping of the file, the
models are built as weightless skeletons and adopt them, and what the loaders derive from a weight (folded weight
norm, the GPT's out-major layout) releases the source pages instead of holding both. Linux: the mappings and their
resident sizes are read from /proc/self/maps and /proc/self/smaps."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from core.checkpoints import (
    fold_weight_norm,
    load_safetensors,
    load_strict,
    load_torch,
    prefault,
    release_pages,
    skeleton,
)
from core.s2mel.loader import read_s2mel_net

pytestmark = pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux /proc")

MB = 1 << 20


def _mappings(path: Path) -> list[tuple[int, int, str, int]]:
    """(start, end, permissions, resident bytes) of every mapping of ``path`` in this process."""
    target = str(Path(path).resolve())
    out: list[tuple[int, int, str, int]] = []
    current: list | None = None
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 5 and "-" in fields[0] and not fields[0].endswith(":"):
            current = None
            if len(fields) >= 6 and " ".join(fields[5:]) == target:
                lo, hi = (int(x, 16) for x in fields[0].split("-"))
                current = [lo, hi, fields[1], 0]
                out.append(current)  # type: ignore[arg-type]
        elif current is not None and fields and fields[0] == "Rss:":
            current[3] = int(fields[1]) * 1024
    return [tuple(m) for m in out]  # type: ignore[misc]


def _mapped_from(t: torch.Tensor, path: Path) -> str | None:
    """The permissions of the mapping of ``path`` that holds ``t``'s memory, or None (a copy)."""
    for lo, hi, perms, _ in _mappings(path):
        if lo <= t.data_ptr() and t.data_ptr() + t.nbytes <= hi:
            return perms
    return None


def _resident(path: Path) -> int:
    return sum(m[3] for m in _mappings(path))


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_torch_zip_and_safetensors_tensors_are_private_views_of_the_file(tmp_path: Path) -> None:
    w = torch.randn(256, 1024)
    pt, st = tmp_path / "w.pth", tmp_path / "w.safetensors"
    torch.save({"w": w}, pt)
    save_file({"w": w}, str(st))
    before = {p: _digest(p) for p in (pt, st)}
    for path, state in ((pt, load_torch(pt)), (st, load_safetensors(st))):
        loaded = state["w"]
        assert torch.equal(loaded, w)
        assert _mapped_from(loaded, path) == "rw-p", f"{path.name}: not a private mapping of the file"
        loaded.mul_(2)  # what a loader may write stays in this process (copy-on-write)
        assert torch.equal(loaded, 2 * w)
    assert {p: _digest(p) for p in (pt, st)} == before


def test_legacy_torch_file_is_read_not_mapped(tmp_path: Path) -> None:
    w = torch.randn(64, 64)
    legacy = tmp_path / "legacy.pt"
    torch.save({"w": w}, legacy, _use_new_zipfile_serialization=False)
    loaded = load_torch(legacy)["w"]
    assert torch.equal(loaded, w) and _mapped_from(loaded, legacy) is None


def test_s2mel_net_is_mapped_and_training_state_never_read(tmp_path: Path) -> None:
    base = torch.randn(4, 300)
    net = {"cfm": {"module.a": torch.randn(512, 512), "view": base[1:3, 7:107]}, "gpt_layer": {"b": torch.ones(5)}}
    path = tmp_path / "s2mel.pth"
    torch.save({"net": net, "optimizer": {"state": {0: {"exp_avg": torch.zeros(8 * MB // 4)}}}}, path)
    got = read_s2mel_net(path)
    assert torch.equal(got["cfm"]["a"], net["cfm"]["module.a"])
    assert torch.equal(got["cfm"]["view"], base[1:3, 7:107])  # an offset, strided view of a bigger storage
    assert torch.equal(got["gpt_layer"]["b"], torch.ones(5))
    assert _mapped_from(got["cfm"]["a"], path) == "rw-p"
    assert _resident(path) < 2 * MB  # the 8 MB of optimizer moments were never read


def test_prefault_then_release_pages(tmp_path: Path) -> None:
    w = torch.randn(4 * MB // 4)
    path = tmp_path / "big.pth"
    torch.save({"w": w}, path)
    loaded = load_torch(path)["w"]
    assert _resident(path) < 1 * MB  # nothing read at load
    prefault([loaded])
    assert _resident(path) >= 4 * MB
    release_pages(loaded)
    assert _resident(path) < 1 * MB
    assert torch.equal(loaded, w)  # a released file page comes back from the file, unchanged


def test_release_pages_leaves_views_alone() -> None:
    base = torch.ones(4 * MB // 4)
    release_pages(base[: MB // 4])  # a view sharing its storage: untouched
    assert bool((base == 1).all())


def test_fold_with_release_is_the_plain_fold(tmp_path: Path) -> None:
    g, v = torch.rand(64, 1, 1) + 0.5, torch.randn(64, 128, 7)
    path = tmp_path / "wn.pth"
    torch.save({"c.weight_g": g, "c.weight_v": v, "c.bias": torch.zeros(64)}, path)
    plain = fold_weight_norm({"c.weight_g": g, "c.weight_v": v})
    released = fold_weight_norm(load_torch(path), release=True)
    assert set(released) == {"c.weight", "c.bias"}
    assert torch.equal(released["c.weight"], plain["c.weight"])
    assert _mapped_from(released["c.weight"], path) is None


class _Tables(nn.Module):
    table: torch.Tensor  # non-persistent buffer

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 4)
        self.emb = nn.Embedding(10, 4)
        self.register_buffer("table", torch.arange(6.0).exp(), persistent=False)


def test_skeleton_has_weightless_parameters_and_real_computed_tables() -> None:
    with skeleton():
        model = _Tables()
    assert all(p.is_meta for p in model.parameters())
    assert not model.table.is_meta and torch.equal(model.table, torch.arange(6.0).exp())
    state = {"proj.weight": torch.randn(4, 8), "proj.bias": torch.randn(4), "emb.weight": torch.randn(10, 4)}
    load_strict(model, state, source="x.pth", assign=True)
    assert model.proj.weight is not None and model.proj.weight.data_ptr() == state["proj.weight"].data_ptr()
    looked_up: torch.Tensor = model.emb(torch.tensor([3]))
    assert torch.equal(looked_up[0], state["emb.weight"][3])


def test_load_strict_refuses_to_leave_a_skeleton_tensor_unloaded() -> None:
    class Lost(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Linear(2, 2)
            self.register_buffer("scratch", torch.empty(3), persistent=False)  # made by torch.empty: meta

    with skeleton():
        model = Lost()
    with pytest.raises(RuntimeError, match="scratch"):
        load_strict(model, {"proj.weight": torch.zeros(2, 2), "proj.bias": torch.zeros(2)}, source="x", assign=True)


def test_loaded_gpt_holds_out_major_copies_and_mapped_weights() -> None:
    """The real loader on the reference GPT: GPT-2 linears are private out-major copies (their file pages released),
    every other weight a view of the file."""
    from reference import ref

    from core.config import load_config
    from core.gpt.model import Conv1D, UnifiedVoice

    cfg = load_config(ref("gpt", "config.yaml"))
    path = Path(ref("gpt", cfg.gpt_checkpoint)).resolve()  # read-only: the private mapping never writes to it
    model = UnifiedVoice.from_checkpoint(path, cfg.require("gpt"))
    linears = [m for m in model.modules() if isinstance(m, Conv1D)]
    assert linears and all(m.weight.t().is_contiguous() for m in linears)
    assert all(_mapped_from(m.weight, path) is None for m in linears)
    assert _mapped_from(model.mel_head.weight, path) == "rw-p"
