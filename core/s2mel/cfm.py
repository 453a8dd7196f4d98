"""Conditional flow matching sampler: Euler steps of the DiT velocity with classifier-free guidance."""

from __future__ import annotations

import threading
from collections.abc import Callable

import torch
from torch import Tensor, nn

from core.api import Cancelled
from core.config import S2MelConfig
from core.s2mel.dit import DiT, DiTCondition


def fast_dtype(device: torch.device) -> torch.dtype:
    """The reduced precision of fast mode: float16 on CUDA, bfloat16 elsewhere (CPU: AVX-512 BF16 / AMX kernels)."""
    return torch.float16 if device.type == "cuda" else torch.bfloat16


class CFM(nn.Module):
    """Holds the estimator under the checkpoint's name ``estimator``."""

    def __init__(self, cfg: S2MelConfig) -> None:
        super().__init__()
        if cfg.dit_type != "DiT":
            raise ValueError(f"s2mel dit_type {cfg.dit_type!r} not supported (only 'DiT')")
        self.estimator = DiT(cfg)
        # (weights key, reduced-precision estimator copy): a plain tuple, so no submodule and no state_dict keys
        self._reduced: tuple[tuple, DiT] | None = None

    def reduced_estimator(self, dtype: torch.dtype) -> DiT:
        """The estimator with ``dtype`` weights for fast mode, built once and rebuilt when the weights change."""
        params = tuple(self.estimator.parameters())
        key = (dtype, *(p.data_ptr() for p in params), *(p._version for p in params))
        if self._reduced is None or self._reduced[0] != key:
            self._reduced = None  # free the old copy first
            self._reduced = (key, self.estimator.reduced_copy(dtype))
        return self._reduced[1]

    @torch.inference_mode()
    def inference(
        self,
        mu: Tensor,
        x_lens: Tensor | int | None,
        prompt: Tensor,
        style: Tensor,
        steps: int = 25,
        cfg_rate: float = 0.7,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
        cancel: threading.Event | None = None,
        on_step: Callable[[int, int], None] | None = None,
        temperature: float = 1.0,
        fast: bool = False,
    ) -> Tensor:
        """Sample a mel [B, 80, T] whose first ``prompt.shape[-1]`` frames are the (zeroed) prompt region.

        ``mu`` [B, T, C] content condition over prompt + target frames; ``prompt`` [B, 80, T_ref] reference mel;
        ``style`` [B, S]; ``noise`` [B, 80, T] replaces the initial ``randn`` draw (scaled by ``temperature``) so
        results are reproducible. Euler over ``linspace(0, 1, steps + 1)``; with ``cfg_rate > 0`` every step runs the
        estimator on a batch of 2 (conditional; prompt/style/mu zeroed) and uses ``(1 + r) v_c - r v_u``.
        ``cancel`` is checked before every step (raises :class:`Cancelled`); ``on_step(i, steps)`` after step i.

        ``fast`` runs the estimator's matmuls, convolutions and attention in :func:`fast_dtype` (a cached copy with
        reduced-precision weights, under autocast; faster, the mel differs slightly); the Euler state, the CFG
        combination, the time embeddings and the
        precomputed condition stay float32. ``fast=False`` is the exact float32 path.
        """
        if steps < 1:
            raise ValueError(f"diffusion steps must be >= 1, got {steps}")
        est = self.estimator
        b, t_total = mu.shape[0], mu.shape[1]
        n_mels = est.in_channels
        prompt_len = prompt.shape[-1]
        if prompt.shape[:2] != (b, n_mels) or prompt_len > t_total:
            raise ValueError(f"s2mel: prompt mel {tuple(prompt.shape)} does not fit [B={b}, {n_mels}, <= {t_total}]")
        if noise is None:
            z = torch.randn((b, n_mels, t_total), generator=generator, device=mu.device, dtype=mu.dtype)
        else:
            if tuple(noise.shape) != (b, n_mels, t_total):
                raise ValueError(f"s2mel: noise must be [{b}, {n_mels}, {t_total}], got {tuple(noise.shape)}")
            z = noise.to(device=mu.device, dtype=mu.dtype)
        x = z * temperature if temperature != 1.0 else z.clone()
        x[..., :prompt_len] = 0

        prompt_x = torch.zeros_like(x)
        prompt_x[..., :prompt_len] = prompt
        if cfg_rate > 0:
            ctx = est.condition(
                torch.cat([prompt_x, torch.zeros_like(prompt_x)]),
                torch.cat([style, torch.zeros_like(style)]),
                torch.cat([mu, torch.zeros_like(mu)]),
                x_lens,
            )
        else:
            ctx = est.condition(prompt_x, style, mu, x_lens)
        start = prompt_len  # outputs over the prompt region are discarded, skip what can be skipped
        rows = 2 * b if cfg_rate > 0 else b

        t_span = torch.linspace(0, 1, steps + 1, device=mu.device, dtype=torch.float32)
        if fast:
            dtype = fast_dtype(mu.device)
            with torch.autocast(mu.device.type, dtype=dtype):
                self._euler(self.reduced_estimator(dtype), x, t_span, ctx, start, prompt_len, rows, cfg_rate, cancel,
                            on_step)
        else:
            self._euler(est, x, t_span, ctx, start, prompt_len, rows, cfg_rate, cancel, on_step)
        return x

    def _euler(
        self,
        est: DiT,
        x: Tensor,
        t_span: Tensor,
        ctx: DiTCondition,
        start: int,
        prompt_len: int,
        rows: int,
        cfg_rate: float,
        cancel: threading.Event | None,
        on_step: Callable[[int, int], None] | None,
    ) -> None:
        """Euler steps over ``t_span``, updating ``x`` in place (float32 whatever the estimator computes in)."""
        steps = t_span.numel() - 1
        t = t_span[0]
        for step in range(1, steps + 1):
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            dt = t_span[step] - t_span[step - 1]
            tb = t.expand(rows)
            if cfg_rate > 0:
                v = est.velocity(torch.cat([x, x]), tb, ctx, start).float()
                v_cond, v_uncond = v.chunk(2, dim=0)
                v = (1.0 + cfg_rate) * v_cond - cfg_rate * v_uncond
            else:
                v = est.velocity(x, tb, ctx, start).float()
            x[..., start:] += dt * v
            t = t + dt
            x[..., :prompt_len] = 0
            if on_step is not None:
                on_step(step, steps)
