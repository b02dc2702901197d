"""``detoxify`` backend: Unitary's Detoxify transformer models, from a local checkpoint only.

Optional: ``pip install 'voicebot[detoxify]'`` (pulls in torch; not part of the default install).
Detoxify downloads its checkpoint on first use, which voicebot never does at run time. Instead
set ``moderation.detoxify_checkpoint`` to either

* a ``.ckpt`` file (Detoxify's release files, e.g. ``toxic_original-c1212f89.ckpt``); if a folder
  with the same stem sits next to it, it is used as the Hugging Face config/tokenizer folder; or
* a folder holding one ``.ckpt`` file plus the Hugging Face ``config.json`` and tokenizer files
  of the checkpoint's architecture (e.g. bert-base-uncased), for fully offline loading.

Without a checkpoint, or without the package, loading raises
:class:`~moderation.base.BackendUnavailable` with a message saying what to do, and the moderator
fails closed. Scores map onto voicebot categories: toxicity/severe_toxicity -> ``toxicity``,
obscene -> ``profanity``, insult -> ``insult``, threat -> ``threat``,
identity_attack -> ``hate``, sexual_explicit -> ``sexual``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from moderation.base import Backend, BackendUnavailable, Scores

__all__ = ["DetoxifyBackend", "DETOXIFY_CATEGORIES"]

DETOXIFY_CATEGORIES = {
    "toxicity": "toxicity",
    "severe_toxicity": "toxicity",
    "obscene": "profanity",
    "insult": "insult",
    "threat": "threat",
    "identity_attack": "hate",
    "identity_hate": "hate",
    "sexual_explicit": "sexual",
}


def resolve_checkpoint(path: str) -> tuple[Path, Path | None]:
    """``(ckpt_file, hf_config_dir or None)`` for the configured path; raises BackendUnavailable."""
    if not path:
        raise BackendUnavailable(
            "detoxify needs a local checkpoint: set moderation.detoxify_checkpoint to a Detoxify "
            ".ckpt file or folder (voicebot never downloads models at run time)")
    p = Path(path).expanduser()
    if p.is_dir():
        ckpts = sorted(p.glob("*.ckpt"))
        if len(ckpts) != 1:
            raise BackendUnavailable(
                f"detoxify checkpoint folder {p} must hold exactly one .ckpt file (found {len(ckpts)})")
        return ckpts[0], p
    if not p.is_file():
        raise BackendUnavailable(
            f"detoxify checkpoint {p} not found: set moderation.detoxify_checkpoint to an existing "
            ".ckpt file or folder")
    sibling = p.with_suffix("")
    return p, (sibling if sibling.is_dir() else None)


class DetoxifyBackend(Backend):
    """Detoxify on CPU, loaded from ``moderation.detoxify_checkpoint``."""

    name = "detoxify"

    def __init__(self, checkpoint: str = "") -> None:
        super().__init__()
        self.checkpoint = checkpoint
        self._model: Any = None

    def _load(self) -> None:
        ckpt, config_dir = resolve_checkpoint(self.checkpoint)
        try:
            from detoxify import Detoxify  # lazy: optional extra, pulls in torch
        except ImportError as exc:
            raise BackendUnavailable(
                f"detoxify is not installed ({exc}): pip install 'voicebot[detoxify]'") from None
        kwargs: dict[str, Any] = {"checkpoint": str(ckpt), "device": "cpu"}
        if config_dir is not None:
            kwargs["huggingface_config_path"] = str(config_dir)
        try:
            self._model = Detoxify(**kwargs)
        except Exception as exc:  # noqa: BLE001 - turned into a clear, actionable message
            raise BackendUnavailable(
                f"detoxify could not load {ckpt} offline ({type(exc).__name__}: {exc}); put the "
                "Hugging Face config and tokenizer files for its architecture in a folder with the "
                ".ckpt and point moderation.detoxify_checkpoint at that folder") from None

    async def score(self, text: str, role: str, persona: Any) -> Scores:
        raw = await asyncio.to_thread(self._model.predict, text)
        scores: dict[str, float] = {}
        labels: dict[str, float] = {}
        for label, value in raw.items():
            value = float(value)
            labels[label] = value
            cat = DETOXIFY_CATEGORIES.get(label)
            if cat is not None:
                scores[cat] = max(value, scores.get(cat, 0.0))
        return Scores(scores, {"labels": labels})
