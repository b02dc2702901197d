"""Labelled moderation cases: the hand-written sets in ``tests/data`` that train and measure the default.

Two file formats:

* ``moderation_{train,dev,holdout}.tsv``: ``suite<TAB>functionality<TAB>label<TAB>text``.
  ``suite`` is ``functional`` (HateCheck-style functionalities) or ``taxonomy`` (OpenAI moderation
  categories and safe look-alikes). ``label`` is the class: an undesired category (``hate``,
  ``threat``, ``harassment``, ``violence``, ``sexual``, ``sexual_minors``, ``self_harm``),
  ``profanity`` (swearing aimed at no one: the persona decides) or ``none``.
* the older red-team files ``redteam_*.txt``: ``label<TAB>text`` (labels mapped onto the classes
  above; ``clean``/``hard`` are ``none``).

Lines starting with ``#`` are comments.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = ["Case", "CLASSES", "UNDESIRED", "load_cases", "load_redteam"]

Label = Literal["none", "profanity", "hate", "threat", "harassment", "violence", "sexual", "sexual_minors",
                "self_harm"]
CLASSES: tuple[str, ...] = ("none", "profanity", "hate", "threat", "harassment", "violence", "sexual",
                            "sexual_minors", "self_harm")
UNDESIRED: frozenset[str] = frozenset(CLASSES) - {"none", "profanity"}

_REDTEAM_LABELS = {"insult": "harassment", "harassment": "harassment", "hate": "hate", "threat": "violence",
                   "violence": "violence", "sexual": "sexual", "sexual_minors": "sexual_minors",
                   "self_harm": "self_harm", "profanity": "profanity", "slur": "hate",
                   "clean": "none", "hard": "none"}


@dataclass(frozen=True)
class Case:
    """One labelled text."""

    suite: str
    functionality: str
    label: str
    text: str

    @property
    def undesired(self) -> bool:
        """Must be blocked whatever the persona (profanity aimed at no one is not)."""
        return self.label in UNDESIRED


def _lines(path: Path) -> list[str]:
    return [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip() and not ln.startswith("#")]


def load_cases(path: Path) -> list[Case]:
    """The cases of a ``moderation_*.tsv`` file; raises ValueError naming a malformed line."""
    cases = []
    for n, line in enumerate(_lines(path), 1):
        parts = line.split("\t")
        if len(parts) != 4 or parts[2] not in CLASSES:
            raise ValueError(f"{path.name}: case {n} is not suite<TAB>functionality<TAB>label<TAB>text: {line!r}")
        cases.append(Case(*(p.strip() for p in parts)))
    return cases


def load_redteam(path: Path) -> list[Case]:
    """A ``redteam_*.txt`` file as cases (suite ``redteam``, functionality = its own label)."""
    cases = []
    for line in _lines(path):
        label, _, text = line.partition("\t")
        label = label.strip()
        if label not in _REDTEAM_LABELS:
            raise ValueError(f"{path.name}: unknown red-team label {label!r}")
        cases.append(Case("redteam", label, _REDTEAM_LABELS[label], text.strip()))
    return cases
