"""Tests of the moderation layer (``moderation/``).

CONTENT WARNING: moderation tests necessarily contain abusive text.

Async code is driven with ``asyncio.run`` (pytest-asyncio is not used).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import socket
import statistics
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import typer
from pydantic import ValidationError
from typer.testing import CliRunner

from bot.errors import VoicebotError
from bot.persona import Persona, load_persona
from moderation import Backend, ModerationConfig, Moderator, Scores, StageConfig, Verdict, build_moderator
from moderation.backends.keywords import KeywordsBackend
from moderation.backends.profanity import ProfanityBackend, load_scorer
from moderation.cases import load_redteam as cases_of_redteam
from moderation.cli import moderate
from moderation.combined import DisabledModerator, StageModerator
from moderation.lexicon import default_lexicon
from moderation.textnorm import fold

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"


# ---- helpers ---------------------------------------------------------------------------------

def check(moderator: Moderator, text: str, role: str = "user", persona: Any = None) -> Verdict:
    return asyncio.run(moderator.check(text, role, persona))


def default_moderator(**stage_overrides: Any) -> Moderator:
    config = ModerationConfig()
    stage = StageConfig(**{**config.output.model_dump(), **stage_overrides})
    return build_moderator(stage, config)


def keywords_blocks(text: str, persona: Any = None) -> bool:
    scores = KeywordsBackend().score_sync(text, persona).scores
    stage = StageConfig(thresholds={"profanity": 0.6})  # the lexicon's own calibration (mild = 0.4)
    return any(v >= stage.threshold(k) for k, v in scores.items())


class FakeBackend(Backend):
    """A backend returning fixed scores, optionally after a delay or by raising."""

    def __init__(self, name: str, scores: dict[str, float] | None = None, delay: float = 0.0,
                 error: Exception | None = None) -> None:
        super().__init__()
        self.name = name  # type: ignore[misc]
        self.scores = scores or {}
        self.delay = delay
        self.error = error

    async def score(self, text: str, role: str, persona: Any) -> Scores:
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        return Scores(dict(self.scores))


def stage_moderator(*backends: Backend, timeout_ms: float = 500, **stage: Any) -> StageModerator:
    return StageModerator(list(backends), StageConfig(**stage), timeout_ms)


def load_redteam(name: str) -> list[tuple[str, str]]:
    """``(label, text)`` of a red-team file (its own labels, e.g. ``insult``, ``hard``)."""
    return [(c.functionality, c.text) for c in cases_of_redteam(DATA / name)]


PIRATE = Persona(name="Captain Reed", system_prompt="You are a pirate.", blocklist=["treasure map"],
                 blocklist_regex=[r"\bdoubloons?\b", r"(?-i:SECRET)"])


# ---- config ----------------------------------------------------------------------------------

def test_config_defaults_and_validation() -> None:
    cfg = ModerationConfig()
    assert cfg.output.backends == ["classifier", "blocklist"] == cfg.input.backends
    assert cfg.input.combine == "any" and cfg.input.action == "refuse"
    assert cfg.timeout_ms == 500 and cfg.openai_model == "omni-moderation-latest"
    assert cfg.output.thresholds["default"] == 0.5 and cfg.output.threshold("toxicity") == 0.5
    partial = StageConfig(thresholds={"insult": 0.9})
    assert partial.threshold("insult") == 0.9
    assert partial.threshold("threat") == 0.5  # falls back to default
    assert "profanity" in partial.thresholds  # defaults kept for keys not given
    with pytest.raises(ValidationError):
        StageConfig(thresholds={"insult": 1.5})
    with pytest.raises(ValidationError):
        ModerationConfig(bogus=1)
    with pytest.raises(ValidationError):
        StageConfig(backends=["nonsense"])


def test_settings_include_moderation() -> None:
    from bot.config import load_settings

    settings = load_settings(overrides={"moderation.output.combine": "all"})
    assert isinstance(settings.moderation, ModerationConfig)
    assert settings.moderation.output.combine == "all"


# ---- text folding -----------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("F u c k you!!", "fuck you"),
    ("k.i.l.l them", "kill them"),
    ("f-u-c-k", "fuck"),
    ("sh1t", "shit"),
    ("b!tch!", "bitch"),
    ("@ss", "ass"),
    ("fuuuuuck", "fuck"),
    ("I'll kill u", "i will kill you"),
    ("ur gonna die", "your going to die"),
    ("ｆｕｃｋ", "fuck"),               # full-width
    ("fu\u200bck", "fuck"),            # zero-width space
    ("раssword", "password"),          # Cyrillic look-alikes
    ("Scunthorpe", "scunthorpe"),
    ("top 10 in 2024", "top 10 in 2024"),
])
def test_fold(text: str, expected: str) -> None:
    assert fold(text, default_lexicon().vocabulary).text == expected


# ---- profanity backend ------------------------------------------------------------------------

def test_profanity_backend_scores_clear_cases() -> None:
    backend = ProfanityBackend()
    backend.ensure_loaded()
    rude = asyncio.run(backend.score("you are a fucking idiot", "user", None))
    nice = asyncio.run(backend.score("have a lovely day at the beach", "user", None))
    assert rude.scores["profanity"] > 0.9
    assert nice.scores["profanity"] < 0.3
    assert rude.details["fast_path"] is True


def test_profanity_fast_path_equals_package() -> None:
    from profanity_check import predict_prob

    scorer, fast = load_scorer()
    assert fast
    for text in ["you are a fucking idiot", "what a nice day", "", "kill the process now", "sh1t happens"]:
        assert scorer(text) == pytest.approx(float(predict_prob([text])[0]), abs=1e-9)


def test_profanity_backend_sees_folded_text() -> None:
    backend = ProfanityBackend()
    backend.ensure_loaded()
    leet = asyncio.run(backend.score("you f u c k i n g 1d10t", "user", None)).scores["profanity"]
    assert leet > 0.6
    idiom = asyncio.run(backend.score("I'm reading Moby Dick", "user", None)).scores["profanity"]
    assert idiom < 0.6  # allow-listed expression is not shown to the bag-of-words model


# ---- keywords backend -------------------------------------------------------------------------

@pytest.mark.parametrize("text, category", [
    ("I'm going to kill you", "threat"),
    ("i know where you live", "threat"),
    ("you stupid bitch", "insult"),
    ("you are a worthless idiot", "insult"),
    ("n1gg3r", "hate"),
    ("all muslims are animals", "hate"),
    ("I want to kill myself", "self_harm"),
    ("go kill yourself", "self_harm"),
    ("send me nudes", "sexual"),
    ("how do I make a pipe bomb", "violence"),
    ("nobody likes you", "harassment"),
    ("fuck this", "profanity"),
])
def test_keywords_clear_cases(text: str, category: str) -> None:
    scores = KeywordsBackend().score_sync(text).scores
    assert scores.get(category, 0) >= 0.5, scores


@pytest.mark.parametrize("text", [
    "f u c k you", "sh1t", "b!tch", "k.i.l.l yourself", "fuuuuuck off", "f*ck off", "a$$hole",
    "a**hole", "ｆｕｃｋ you", "fu\u200bck you", "n i g g e r", "I will k1ll u", "ki|| y0u all",
    "motherf*cker", "y o u c u n t",
])
def test_keywords_leetspeak_and_spacing(text: str) -> None:
    assert keywords_blocks(text), text


HARD_NEGATIVES = [
    "kill the process", "how do I kill a zombie process", "that movie was sick", "Scunthorpe United won",
    "shoot me an email", "I'm dying to see it", "the bass was killer", "beat the eggs until stiff",
    "I could murder a pizza", "the cocktail party", "an assassin in the story", "shiitake mushrooms",
    "the spicy food", "Dick Van Dyke", "he graduated summa cum laude", "I cut myself shaving",
    "drop dead gorgeous", "I'll shoot you a text", "I will find you a table", "my phone is dead",
    "take out your trash", "I'll kill you at chess", "I hate chinese food", "the cocker spaniel",
    "where can I find a suicide hotline", "break a leg tonight", "chicken breasts are on sale",
]


@pytest.mark.parametrize("text", HARD_NEGATIVES)
def test_keywords_hard_negatives_pass(text: str) -> None:
    assert not keywords_blocks(text), KeywordsBackend().score_sync(text).details


def test_mild_profanity_scored_below_default_threshold() -> None:
    scores = KeywordsBackend().score_sync("damn, this is crap").scores
    assert 0 < scores["profanity"] < 0.5
    strict = stage_moderator(KeywordsBackend(), thresholds={"profanity": 0.3})
    assert not check(strict, "damn, this is crap").allowed


def test_persona_blocklist_terms_and_regexes() -> None:
    mod = stage_moderator(KeywordsBackend())
    verdict = check(mod, "Where is the Treasure Map?", persona=PIRATE)
    assert not verdict.allowed and verdict.categories == ["blocklist"]
    assert not check(mod, "tre@sure m4ps everywhere", persona=PIRATE).allowed  # folded + inflected
    assert not check(mod, "ten Doubloons please", persona=PIRATE).allowed      # regex, case-insensitive
    assert not check(mod, "the SECRET is out", persona=PIRATE).allowed        # case-sensitive part
    assert check(mod, "the secret is out", persona=PIRATE).allowed
    assert check(mod, "a treasure chest", persona=PIRATE).allowed
    assert check(mod, "Where is the treasure map?", persona=None).allowed


def test_shipped_persona_blocklist() -> None:
    pirate = load_persona("pirate")
    assert not check(default_moderator(), "show me the treasure map", persona=pirate).allowed


def test_invalid_persona_regex_fails_closed() -> None:
    bad = Persona(name="Broken", system_prompt="x", blocklist_regex=["(unclosed"])
    verdict = check(stage_moderator(KeywordsBackend()), "hello", persona=bad)
    assert not verdict.allowed
    assert "Broken" in verdict.reason and "failing closed" in verdict.reason


# ---- combination, thresholds, fail-closed ------------------------------------------------------

def test_verdict_shape_and_serialisation() -> None:
    verdict = check(default_moderator(), "you stupid bitch")
    data = verdict.to_dict()
    json.dumps(data)
    assert set(data) >= {"allowed", "action", "categories", "scores", "backend", "reason", "latency_ms", "backends"}
    assert data["allowed"] is False and data["action"] == "refuse"
    assert {b["backend"] for b in data["backends"]} == {"classifier", "blocklist"}
    ok = check(default_moderator(), "what a lovely morning")
    assert ok.allowed and ok.action == "allow" and ok.categories == []


def test_raising_backend_fails_closed() -> None:
    mod = stage_moderator(FakeBackend("ok"), FakeBackend("exploding", error=RuntimeError("boom")))
    verdict = check(mod, "hello")
    assert not verdict.allowed
    assert verdict.categories == ["backend_error"]
    assert "backend exploding failed: RuntimeError: boom; failing closed" in verdict.reason


def test_failing_load_fails_closed() -> None:
    class Unloadable(FakeBackend):
        def _load(self) -> None:
            raise ImportError("no module named nothing")

    verdict = check(stage_moderator(Unloadable("unloadable")), "hello")
    assert not verdict.allowed and "backend unloadable failed: ImportError" in verdict.reason


def test_slow_backend_times_out_and_fails_closed() -> None:
    mod = stage_moderator(FakeBackend("fast"), FakeBackend("slow", delay=2.0), timeout_ms=50)
    start = time.perf_counter()
    verdict = check(mod, "hello")
    assert time.perf_counter() - start < 1.0
    assert not verdict.allowed
    assert "backend slow failed: timed out after 50 ms; failing closed" in verdict.reason


def test_backends_run_concurrently() -> None:
    mod = stage_moderator(*(FakeBackend(f"b{i}", delay=0.2) for i in range(4)), timeout_ms=1000)
    start = time.perf_counter()
    assert check(mod, "hello").allowed
    assert time.perf_counter() - start < 0.6


def test_never_raises_on_bad_input() -> None:
    verdict = check(default_moderator(), 12345)  # type: ignore[arg-type]
    assert not verdict.allowed and "failing closed" in verdict.reason
    assert check(default_moderator(), "   ").allowed


def test_combine_any_and_all() -> None:
    flags = FakeBackend("flags", {"insult": 0.9})
    passes = FakeBackend("passes", {"insult": 0.1})
    assert not check(stage_moderator(flags, passes, combine="any"), "x").allowed
    verdict = check(stage_moderator(flags, passes, combine="all"), "x")
    assert verdict.allowed and "combine=all" in verdict.reason
    assert not check(stage_moderator(flags, FakeBackend("also", {"threat": 0.8}), combine="all"), "x").allowed
    # under "all" a failed backend counts as a blocking vote
    broken = FakeBackend("broken", error=ValueError("nope"))
    assert not check(stage_moderator(flags, broken, combine="all"), "x").allowed
    overruled = check(stage_moderator(passes, broken, combine="all"), "x")
    assert overruled.allowed and "backend broken failed" in overruled.reason


def test_per_category_thresholds() -> None:
    backend = FakeBackend("fake", {"insult": 0.7, "profanity": 0.65})
    assert check(stage_moderator(backend), "x").categories == ["insult", "profanity"]
    only_insult = check(stage_moderator(backend, thresholds={"profanity": 0.9}), "x")
    assert only_insult.categories == ["insult"]
    lenient = check(stage_moderator(backend, thresholds={"default": 0.8, "profanity": 0.8}), "x")
    assert lenient.allowed and lenient.scores == {"insult": 0.7, "profanity": 0.65}


def test_stage_action_and_disabled_stage() -> None:
    warn = check(stage_moderator(FakeBackend("f", {"insult": 1.0}), action="warn"), "x")
    assert not warn.allowed and warn.action == "warn"
    disabled = build_moderator(StageConfig(enabled=False), ModerationConfig())
    assert isinstance(disabled, DisabledModerator)
    verdict = check(disabled, "you stupid bitch")
    assert verdict.allowed and "disabled" in verdict.reason
    none = check(build_moderator(StageConfig(backends=[]), ModerationConfig()), "you stupid bitch")
    assert none.allowed and "no moderation backends" in none.reason


def test_warmup_loads_backends() -> None:
    mod = default_moderator()
    asyncio.run(mod.warmup())
    assert all(b.loaded for b in mod.backends)  # type: ignore[attr-defined]


# ---- detoxify ---------------------------------------------------------------------------------

def test_detoxify_without_checkpoint_fails_closed() -> None:
    verdict = check(default_moderator(backends=["profanity", "keywords", "detoxify"]), "hello there")
    assert not verdict.allowed
    assert "backend detoxify failed" in verdict.reason
    assert "moderation.detoxify_checkpoint" in verdict.reason and "failing closed" in verdict.reason


def test_detoxify_missing_checkpoint_file(tmp_path: Path) -> None:
    config = ModerationConfig(detoxify_checkpoint=str(tmp_path / "nope.ckpt"))
    verdict = check(build_moderator(StageConfig(backends=["detoxify"]), config), "hello")
    assert not verdict.allowed and "not found" in verdict.reason


def test_detoxify_package_missing(tmp_path: Path) -> None:
    if importlib.util.find_spec("detoxify") is not None:
        pytest.skip("detoxify is installed here")
    ckpt = tmp_path / "toxic.ckpt"
    ckpt.write_bytes(b"not really a checkpoint")
    config = ModerationConfig(detoxify_checkpoint=str(ckpt))
    verdict = check(build_moderator(StageConfig(backends=["detoxify"]), config), "hello")
    assert not verdict.allowed and "pip install 'voicebot[detoxify]'" in verdict.reason


# ---- openai (against a local fake of the moderation endpoint) ----------------------------------

_CATEGORIES = ["harassment", "harassment/threatening", "hate", "hate/threatening", "illicit",
               "illicit/violent", "self-harm", "self-harm/intent", "self-harm/instructions", "sexual",
               "sexual/minors", "violence", "violence/graphic"]


class FakeModerationServer:
    """Stands in for OpenAI's ``POST /v1/moderations`` on 127.0.0.1.

    Answers with the real response shape (id, model, results[0] with flagged, categories,
    category_scores, category_applied_input_types): texts containing "kill" are flagged as
    harassment/threatening and violence, anything else is clean. Records each request."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server API
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
                text = body["input"] if isinstance(body["input"], str) else body["input"][0]
                bad = "kill" in text.lower()
                scores = {c: 0.0001 for c in _CATEGORIES}
                if bad:
                    scores.update({"harassment": 0.62, "harassment/threatening": 0.91, "violence": 0.88})
                payload = {
                    "id": "modr-test",
                    "model": body.get("model", "omni-moderation-latest"),
                    "results": [{
                        "flagged": bad,
                        "categories": {c: scores[c] > 0.5 for c in _CATEGORIES},
                        "category_scores": scores,
                        "category_applied_input_types": {c: ["text"] for c in _CATEGORIES},
                    }],
                }
                data = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> FakeModerationServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


