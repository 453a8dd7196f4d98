"""Emotion from text: IndexTTS-2's QwenEmotion (a fine-tuned Qwen3-0.6B in ``checkpoints/qwen0.6bemo4-merge/``).

Three parts, none of them needing ``transformers``:

* the model, :class:`core.qwen3.Qwen3ForCausalLM` (our own Qwen3 forward with greedy decoding over a KV cache);
* :class:`QwenTokenizer`, the model folder's ``tokenizer.json`` through the ``tokenizers`` library, and its chat
  template (``chat_template.jinja`` or ``tokenizer_config.json``) rendered with jinja2 the way HF renders it.
* :func:`parse_emotion_output`, upstream's parsing of the model's answer (``indextts/infer_v2.py``
  ``QwenEmotion.inference``/``convert``): JSON with Chinese keys, or a regex fallback; label aliases; the
  melancholic/sad swap; clamping to [0, 1.2]; calm when nothing was detected.

Decoding is greedy. Upstream calls ``generate`` with the fine-tune's ``generation_config.json`` (not published with
enough detail to know whether it samples); greedy gives the model's most likely answer and is reproducible.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch

from core.checkpoints import CheckpointError, load_json
from core.qwen3 import KVCache, Qwen3Config, Qwen3ForCausalLM, id_list

__all__ = [  # the model classes are re-exported for existing imports
    "EMOTION_KEYS_EN", "KVCache", "Qwen3Config", "Qwen3ForCausalLM", "QwenEmotion", "QwenTokenizer",
    "convert_scores", "load_chat_template", "parse_emotion_output", "render_chat_template", "strip_thinking",
]

log = logging.getLogger(__name__)

SYSTEM_PROMPT = "文本情感分类"
EMOTION_KEYS_CN: tuple[str, ...] = ("高兴", "愤怒", "悲伤", "恐惧", "反感", "低落", "惊讶", "自然")
EMOTION_KEYS_EN: tuple[str, ...] = ("happy", "angry", "sad", "afraid", "disgusted", "melancholic", "surprised", "calm")
CN_TO_EN: dict[str, str] = dict(zip(EMOTION_KEYS_CN, EMOTION_KEYS_EN))
LABEL_ALIASES: tuple[str, ...] = ("emotion", "emotion_label", "label", "情感", "情绪")
# The model cannot tell 悲伤 (sad) from 低落 (melancholic); these words in the input swap the two scores (upstream).
MELANCHOLIC_WORDS: tuple[str, ...] = ("低落", "melancholy", "melancholic", "depression", "depressed", "gloomy")
MIN_SCORE, MAX_SCORE = 0.0, 1.2
THINK_END_ID = 151668  # "</think>" in the Qwen3 vocabulary (looked up in tokenizer.json when available)
DEFAULT_MAX_NEW_TOKENS = 2048  # upstream: 32768; an emotion answer is ~60 tokens
_REGEX_FALLBACK = re.compile(r'([^\s":.,]+?)"?\s*:\s*([\d.]+)')


# ============================================================================================== parsing (upstream)


def strip_thinking(ids: Sequence[int], think_end_id: int = THINK_END_ID) -> list[int]:
    """The generated ids after the LAST ``</think>`` (all of them when there is none)."""
    ids = list(ids)
    for i in range(len(ids) - 1, -1, -1):
        if ids[i] == think_end_id:
            return ids[i + 1 :]
    return ids


def _label_to_key(value: Any) -> str | None:
    """A Chinese emotion key for a label string (the key itself or, case-insensitively, its English name)."""
    if not isinstance(value, str):
        return None
    value = value.strip()
    if value in CN_TO_EN:
        return value
    lower = value.lower()
    for cn, en in CN_TO_EN.items():
        if lower == en:
            return cn
    return None


def _normalize_labels(content: Any) -> dict[Any, Any]:
    """Turn label answers (a bare label, an alias field, or a score key holding a label) into 1.0 scores."""
    normalized = dict(content) if isinstance(content, dict) else {}
    detected = _label_to_key(content) if isinstance(content, str) else None
    if detected is None:
        for alias in LABEL_ALIASES:
            detected = _label_to_key(normalized.get(alias))
            if detected is not None:
                break
    if detected is not None and all(key not in normalized for key in EMOTION_KEYS_CN):
        normalized[detected] = 1.0
    for key in EMOTION_KEYS_CN:
        named = _label_to_key(normalized.get(key))
        if named is not None:
            normalized[key] = 1.0 if named == key else 0.0
            if named != key:
                normalized[named] = 1.0
    return normalized


def _clamp_score(value: Any) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"QwenEmotion returned a non-numeric emotion score {value!r}. Please retry the request."
        ) from exc
    return max(MIN_SCORE, min(MAX_SCORE, value))  # this order maps NaN to MAX_SCORE, as upstream


def convert_scores(content: Any) -> dict[str, float]:
    """Upstream ``convert``: 8 clamped scores with English names in upstream order; calm = 1 when all are <= 0."""
    normalized = _normalize_labels(content)
    scores = {CN_TO_EN[key]: _clamp_score(normalized.get(key, 0.0)) for key in EMOTION_KEYS_CN}
    if all(v <= 0.0 for v in scores.values()):
        log.info("QwenEmotion detected no emotion; using calm")
        scores["calm"] = 1.0
    return scores


def parse_emotion_output(content: str, text_input: str) -> dict[str, float]:
    """The emotion scores for the model's decoded answer ``content`` to ``text_input``, exactly as upstream.

    Raises ``ValueError`` for a non-numeric score (or an unparsable number in the regex fallback) and
    ``AttributeError`` when the melancholic swap meets an answer that is valid JSON but not an object.
    """
    try:
        parsed: Any = json.loads(content)
    except json.JSONDecodeError:
        parsed = {m.group(1): float(m.group(2)) for m in _REGEX_FALLBACK.finditer(content)}
    lowered = text_input.lower()
    if any(word in lowered for word in MELANCHOLIC_WORDS):
        if not isinstance(parsed, dict):
            raise AttributeError(
                f"'{type(parsed).__name__}' object has no attribute 'get'"
                f" (QwenEmotion answered {content!r}, not a JSON object of emotion scores)"
            )
        parsed["悲伤"], parsed["低落"] = parsed.get("低落", 0.0), parsed.get("悲伤", 0.0)
    return convert_scores(parsed)


# ============================================================================================== tokenizer + template


def render_chat_template(template: str, messages: Sequence[Mapping[str, Any]], **variables: Any) -> str:
    """Render an HF chat template as ``apply_chat_template(tokenize=False)`` does (sandboxed jinja2,
    ``trim_blocks``, ``lstrip_blocks``, loop controls, HF's ``tojson``/``raise_exception``/``strftime_now``)."""
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None,
               sort_keys: bool = False) -> str:
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(fmt: str) -> str:
        from datetime import datetime

        return datetime.now().strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env.from_string(template).render(messages=list(messages), **variables)


