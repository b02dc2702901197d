"""The comparison's three outputs: a terminal table, ``comparison.json`` and one self-contained HTML page.

The page follows ``voicebot audit report``: no external resources, a Content-Security-Policy that allows
no script at all, every audio clip embedded as a ``data:`` URI, and every piece of log text escaped (a
Jinja2 template with autoescape: transcripts and replies are user and model text). Its one script is the
audit report's (allowed by its hash in the CSP): it marks each clip as decoded, or says the browser
cannot play it.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import TYPE_CHECKING

from jinja2 import Environment, select_autoescape

from bot.audit.report import CSP, MIME, SCRIPT
from bot.compare.results import Comparison, TurnOutcome

if TYPE_CHECKING:
    from bot.evals.runner import Evaluation

MAX_EMBED_BYTES = 16 * 1024 * 1024
"""Clips larger than this are named, not embedded (the page must open)."""


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _cut(text: str | None, n: int) -> str:
    text = (text or "").replace("\n", " ").strip()
    return text if len(text) <= n else text[: n - 1] + "…"


def summary_table(comparison: Comparison) -> str:
    """One line per variant: what it did and how fast."""
    head = ("variant", "mode", "status", "turns", "answered", "refused", "blocked", "held back", "leaked ms",
            "v2v p50", "v2v p95", "WER")
    rows = []
    for r in comparison.variants:
        a = r.aggregates
        rows.append((r.variant.name, r.mode or "-", r.status, str(a.turns), str(a.answered), str(a.refused),
                     str(a.blocked), str(a.held_back), f"{a.leaked_ms:g}", _ms(a.v2v_p50_ms), _ms(a.v2v_p95_ms),
                     "-" if a.wer is None else f"{a.wer:.2f}"))
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(head)]
    line = "  ".join(h.ljust(w) for h, w in zip(head, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    for r in comparison.variants:
        if r.reason:
            out.append(f"{r.variant.name}: {r.status if r.status != 'ok' else 'note'}: {r.reason}")
    for ag in comparison.agreement:
        same = "-" if ag.same_outcome is None else f"{ag.same_outcome:.0%}"
        sim = "-" if ag.reply_similarity is None else f"{ag.reply_similarity:.2f}"
        out.append(f"agreement {ag.a} vs {ag.b}: {ag.turns} turns, same outcome {same}, reply word overlap {sim}")
    return "\n".join(out) + "\n"


def turns_table(comparison: Comparison, width: int = 48) -> str:
    """Per aligned turn and variant: heard -> played, outcome, voice-to-voice."""
    out = []
    for key in comparison.keys():
        out.append(f"[{key[0]} #{key[1]}]")
        for r in comparison.variants:
            t = r.turn(*key)
            if t is None:
                continue
            out.append(f"  {r.variant.name:<14} {t.outcome:<8} v2v {_ms(t.v2v_ms):>5} ms | heard: "
                       f"{_cut(t.heard, width)!r} -> said: {_cut(t.played, width)!r}")
    return "\n".join(out) + ("\n" if out else "")


def _data_uri(path: Path | None) -> str | None:
    if path is None or not path.is_file() or path.stat().st_size > MAX_EMBED_BYTES:
        return None
    mime = MIME.get(path.suffix.lower(), "application/octet-stream")
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{{ csp }}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>voicebot comparison · {{ c.created }}</title>
<style>
body { margin:0; font:14px/1.45 system-ui,sans-serif; color:#1d2330; background:#f6f7f9; }
main { max-width:1400px; margin:0 auto; padding:20px 24px 60px; }
h1 { font-size:20px; } h2 { font-size:16px; margin-top:28px; }
table { border-collapse:collapse; background:#fff; border:1px solid #d9dee5; }
th, td { padding:5px 10px; border-bottom:1px solid #d9dee5; text-align:left; vertical-align:top; }
td.n { text-align:right; font-variant-numeric:tabular-nums; }
.grid { display:grid; gap:10px; }
.cell { background:#fff; border:1px solid #d9dee5; border-radius:8px; padding:8px 10px; }
.cell h4 { margin:0 0 4px; font-size:13px; }
.k { color:#5f6b7a; font-size:12px; }
.badge { display:inline-block; font-size:11px; font-weight:700; padding:1px 7px; border-radius:9px; text-transform:uppercase; background:#e3e8ef; }
.badge.refused, .badge.blocked, .badge.error, .badge.skipped, .badge.failed { background:#c62828; color:#fff; }
.badge.silent { background:#b26a00; color:#fff; }
.badge.answered, .badge.ok { background:#1f9d63; color:#fff; }
li.blocked { background:#fdecec; border-left:4px solid #c62828; padding:1px 5px; }
audio { width:100%; height:32px; }
.muted { color:#5f6b7a; }
</style>
</head>
<body><main>
<h1>voicebot comparison</h1>
<p class="muted">{{ c.created }} · persona {{ c.persona }} · {{ c.inputs|length }} input(s) · {{ c.variants|length }} variant(s)</p>
<h2>Variants</h2>
<table id="variants">
<tr><th>variant</th><th>mode</th><th>status</th><th>turns</th><th>answered</th><th>refused</th><th>blocked</th><th>held back</th><th>leaked audio ms</th><th>v2v p50 ms</th><th>v2v p95 ms</th><th>WER</th><th>audit sessions</th></tr>
{% for r in c.variants %}
<tr data-variant="{{ r.variant.name }}"><td>{{ r.variant.name }}</td><td>{{ r.mode or "-" }}</td>
<td><span class="badge {{ r.status }}">{{ r.status }}</span>{% if r.reason %}<div class="k">{{ r.reason }}</div>{% endif %}</td>
<td class="n">{{ r.aggregates.turns }}</td><td class="n">{{ r.aggregates.answered }}</td><td class="n">{{ r.aggregates.refused }}</td>
<td class="n">{{ r.aggregates.blocked }}</td><td class="n">{{ r.aggregates.held_back }}</td><td class="n">{{ r.aggregates.leaked_ms }}</td>
<td class="n">{{ ms(r.aggregates.v2v_p50_ms) }}</td><td class="n">{{ ms(r.aggregates.v2v_p95_ms) }}</td>
<td class="n">{{ "-" if r.aggregates.wer is none else "%.2f"|format(r.aggregates.wer) }}</td>
<td>{% for s in r.sessions %}<div class="k">{{ s.input }}: {{ s.audit_dir.name }} — {{ "verified" if s.verified else "FAILS verification" }}</div>{% endfor %}</td></tr>
{% endfor %}
</table>
{% if c.agreement %}
<h2>Agreement</h2>
<table id="agreement"><tr><th>variants</th><th>aligned turns</th><th>same outcome</th><th>reply word overlap</th></tr>
{% for a in c.agreement %}<tr><td>{{ a.a }} vs {{ a.b }}</td><td class="n">{{ a.turns }}</td>
<td class="n">{{ "-" if a.same_outcome is none else "%.0f%%"|format(a.same_outcome * 100) }}</td>
<td class="n">{{ "-" if a.reply_similarity is none else "%.2f"|format(a.reply_similarity) }}</td></tr>{% endfor %}
</table>
{% endif %}
{% if ev %}
<h2>Checks · suite {{ ev.suite }}</h2>
{% if ev.about %}<p class="muted">{{ ev.about }}</p>{% endif %}
<table id="passrates"><tr><th>variant</th><th>mode</th><th>passed</th><th>failed</th><th>expected failures</th><th>skipped</th><th>pass rate</th></tr>
{% for r in ev.pass_rates %}<tr data-variant="{{ r.variant }}"><td>{{ r.variant }}</td><td>{{ r.mode or "-" }}</td><td class="n">{{ r.passed }}</td><td class="n">{{ r.failed }}</td><td class="n">{{ r.expected_failures }}</td><td class="n">{{ r.skipped }}</td><td class="n">{{ "-" if r.rate is none else "%.0f%%"|format(r.rate * 100) }}</td></tr>{% endfor %}
</table>
<table id="checks" style="margin-top:10px"><tr><th>scenario</th>{% for r in ev.pass_rates %}<th>{{ r.variant }}</th>{% endfor %}</tr>
{% for sid in scenario_ids %}<tr data-scenario="{{ sid }}"><td>{{ sid }}</td>
{% for rate in ev.pass_rates %}{% set res = ev.result(sid, rate.variant) %}<td>{% if res %}<span class="badge {{ 'answered' if res.status == 'pass' else 'error' if res.status == 'fail' else 'silent' }}">{{ res.status }}</span>
{% if res.expected_failure %}<div class="k">expected to fail: {{ res.expected_failure }}</div>{% endif %}
<ul class="k">{% for ch in res.checks %}<li>{{ "✔" if ch.passed else "✘" if ch.passed is false else "–" }} {{ ch.check }}{% if ch.detail %} — {{ ch.detail }}{% endif %}</li>{% endfor %}</ul>{% endif %}</td>{% endfor %}</tr>{% endfor %}
</table>
{% endif %}
<h2>Turns</h2>
{% for key in c.keys() %}
{% set item = inputs[key[0]] %}
<section class="turn" data-input="{{ key[0] }}" data-index="{{ key[1] }}">
<h3>{{ key[0] }} · turn {{ key[1] }}{% if item and item.reference %} <span class="k">reference: {{ item.reference }}</span>{% endif %}</h3>
{% if key[1] == 1 and input_audio.get(key[0]) %}<div class="player"><span class="k">input</span> <span class="clip-state"></span><audio data-clip controls preload="metadata" src="{{ input_audio[key[0]] }}"></audio></div>{% endif %}
<div class="grid" style="grid-template-columns: repeat({{ c.variants|length }}, minmax(220px, 1fr));">
{% for r in c.variants %}{% set t = r.turn(key[0], key[1]) %}
<div class="cell" data-variant="{{ r.variant.name }}">
<h4>{{ r.variant.name }}{% if t %} <span class="badge {{ t.outcome }}">{{ t.outcome }}</span>{% endif %}</h4>
{% if t %}
<div><span class="k">heard</span> {{ t.heard or "(nothing recognised)" }}</div>
<div><span class="k">played</span> <span class="played">{{ t.played or "(nothing)" }}</span></div>
{% if t.generated %}<div class="k">generated</div><ol class="gen">{% for g in t.generated %}<li class="{{ 'blocked' if g in blocked_texts(t) else '' }}">{{ g }}</li>{% endfor %}</ol>{% endif %}
{% if t.input_verdict %}<div><span class="k">input</span> {{ verdict(t.input_verdict) }}</div>{% endif %}
{% for v in t.output_verdicts %}{% if v.allowed is false %}<div><span class="k">output</span> {{ verdict(v) }}</div>{% endif %}{% endfor %}
{% if t.held_back %}<div class="k">audio held back (never played){% if t.leaked_ms is not none %}; leaked before the block: {{ t.leaked_ms }} ms{% endif %}</div>{% endif %}
<div class="k">{% for k, v in t.timings.items() %}{{ k }} {{ ms(v) }}{% if not loop.last %} · {% endif %}{% endfor %}</div>
{% if t.errors %}<div class="k" style="color:#c62828">{{ t.errors|join("; ") }}</div>{% endif %}
{% set clip = audio(t) %}{% if clip %}<div class="player"><span class="k">reply</span> <span class="clip-state"></span><audio data-clip controls preload="metadata" src="{{ clip }}"></audio></div>{% endif %}
{% else %}<div class="muted">no such turn</div>{% endif %}
</div>
{% endfor %}
</div>
</section>
{% endfor %}
<footer class="muted">Generated by voicebot compare. Transcripts and audio here are personal data: share the page like the audit logs.</footer>
</main>
<script>{{ script|safe }}</script>
</body></html>
"""


