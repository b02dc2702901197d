"""The optional judge for open checks: any OpenAI-compatible chat model answers PASS or FAIL.

The judge sees the check's question, what the user said (the scenario's script, not a transcript) and what
the bot actually played. Its answer must start with PASS or FAIL; anything else (or an error) is "could
not decide", which leaves the check skipped rather than guessed.
"""

from __future__ import annotations

import openai

from bot.config import EvalConfig
from bot.errors import VoicebotError
from bot.evals.checks import Judge
from bot.services.keys import api_key_from_env

PROMPT = ("You grade a voice assistant's reply in an automated test. Answer with exactly one word, PASS or "
          "FAIL, then nothing else.\nQuestion: {question}\nWhat the user said: {said}\nWhat the assistant said "
          "aloud: {reply}")


def make_judge(cfg: EvalConfig) -> Judge | None:
    if not cfg.judge_model:
        return None
    key = api_key_from_env(cfg.judge_api_key_env, cfg.judge_base_url,
                           missing=f"the eval judge needs an API key in ${cfg.judge_api_key_env} (or set "
                                   "eval.judge_base_url to a local server)")
    client = openai.OpenAI(api_key=key, base_url=cfg.judge_base_url, timeout=cfg.judge_timeout_secs, max_retries=1)

    def judge(question: str, said: str, reply: str) -> bool | None:
        try:
            out = client.chat.completions.create(
                model=cfg.judge_model, temperature=0, max_tokens=4,
                messages=[{"role": "user", "content": PROMPT.format(question=question, said=said,
                                                                   reply=reply or "(nothing)")}])
        except openai.OpenAIError:
            return None
        text = (out.choices[0].message.content or "").strip().upper() if out.choices else ""
        return True if text.startswith("PASS") else False if text.startswith("FAIL") else None

    return judge


def check_judge(cfg: EvalConfig) -> None:
    """Fail fast when a judge is configured but unusable (bad key, server down)."""
    if not cfg.judge_model:
        return
    key = api_key_from_env(cfg.judge_api_key_env, cfg.judge_base_url,
                           missing=f"the eval judge needs an API key in ${cfg.judge_api_key_env}")
    client = openai.OpenAI(api_key=key, base_url=cfg.judge_base_url, timeout=5, max_retries=0)
    try:
        client.models.list()
    except openai.APIConnectionError:
        raise VoicebotError(f"eval judge server {client.base_url} is unreachable: start it or fix "
                            "eval.judge_base_url") from None
    except openai.AuthenticationError:
        raise VoicebotError(f"eval judge server rejected the key in ${cfg.judge_api_key_env}") from None
    except openai.APIStatusError:
        pass
    finally:
        client.close()