class TextTokenizer(Protocol):
    """What :class:`QwenEmotion` needs from a tokenizer."""

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str: ...


class QwenTokenizer:
    """``tokenizer.json`` via the ``tokenizers`` library, with the folder's ``tokenizer_config.json`` settings."""

    def __init__(self, tokenizer_file: str | Path, config: Mapping[str, Any] | None = None) -> None:
        from tokenizers import Tokenizer

        path = Path(tokenizer_file)
        if not path.is_file():
            raise CheckpointError(f"Qwen tokenizer not found: {path}. Re-download the model files "
                                  "(python main.py models download).")
        try:
            self._tok = Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises a plain Exception for malformed files
            raise CheckpointError(f"Qwen tokenizer {path} is corrupt ({exc}). Re-download the model files.") from exc
        self.config = dict(config or {})
        self.clean_up_spaces = bool(self.config.get("clean_up_tokenization_spaces", False))

    def encode(self, text: str) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=True).ids)

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        text = self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)
        if self.clean_up_spaces:  # HF's clean_up_tokenization
            for a, b in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                         (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
                text = text.replace(a, b)
        return text

    def token_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def special_tokens(self) -> dict[str, str]:
        """``bos_token``/``eos_token``/... strings for the chat template, from tokenizer_config.json."""
        out = {}
        for key in ("bos_token", "eos_token", "unk_token", "pad_token"):
            value = self.config.get(key)
            if isinstance(value, dict):
                value = value.get("content")
            if isinstance(value, str):
                out[key] = value
        return out


def load_chat_template(directory: str | Path) -> str:
    """The chat template of an HF model folder: ``chat_template.jinja``, else ``tokenizer_config.json``'s."""
    directory = Path(directory)
    jinja_file = directory / "chat_template.jinja"
    if jinja_file.is_file():
        return jinja_file.read_text(encoding="utf-8")
    config_path = directory / "tokenizer_config.json"
    template = load_json(config_path, what="Qwen tokenizer config").get("chat_template")
    if isinstance(template, list):  # [{"name": ..., "template": ...}]
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    if not isinstance(template, str) or not template:
        raise CheckpointError(f"No chat template in {config_path} (and no chat_template.jinja next to it). "
                              "Re-download the model files (python main.py models download).")
    return template


# ============================================================================================== QwenEmotion


class EmotionGenerator(Protocol):
    def generate(self, prompt_ids: Sequence[int], *, max_new_tokens: int, eos_token_ids: Sequence[int]) -> list[int]:
        ...


class QwenEmotion:
    """Text -> 8 emotion scores (``happy angry sad afraid disgusted melancholic surprised calm``)."""

    def __init__(
        self,
        model: EmotionGenerator,
        tokenizer: TextTokenizer,
        chat_template: str,
        *,
        eos_token_ids: Sequence[int],
        think_end_id: int = THINK_END_ID,
        template_variables: Mapping[str, Any] | None = None,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.chat_template = chat_template
        self.eos_token_ids = list(eos_token_ids)
        self.think_end_id = think_end_id
        self.template_variables = dict(template_variables or {})
        self.max_new_tokens = max_new_tokens

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, *, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
    ) -> QwenEmotion:
        """Load ``qwen0.6bemo4-merge``: config.json, model.safetensors, tokenizer.json, tokenizer_config.json
        (+ optional generation_config.json, chat_template.jinja). Float32 unless ``dtype`` is given."""
        directory = Path(directory)
        if not directory.is_dir():
            raise CheckpointError(f"QwenEmotion model folder not found: {directory}. Run 'python main.py models "
                                  "download' or choose another emotion mode.")
        tok_config_path = directory / "tokenizer_config.json"
        tok_config = load_json(tok_config_path, what="Qwen tokenizer config") if tok_config_path.exists() else {}
        tokenizer = QwenTokenizer(directory / "tokenizer.json", tok_config)
        template = load_chat_template(directory)
        model = Qwen3ForCausalLM.from_pretrained(directory, device=device, dtype=dtype or torch.float32)
        eos = list(model.cfg.eos_token_id)
        gen_path = directory / "generation_config.json"
        if gen_path.exists():
            gen = load_json(gen_path, what="Qwen generation config")
            eos = id_list(gen.get("eos_token_id")) or eos
            if gen.get("do_sample"):
                log.info("QwenEmotion: %s asks for sampling; decoding greedily (deterministic)", gen_path)
        eos_text = tokenizer.special_tokens().get("eos_token")
        eos_id = tokenizer.token_id(eos_text) if eos_text else None
        if eos_id is not None and eos_id not in eos:
            eos.append(eos_id)
        if not eos:
            raise CheckpointError(f"QwenEmotion {directory}: no eos_token_id in config.json or generation_config.json")
        think_end = tokenizer.token_id("</think>")
        return cls(
            model,
            tokenizer,
            template,
            eos_token_ids=eos,
            think_end_id=THINK_END_ID if think_end is None else think_end,
            template_variables=tokenizer.special_tokens(),
        )

    def render_prompt(self, text: str) -> str:
        messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": text}]
        return render_chat_template(
            self.chat_template, messages, add_generation_prompt=True, enable_thinking=False,
            **self.template_variables,
        )

    def answer(self, text: str) -> str:
        """The model's decoded answer (after any ``</think>``) for ``text``."""
        prompt_ids = self.tokenizer.encode(self.render_prompt(text))
        new_ids = self.model.generate(prompt_ids, max_new_tokens=self.max_new_tokens,
                                      eos_token_ids=self.eos_token_ids)
        return self.tokenizer.decode(strip_thinking(new_ids, self.think_end_id), skip_special_tokens=True)

    def inference(self, text: str) -> dict[str, float]:
        """Upstream ``QwenEmotion.inference``: the 8 scores (English names, upstream order)."""
        return parse_emotion_output(self.answer(text), text)

    def vector(self, text: str) -> list[float]:
        """The scores as a list: happy, angry, sad, afraid, disgusted, melancholic, surprised, calm."""
        scores = self.inference(text)
        return [scores[name] for name in EMOTION_KEYS_EN]
