"""Slash commands: ``/join``, ``/leave``, ``/mode``, ``/persona``, ``/forget``.

:class:`CommandHandlers` holds the logic and only uses the few things of py-cord's ``ApplicationContext``
that it needs (``guild_id``, ``author``, ``defer``, ``respond``), so tests drive it with stand-ins for the
network calls. :func:`register` binds the handlers to a py-cord ``Bot``. Every reply is ephemeral (only the
caller sees it); the join notice is the one public message.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from bot.errors import VoicebotError

if TYPE_CHECKING:
    from bot.discord.app import DiscordApp

log = logging.getLogger(__name__)

DESCRIPTIONS = {
    "join": "Join your voice channel: transcribe, audit and answer what is said there.",
    "leave": "Leave the voice channel and close this session's audit log.",
    "mode": "Switch how the bot hears and speaks (starts a new session).",
    "persona": "Switch the bot's persona (starts a new session).",
    "forget": "Delete your audio from this session's audit log.",
}


def _voice_channel(member: Any) -> Any:
    voice = getattr(member, "voice", None)
    return getattr(voice, "channel", None)


class CommandHandlers:
    def __init__(self, app: DiscordApp) -> None:
        self.app = app

    async def _say(self, ctx: Any, text: str) -> None:
        await ctx.respond(text, ephemeral=True)

    async def _allowed(self, ctx: Any) -> bool:
        """Guild and user allow-lists. Refuses (and says so) when the caller may not use the bot here."""
        access = self.app.access
        if not access.guild_ok(ctx.guild_id):
            await self._say(ctx, "This bot is not enabled on this server.")
            return False
        if not access.user_ok(getattr(ctx.author, "id", None)):
            await self._say(ctx, "You are not on this bot's list of allowed users.")
            return False
        return True

    async def join(self, ctx: Any) -> None:
        if not await self._allowed(ctx):
            return
        channel = _voice_channel(ctx.author)
        if channel is None:
            await self._say(ctx, "Join a voice channel first, then run /join.")
            return
        if not self.app.access.channel_ok(channel.id):
            await self._say(ctx, f"I am not allowed to join {channel.name}.")
            return
        current = self.app.sessions.get(ctx.guild_id)
        if current is not None:
            await self._say(ctx, f"I am already in {current.channel.name}: /leave first.")
            return
        await ctx.defer(ephemeral=True)  # connecting and loading the models takes longer than 3 s
        try:
            session = await self.app.join(channel, requested_by=getattr(ctx.author, "id", None))
        except VoicebotError as exc:
            await self._say(ctx, f"Could not join {channel.name}: {exc}")
            return
        await self._say(ctx, f"Joined {channel.name} as {session.persona.name} ({session.describe()}).")

    async def leave(self, ctx: Any) -> None:
        if not await self._allowed(ctx):
            return
        if not await self.app.leave(ctx.guild_id, reason="/leave"):
            await self._say(ctx, "I am not in a voice channel here.")
            return
        await self._say(ctx, "Left the voice channel; the session's audit log is closed.")

    async def mode(self, ctx: Any, name: str) -> None:
        await self._restart(ctx, mode=name)

    async def persona(self, ctx: Any, name: str) -> None:
        await self._restart(ctx, persona=name)

    async def _restart(self, ctx: Any, **change: str) -> None:
        if not await self._allowed(ctx):
            return
        if ctx.guild_id not in self.app.sessions:
            await self._say(ctx, "I am not in a voice channel here: /join first.")
            return
        await ctx.defer(ephemeral=True)
        try:
            session = await self.app.restart(ctx.guild_id, **change)
        except VoicebotError as exc:
            await self._say(ctx, str(exc))
            return
        await self._say(ctx, f"Now {session.persona.name} ({session.describe()}); a new audit session started.")

    async def forget(self, ctx: Any) -> None:
        if not await self._allowed(ctx):
            return
        session = self.app.sessions.get(ctx.guild_id)
        if session is None:
            await self._say(ctx, "No session is running here, so nothing of yours is being recorded.")
            return
        await ctx.defer(ephemeral=True)
        result = await session.forget(ctx.author)
        await self._say(ctx, result.message())


def register(bot: Any, handlers: CommandHandlers, *, guild_ids: list[int] | None = None,
             personas: list[str] | None = None, modes: list[str] | None = None) -> None:
    """Add the slash commands to a py-cord ``Bot`` (guild-scoped when ``guild_ids`` is given: they show up at
    once; global commands can take up to an hour to appear)."""
    import discord

    scope = {"guild_ids": list(guild_ids)} if guild_ids else {}

    @bot.slash_command(name="join", description=DESCRIPTIONS["join"], **scope)
    async def join(ctx):
        await handlers.join(ctx)

    @bot.slash_command(name="leave", description=DESCRIPTIONS["leave"], **scope)
    async def leave(ctx):
        await handlers.leave(ctx)

    @bot.slash_command(name="mode", description=DESCRIPTIONS["mode"], **scope)
    @discord.option("name", str, description="pipeline mode", choices=modes or None)
    async def mode(ctx, name):
        await handlers.mode(ctx, name)

    @bot.slash_command(name="persona", description=DESCRIPTIONS["persona"], **scope)
    @discord.option("name", str, description="persona", choices=personas or None)
    async def persona(ctx, name):
        await handlers.persona(ctx, name)

    @bot.slash_command(name="forget", description=DESCRIPTIONS["forget"], **scope)
    async def forget(ctx):
        await handlers.forget(ctx)
