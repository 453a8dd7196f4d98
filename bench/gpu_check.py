"""One script for a lent GPU: parity on the device, reduced-precision error, stage timings, a table.

1. **Parity on the device, float32**: every e2e golden case (tiny models of the reference set, w2v features given,
   greedy, the saved CFM noise) and the w2v-BERT goldens run on ``--device``; for every stage the worst error is
   printed as a ratio to the README tolerance (``|a - e| / (atol + rtol |e|)``; at most 1 passes), codes exact.
2. **Reduced precision against the device's float32**: the same cases with the GPT in float16 (CUDA only) and
   with the diffusion in fast mode (float16 on CUDA, bfloat16 on the CPU): code agreement, mel and waveform SNR.
3. **Timings**: every stage of a 3-segment synthesis (stage clocks synchronised with the device), float32 and
   reduced precision, with the time to the first segment, the real-time factor and the peak memory (VRAM on CUDA,
   RSS on the CPU). ``--sizes released`` builds every stage at the released configuration with random weights
   (the cost of real weights); ``--sizes tiny`` (the default on the CPU, so CI can prove the script works) uses
   the tiny reference models.
4. A summary table; the exit status is 1 when a parity check fails.

    python bench/gpu_check.py                          # CUDA if present: released sizes
    python bench/gpu_check.py --device cpu             # CI: tiny sizes, a minute on two cores
    python bench/gpu_check.py --device cuda --codes 100 --steps 25
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
for _p in (ROOT, ROOT / "tests", ROOT / "bench"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from bench_e2e import TEXT, build_engine, instrument, write_clip
from common import peak_rss_mib, real_config_path
from reference import e2e_cases, e2e_model_paths, e2e_request, ref
from safetensors.torch import load_file

from core.api import GenerationSettings, SegmentAudio, SynthesisRequest
from core.config import load_config
from core.engine import Engine
from core.pipeline import Pipeline

# stage -> (atol, rtol) of the README / the parity tests
E2E_TOLERANCE = {
    "style": (1e-4, 1e-4), "ref_mel": (1e-4, 1e-4), "prompt_condition": (1e-4, 1e-4), "emovec": (1e-4, 1e-4),
    "latent": (1e-4, 1e-4), "vc_target (mel)": (5e-4, 1e-4), "bigvgan_out": (2e-3, 1e-4),
}
W2V_ATOL = 2e-5
WAV_LSB = 32  # int16 output: at most 32 LSB from the golden


@dataclasses.dataclass
class Check:
    stage: str
    ratio: float  # worst error / tolerance: <= 1 passes
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.ratio <= 1.0


def tolerance_ratio(actual: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float) -> float:
    a = actual.detach().float().cpu().reshape(expected.shape)
    e = expected.float()
    if not e.numel():
        return 0.0
    return ((a - e).abs() / (atol + rtol * e.abs())).max().item()


def snr_db(signal: np.ndarray | torch.Tensor, reference: np.ndarray | torch.Tensor) -> float:
    s = np.asarray(signal, dtype=np.float64).reshape(-1)
    r = np.asarray(reference, dtype=np.float64).reshape(-1)
    n = min(s.size, r.size)
    noise = float(np.sum((s[:n] - r[:n]) ** 2))
    power = float(np.sum(r[:n] ** 2))
    return math.inf if noise == 0 else 10 * math.log10(max(power, 1e-30) / noise)


def sync_for(device: torch.device) -> Callable[[], None]:
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


# ------------------------------------------------------------------------------------------------ 1. parity


def e2e_engine(device: str, fp16: bool = False) -> Engine:
    eng = Engine(cache_dir=None)
    eng.load(paths=e2e_model_paths(), device=device, fp16=fp16)
    return eng


def run_case(eng: Engine, case: dict, *, fast: bool = False):
    g = load_file(str(ref("e2e", f"{case['name']}.safetensors")))
    request = e2e_request(case)
    if fast:
        request = request.with_settings(fast=True)
    dev = eng.device
    spk = (g["spk_cond_emb_x8"].float() / 8).to(dev)
    emo = (g["emo_cond_emb_x8"].float() / 8).to(dev)
    out = eng.synthesize_traced(request, spk_cond_emb=spk, emo_cond_emb=emo,
                                noise=lambda i, frames: g[f"seg{i}.cfm_noise"].to(dev))
    return g, out


def e2e_parity(eng: Engine) -> list[Check]:
    worst: dict[str, float] = {}
    codes_bad: list[str] = []
    lsb = 0
    for case in e2e_cases()["cases"]:
        g, (result, voice, traces, emovec) = run_case(eng, case)

        def note(stage: str, actual: torch.Tensor, expected: torch.Tensor) -> None:
            atol, rtol = E2E_TOLERANCE[stage]
            worst[stage] = max(worst.get(stage, 0.0), tolerance_ratio(actual, expected, atol, rtol))

        note("style", voice.style, g["style"])
        note("ref_mel", voice.ref_mel, g["ref_mel"])
        note("prompt_condition", voice.prompt_condition, g["prompt_condition"])
        for i, trace in enumerate(traces):
            note("emovec", emovec, g[f"seg{i}.emovec"])
            if trace.codes.reshape(-1).tolist() != g[f"seg{i}.codes"].reshape(-1).tolist():
                codes_bad.append(f"{case['name']} seg{i}")
                continue  # the later stages of this segment follow other codes
            note("latent", trace.latent, g[f"seg{i}.latent"])
            note("vc_target (mel)", trace.mel, g[f"seg{i}.vc_target"])
            note("bigvgan_out", trace.wav / 32767.0, g[f"seg{i}.bigvgan_out"])
        expected = g["wav_int16"].to(torch.int32).reshape(-1)
        got = torch.from_numpy(result.audio).to(torch.int32)
        lsb = max(lsb, (got - expected).abs().max().item() if got.numel() == expected.numel() else 1 << 16)
    checks = [Check(stage, ratio) for stage, ratio in worst.items()]
    checks.append(Check("GPT codes (exact)", float(len(codes_bad)) * 2.0, ", ".join(codes_bad) or "all equal"))
    checks.append(Check("output wav (int16)", lsb / WAV_LSB, f"max {lsb} LSB"))
    return checks


def w2v_parity(device: torch.device) -> Check:
    from core.w2vbert import SemanticEncoder

    enc = SemanticEncoder.from_files(ref("w2vbert", "w2v-bert-2.0"), ref("w2vbert", "wav2vec2bert_stats.pt"))
    enc = enc.to(device)
    g = load_file(str(ref("w2vbert", "w2vbert.safetensors")))
    cases = sorted({k.split(".")[0] for k in g if k.endswith(".feat_normalized")})
    err = 0.0
    with torch.inference_mode():
        for case in cases:
            got = enc.embed(g[f"{case}.input_features"].to(device), g[f"{case}.attention_mask"].to(device))
            err = max(err, (got.float().cpu() - g[f"{case}.feat_normalized"].float()).abs().max().item())
    return Check("w2v-BERT features", err / W2V_ATOL, f"max |diff| {err:.2e} over {len(cases)} clips")


# ------------------------------------------------------------------------------------- 2. reduced precision


def precision_checks(reference: Engine, label: str, other: Engine, fast: bool) -> list[Check]:
    """``other`` (or ``reference`` in fast mode) against ``reference`` float32, same inputs and noise: SNRs."""
    agree = total = 0
    mel_snr: list[float] = []
    wav_snr: list[float] = []
    for case in e2e_cases()["cases"]:
        _, (res32, _, tr32, _) = run_case(reference, case)
        _, (res, _, tr, _) = run_case(other, case, fast=fast)
        for a, b in zip(tr32, tr):
            ca, cb = a.codes.reshape(-1).tolist(), b.codes.reshape(-1).tolist()
            agree += sum(x == y for x, y in zip(ca, cb))
            total += max(len(ca), len(cb))
            if ca == cb:  # same codes: the mel and the waveform are comparable
                mel_snr.append(snr_db(b.mel.float().cpu(), a.mel.float().cpu()))
                wav_snr.append(snr_db(b.wav, a.wav))
    detail = (f"codes {agree}/{total} equal; mel SNR min {min(mel_snr, default=float('nan')):.1f} dB; "
              f"wav SNR min {min(wav_snr, default=float('nan')):.1f} dB")
    # informational: reduced precision is not held to the float32 tolerances (ratio 0 = reported, not judged)
    return [Check(label, 0.0, detail)]


# ------------------------------------------------------------------------------------------------ 3. timing


def move(p: Pipeline, device: torch.device, fp16: bool) -> Pipeline:
    """The same pipeline with every stage on ``device`` (the GPT in float16 when ``fp16``)."""
    gpt = p.gpt.to(device=device, dtype=torch.float16 if fp16 else torch.float32)
    stages = {name: getattr(p, name).to(device) for name in ("codec", "campplus", "s2mel", "vocoder")}
    semantic = p.semantic.to(device) if p.semantic is not None else None
    return dataclasses.replace(p, gpt=gpt, semantic=semantic, device=device, fp16=fp16, **stages)


@contextmanager
def peak_memory(device: torch.device) -> Iterator[dict[str, float]]:
    out: dict[str, float] = {}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    yield out
    out["MiB"] = (torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else peak_rss_mib())


def timed_synthesis(eng: Engine, text: str, settings: GenerationSettings, clip: Path) -> dict[str, object]:
    sync = sync_for(eng.device)
    clock = instrument(eng, sync)
    arrivals: list[float] = []
    samples = 0

    def arrived(seg: SegmentAudio) -> None:
        nonlocal samples
        sync()
        arrivals.append(time.perf_counter() - start)
        samples += seg.audio.size

    with peak_memory(eng.device) as mem:
        sync()
        start = time.perf_counter()
        eng.synthesize(SynthesisRequest(text, clip, settings=settings), on_segment=arrived)
        sync()
        total = time.perf_counter() - start
    audio_s = samples / 22050
    return {"stages": dict(clock.seconds), "total": total, "first": arrivals[0] if arrivals else math.nan,
            "segments": len(arrivals), "audio_s": audio_s, "rtf": total / audio_s if audio_s else math.nan,
            "peak_mib": mem["MiB"], "cuda": eng.device.type == "cuda"}


def timing_engines(sizes: str, device: torch.device) -> Iterator[tuple[str, Engine, bool]]:
    """(label, engine, fast) for float32 and reduced precision, at the chosen sizes."""
    reduced = "fp16 GPT + fast CFM" if device.type == "cuda" else "fast CFM (bf16)"
    if sizes == "tiny":  # the tiny model folder of the tests (w2v-BERT included), loaded as the app loads it
        from tiny_models import tiny_model_dir

        for label, fp16, fast in (("fp32", False, False), (reduced, device.type == "cuda", True)):
            eng = Engine(cache_dir=None)
            eng.load(tiny_model_dir(), device=str(device), fp16=fp16)
            yield label, eng, fast
        return
    cfg_path = real_config_path()
    cfg = load_config(cfg_path)
    eng, _ = build_engine(cfg, cfg_path.parent / cfg.bpe_model)
    base = eng.pipeline
    yield "fp32", Engine(pipeline=move(base, device, fp16=False)), False
    yield reduced, Engine(pipeline=move(base, device, fp16=device.type == "cuda")), True


def timing(sizes: str, device: torch.device, codes: int, steps: int, ref_seconds: float) -> list[tuple[str, dict]]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        # the warm-up speaks with another clip, so the timed run prepares its voice (w2v-BERT, codec, CAMPPlus)
        warm = write_clip(Path(tmp) / "warm.wav", ref_seconds / 2)
        clip = write_clip(Path(tmp) / "voice.wav", ref_seconds)
        for label, eng, fast in timing_engines(sizes, device):
            # tiny models: a short text in 3 segments within the tiny GPT's positions; released: the bench text
            text = TEXT if sizes == "released" else "One small test. Two small tests. Three small tests."
            tokens = 120 if sizes == "released" else 8
            settings = GenerationSettings(max_mel_tokens=codes, diffusion_steps=steps, do_sample=False, num_beams=1,
                                          max_text_tokens_per_segment=tokens, seed=0, fast=fast)
            timed_synthesis(eng, text, dataclasses.replace(settings, max_mel_tokens=min(codes, 8)), warm)
            rows.append((label, timed_synthesis(eng, text, settings, clip)))
            del eng
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return rows


# ------------------------------------------------------------------------------------------------- report


def print_checks(title: str, checks: list[Check]) -> bool:
    print(f"\n{title}")
    print(f"  {'stage':28s} {'error/tolerance':>16s}  result  detail")
    for c in checks:
        verdict = "pass" if c.ok else "FAIL"
        print(f"  {c.stage:28s} {c.ratio:16.3g}  {verdict:6s}  {c.detail}")
    return all(c.ok for c in checks)


def print_timing(rows: list[tuple[str, dict]]) -> None:
    stages: list[str] = []
    for _, r in rows:
        stages += [s for s in r["stages"] if s not in stages]  # type: ignore[union-attr]
    print("\ntimings (seconds, summed over segments)")
    print(f"  {'stage':34s}" + "".join(f"{label:>22s}" for label, _ in rows))
    for s in stages:
        print(f"  {s:34s}" + "".join(f"{r['stages'].get(s, 0.0):22.3f}" for _, r in rows))  # type: ignore[union-attr]
    for key, name in (("total", "total"), ("first", "first segment after"), ("rtf", "real-time factor"),
                      ("audio_s", "audio seconds"),
                      ("peak_mib", "peak VRAM MiB" if rows and rows[0][1].get("cuda") else "peak RSS MiB (process)")):
        print(f"  {name:34s}" + "".join(f"{float(r[key]):22.3f}" for _, r in rows))  # type: ignore[arg-type]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sizes", choices=("tiny", "released"), default=None,
                        help="timing models (default: released on CUDA, tiny on the CPU)")
    parser.add_argument("--codes", type=int, default=None, help="codes per segment (default 100 released, 16 tiny)")
    parser.add_argument("--steps", type=int, default=25, help="diffusion steps in the timing run")
    parser.add_argument("--ref-seconds", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available here; run with --device cpu", file=sys.stderr)
        return 2
    sizes = args.sizes or ("released" if device.type == "cuda" else "tiny")
    codes = args.codes or (100 if sizes == "released" else 16)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"gpu_check on {device} ({name}); torch {torch.__version__}; timing sizes {sizes}, {codes} codes per "
          f"segment, {args.steps} diffusion steps")

    fp32 = e2e_engine(str(device))
    ok = print_checks("1. parity on the device, float32 (README tolerances)",
                      [*e2e_parity(fp32), w2v_parity(device)])
    reduced = precision_checks(fp32, "fast CFM vs fp32", fp32, fast=True)
    if device.type == "cuda":
        reduced += precision_checks(fp32, "fp16 GPT vs fp32", e2e_engine(str(device), fp16=True), fast=False)
    else:
        print("\n(fp16 GPT is a CUDA path: not measured on the CPU)")
    print_checks("2. reduced precision against the device's float32 (reported, not judged)", reduced)
    del fp32
    print_timing(timing(sizes, device, codes, args.steps, args.ref_seconds))
    print(f"\nparity on {device}: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
