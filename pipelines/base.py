"""What every pipeline builder receives and returns."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipecat.pipeline.pipeline import Pipeline
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.transports.base_transport import BaseTransport

from bot.config import Settings
from bot.persona import Persona


@dataclass
class BuildContext:
    settings: Settings
    persona: Persona
    transport: BaseTransport


@dataclass
class BuiltPipeline:
    pipeline: Pipeline
    context: LLMContext
    """The conversation as the LLM sees it: what the user said and what the bot actually said."""
    models: dict[str, str] = field(default_factory=dict)
    """Stage -> model description, for the console and the audit header."""