def openai_moderator(base_url: str, **extra: Any) -> Moderator:
    config = ModerationConfig(openai_base_url=base_url, openai_api_key_env="VB_TEST_MODERATION_KEY",
                              timeout_ms=2000, **extra)
    return build_moderator(StageConfig(backends=["openai"]), config)


def test_openai_backend_flagged_and_clean(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VB_TEST_MODERATION_KEY", "sk-test-not-a-real-key")
    with FakeModerationServer() as server:
        mod = openai_moderator(server.base_url)
        bad = check(mod, "I will kill you")
        good = check(mod, "what a nice day")
    assert not bad.allowed and set(bad.categories) == {"harassment", "threat", "violence"}
    assert bad.scores["threat"] == pytest.approx(0.91)
    assert good.allowed
    assert server.requests[0]["path"] == "/v1/moderations"
    assert server.requests[0]["auth"] == "Bearer sk-test-not-a-real-key"
    assert server.requests[0]["body"]["model"] == "omni-moderation-latest"
    assert "sk-test" not in json.dumps(bad.to_dict())


def test_openai_connection_refused_fails_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VB_TEST_MODERATION_KEY", "sk-test-not-a-real-key")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    verdict = check(openai_moderator(f"http://127.0.0.1:{port}/v1"), "what a nice day")
    assert not verdict.allowed
    assert "backend openai failed" in verdict.reason and "failing closed" in verdict.reason
    assert "sk-test" not in verdict.reason


def test_openai_without_key_fails_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VB_TEST_MODERATION_KEY", raising=False)
    verdict = check(openai_moderator("http://127.0.0.1:9/v1"), "hello")
    assert not verdict.allowed and "VB_TEST_MODERATION_KEY" in verdict.reason


# ---- red-team quality --------------------------------------------------------------------------

def test_redteam_files_are_big_enough() -> None:
    unsafe = load_redteam("redteam_unsafe.txt")
    clean = load_redteam("redteam_clean.txt")
    assert len(unsafe) >= 150 and len(clean) >= 150
    assert {label for label, _ in unsafe} >= {"insult", "hate", "threat", "sexual", "self_harm", "harassment"}
    assert sum(1 for label, _ in clean if label == "hard") >= 50


def test_legacy_stack_meets_targets_on_redteam_set() -> None:
    """Quality gate of the legacy lexicon stack (profanity+keywords) on the dev red-team set it was
    refined on: a regression guard for those backends, which stay available."""
    unsafe = [t for _, t in load_redteam("redteam_unsafe.txt")]
    clean = [t for _, t in load_redteam("redteam_clean.txt")]
    mod = default_moderator(backends=["profanity", "keywords"], thresholds={"profanity": 0.6})  # its own config

    async def run() -> tuple[list[Verdict], list[Verdict], list[float]]:
        await mod.warmup()
        latencies = []
        out_unsafe, out_clean = [], []
        for texts, out in ((unsafe, out_unsafe), (clean, out_clean)):
            for text in texts:
                start = time.perf_counter()
                out.append(await mod.check(text, "user", None))
                latencies.append((time.perf_counter() - start) * 1000)
        return out_unsafe, out_clean, latencies

    v_unsafe, v_clean, latencies = asyncio.run(run())
    blocked_unsafe = sum(not v.allowed for v in v_unsafe) / len(v_unsafe)
    blocked_clean = sum(not v.allowed for v in v_clean) / len(v_clean)
    assert blocked_unsafe >= 0.95, f"only {blocked_unsafe:.1%} of unsafe lines blocked"
    assert blocked_clean <= 0.05, f"{blocked_clean:.1%} of clean lines blocked"
    if sys.gettrace() is None and not sys.flags.dev_mode:  # tracers and asyncio debug slow it down
        assert statistics.median(latencies) <= 2.0, f"p50 latency {statistics.median(latencies):.2f} ms"


# ---- CLI -----------------------------------------------------------------------------------------

def cli_app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """Test app."""

    app.command("moderate")(moderate)
    return app


def test_cli_json_file(tmp_path: Path) -> None:
    lines = tmp_path / "lines.txt"
    lines.write_text("# a comment\nwhat a lovely morning\n\nyou stupid bitch\n", encoding="utf-8")
    result = CliRunner().invoke(cli_app(), ["moderate", "--file", str(lines), "--json"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.output.splitlines() if line.strip()]
    assert [r["text"] for r in records] == ["what a lovely morning", "you stupid bitch"]
    assert [r["allowed"] for r in records] == [True, False]
    for r in records:
        assert {"text", "allowed", "backends", "categories", "reason"} <= set(r)
        assert [b["backend"] for b in r["backends"]] == ["classifier", "blocklist"]


def test_cli_human_output_stage_and_persona() -> None:
    runner = CliRunner()
    result = runner.invoke(cli_app(), ["moderate", "--stage", "input", "--persona", "pirate",
                                       "where is the treasure map?"])
    assert result.exit_code == 0, result.output
    assert "BLOCKED (refuse)" in result.output and "blocklist" in result.output
    ok = runner.invoke(cli_app(), ["moderate", "hello there"])
    assert ok.exit_code == 0 and ok.output.startswith("ALLOWED")


def test_cli_config_file(tmp_path: Path) -> None:
    cfg = tmp_path / "voicebot.toml"
    cfg.write_text('[moderation.output]\nbackends = ["keywords"]\n', encoding="utf-8")
    result = CliRunner().invoke(cli_app(), ["moderate", "--config", str(cfg), "--json", "hi"])
    assert result.exit_code == 0, result.output
    assert [b["backend"] for b in json.loads(result.output)["backends"]] == ["keywords"]


def test_cli_errors_are_voicebot_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    nothing = runner.invoke(cli_app(), ["moderate"])
    assert isinstance(nothing.exception, VoicebotError)
    missing = runner.invoke(cli_app(), ["moderate", "--file", str(tmp_path / "nope.txt")])
    assert isinstance(missing.exception, VoicebotError) and "not found" in str(missing.exception)


def test_failed_load_is_not_retried_on_every_check() -> None:
    class CountingUnloadable(FakeBackend):
        attempts = 0

        def _load(self) -> None:
            CountingUnloadable.attempts += 1
            raise OSError("checkpoint unreadable")

    mod = stage_moderator(CountingUnloadable("flaky"))
    for _ in range(3):
        verdict = check(mod, "hello")
        assert not verdict.allowed and "OSError: checkpoint unreadable" in verdict.reason
    assert CountingUnloadable.attempts == 1
