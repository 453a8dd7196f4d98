"""config.yaml loading and the safe checkpoint loaders."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pytest
import torch
import yaml
from reference import ref
from torch import nn

from core.checkpoints import CheckpointError, fold_weight_norm, load_hf_dir, load_safetensors, load_strict, load_torch
from core.config import ConfigError, load_config


def test_real_config_loads_typed():
    cfg = load_config(ref("data", "config.yaml"))
    raw = yaml.safe_load(ref("data", "config.yaml").read_text(encoding="utf-8"))
    assert cfg.gpt.model_dim == raw["gpt"]["model_dim"]
    assert cfg.gpt.condition_module.num_blocks == raw["gpt"]["condition_module"]["num_blocks"]
    assert cfg.gpt.emo_condition_module.attention_heads == raw["gpt"]["emo_condition_module"]["attention_heads"]
    assert cfg.semantic_codec.codebook_size == raw["semantic_codec"]["codebook_size"]
    assert cfg.s2mel.DiT.depth == raw["s2mel"]["DiT"]["depth"]
    assert cfg.s2mel.preprocess_params.spect_params.fmax is None  # the YAML says "None"
    assert cfg.emo_num == raw["emo_num"]
    assert cfg.bpe_model == raw["dataset"]["bpe_model"]
    assert cfg.qwen_emo_path == str(raw["qwen_emo_path"]).strip()


def test_unknown_keys_tolerated_and_missing_key_named(tmp_path):
    raw = yaml.safe_load(ref("data", "config.yaml").read_text(encoding="utf-8"))
    raw["gpt"]["some_future_option"] = 3
    raw["brand_new_section"] = {"x": 1}
    p = tmp_path / "config.yaml"
    p.write_text(yaml.safe_dump(raw), encoding="utf-8")
    assert load_config(p).gpt.model_dim == raw["gpt"]["model_dim"]

    del raw["gpt"]["condition_module"]["num_blocks"]
    p.write_text(yaml.safe_dump(raw), encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert "gpt.condition_module.num_blocks" in str(err.value) and str(p) in str(err.value)


def test_bad_config_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("gpt: [unclosed", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    wrong = tmp_path / "wrong.yaml"
    raw = yaml.safe_load(ref("data", "config.yaml").read_text(encoding="utf-8"))
    raw["gpt"]["layers"] = "many"
    wrong.write_text(yaml.safe_dump(raw), encoding="utf-8")
    with pytest.raises(ConfigError, match="gpt.layers"):
        load_config(wrong)


def test_torch_loader_errors_name_the_file(tmp_path):
    good = tmp_path / "good.pt"
    torch.save({"w": torch.ones(3)}, good)
    assert torch.equal(load_torch(good)["w"], torch.ones(3))

    with pytest.raises(CheckpointError, match="not found"):
        load_torch(tmp_path / "missing.pt", what="GPT checkpoint")
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_torch(empty)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError) as err:
        load_torch(truncated)
    assert str(truncated) in str(err.value) and "truncated or corrupt" in str(err.value)

    import argparse  # an arbitrary (importable) class must never be unpickled

    evil = tmp_path / "evil.pt"
    torch.save({"obj": argparse.Namespace(a=1)}, evil)
    with pytest.raises(CheckpointError, match="cannot be loaded safely"):
        load_torch(evil)


def test_safetensors_and_hf_dir(tmp_path):
    src = ref("w2vbert", "w2v-bert-2.0")
    cfg, state = load_hf_dir(src)
    assert cfg["hidden_size"] > 0 and any(k.startswith("encoder.layers.0.") for k in state)
    broken = tmp_path / "w2v"
    shutil.copytree(src, broken)
    data = (broken / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(data[: len(data) - 1000])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_hf_dir(broken)
    with pytest.raises(CheckpointError, match="not found"):
        load_safetensors(tmp_path / "none.safetensors")
    (broken / "config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(CheckpointError, match="config.json"):
        load_hf_dir(broken)


def test_fold_weight_norm_matches_torch_weight_norm():
    conv = nn.Conv1d(4, 6, 3)
    wn = torch.nn.utils.parametrizations.weight_norm(nn.Conv1d(4, 6, 3))
    with torch.no_grad():
        g = torch.rand(6, 1, 1) + 0.5
        v = torch.randn(6, 4, 3)
        wn.parametrizations.weight.original0.copy_(g)
        wn.parametrizations.weight.original1.copy_(v)
    folded = fold_weight_norm({"c.weight_g": g, "c.weight_v": v, "c.bias": torch.zeros(6)})
    assert set(folded) == {"c.weight", "c.bias"}
    torch.testing.assert_close(folded["c.weight"], wn.weight, rtol=0, atol=1e-7)
    del conv


def test_load_strict_lists_problems():
    m = nn.Linear(3, 2)
    with pytest.raises(CheckpointError) as err:
        load_strict(m, {"weight": torch.zeros(2, 4), "extra": torch.zeros(1)}, source="x.pth")
    msg = str(err.value)
    assert "missing keys: bias" in msg and "unexpected keys: extra" in msg
    assert "weight (file (2, 4), model (2, 3))" in msg
    load_strict(m, {"weight": torch.ones(2, 3), "bias": torch.ones(2)}, source="x.pth")
    assert torch.equal(m.weight, torch.ones(2, 3))


def test_zip_checkpoint_with_corrupt_member(tmp_path):
    good = tmp_path / "good.pt"
    torch.save({"w": torch.arange(1000.0)}, good)
    bad = tmp_path / "bad.pt"
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(bad, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename.endswith("data.pkl"):
                data = b"\x00garbage" + data[8:]
            zout.writestr(info, data)
    with pytest.raises(CheckpointError) as err:
        load_torch(bad)
    assert str(bad) in str(err.value)


def test_core_import_has_no_gui():
    import subprocess
    import sys

    code = ("import sys, core, core.api, core.config, core.checkpoints, core.engine, core.cli; "
            "bad=[m for m in sys.modules if m.split('.')[0] in ('tkinter','_tkinter','desktop')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    repo = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