def _verdict_text(v) -> str:
    head = "allowed" if v.allowed else "BLOCKED" if v.allowed is False else "unknown"
    parts = [head]
    if v.categories:
        parts.append(",".join(v.categories))
    if v.backend:
        parts.append(f"by {v.backend}")
    return " ".join(parts)


def _blocked_texts(t: TurnOutcome) -> set[str]:
    return {v.text for v in t.output_verdicts if v.allowed is False and v.text}


def report_html(comparison: Comparison, *, audio: bool = True, evaluation: Evaluation | None = None) -> str:
    env = Environment(autoescape=select_autoescape(default=True, default_for_string=True))
    template = env.from_string(TEMPLATE)
    input_audio = {i.name: _data_uri(i.path) for i in comparison.inputs if audio and i.kind == "audio"}
    return template.render(
        c=comparison, ev=evaluation, csp=CSP, script=SCRIPT, ms=_ms,
        scenario_ids=list(dict.fromkeys(r.scenario for r in evaluation.results)) if evaluation else [], verdict=_verdict_text, blocked_texts=_blocked_texts,
        inputs={i.name: i for i in comparison.inputs}, input_audio={k: v for k, v in input_audio.items() if v},
        audio=(lambda t: _data_uri(t.bot_audio)) if audio else (lambda t: None))


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)


def write_outputs(comparison: Comparison, out_dir: Path, *, audio: bool = True,
                  evaluation: Evaluation | None = None) -> tuple[Path, Path]:
    """Write ``report.html`` and ``comparison.json`` (or ``evaluation.json``, which holds the comparison too);
    mode 0600: they hold transcripts and audio."""
    html_path = out_dir / "report.html"
    json_path = out_dir / ("evaluation.json" if evaluation else "comparison.json")
    _write_private(html_path, report_html(comparison, audio=audio, evaluation=evaluation))
    _write_private(json_path, (evaluation or comparison).model_dump_json(indent=2))
    return html_path, json_path

