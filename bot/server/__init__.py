"""``voicebot serve``: many concurrent voice sessions over WebSocket in one process (docs/server.md)."""

from bot.server.app import VoicebotServer

__all__ = ["VoicebotServer"]
