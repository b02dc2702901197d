"""What ``voicebot compare`` and ``voicebot eval`` run side by side: named configuration variants.

A variant is the shared configuration (``--config``, ``--set``) plus its own overrides: a mode
(``--mode realtime``), a TOML file (``--variant fast=fast.toml``) or key=value pairs
(``--variant "big llm:llm.provider=openai;llm.model=gpt-4.1-mini"``). Each variant gets its own audit
directory under the comparison's output folder, so every answer it gives is a verified audit session.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from bot.config import parse_overrides
from bot.errors import VoicebotError

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._+-]{0,47}$")


class Variant(BaseModel):
    """One configuration to run: ``name`` labels it in every table and names its folder."""

    model_config = ConfigDict(frozen=True)

    name: str
    config: Path | None = None
    """A TOML file for this variant alone (replaces the shared ``--config``)."""
    overrides: dict[str, Any] = Field(default_factory=dict)
    """Dotted keys, applied over the shared ``--set`` values."""

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "-", self.name).strip("-") or "variant"


def parse_pairs(text: str, *, what: str) -> dict[str, Any]:
    """``"a.b=1;c=x"`` -> ``{"a.b": 1, "c": "x"}`` (values parsed as JSON when they can be)."""
    pairs = [p.strip() for p in text.split(";") if p.strip()]
    bad = [p for p in pairs if "=" not in p]
    if bad:
        raise VoicebotError(f"{what}: {bad[0]!r} must look like key=value (pairs separated by ';')")
    return parse_overrides(pairs)


def parse_variant(spec: str) -> Variant:
    """``NAME=FILE.toml`` or ``NAME:key=value;key=value``."""
    if ":" in spec and ("=" not in spec.split(":", 1)[0]):
        name, rest = spec.split(":", 1)
        variant = Variant(name=name.strip(), overrides=parse_pairs(rest, what=f"--variant {spec!r}"))
    elif "=" in spec:
        name, path = spec.split("=", 1)
        file = Path(path.strip()).expanduser()
        if file.suffix != ".toml":
            raise VoicebotError(f"--variant {spec!r}: use NAME=FILE.toml or NAME:key=value;key=value")
        if not file.is_file():
            raise VoicebotError(f"--variant {spec!r}: config file {file} not found")
        variant = Variant(name=name.strip(), config=file)
    else:
        raise VoicebotError(f"--variant {spec!r}: use NAME=FILE.toml or NAME:key=value;key=value")
    if not NAME_RE.match(variant.name):
        raise VoicebotError(f"--variant {spec!r}: the name must be 1-48 letters, digits, spaces or ._+-")
    return variant


def build_variants(modes: list[str] | None, specs: list[str] | None) -> list[Variant]:
    """Every ``--mode`` is a variant named after the mode; every ``--variant`` is one more."""
    variants = [Variant(name=m, overrides={"mode": m}) for m in modes or []]
    variants += [parse_variant(s) for s in specs or []]
    if not variants:
        raise VoicebotError("nothing to compare: give at least one --mode MODE or --variant NAME:key=value")
    seen: set[str] = set()
    for v in variants:
        if v.slug in seen:
            raise VoicebotError(f"two variants are named {v.name!r}: give each --variant its own name")
        seen.add(v.slug)
    return variants
