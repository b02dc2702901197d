"""The running Discord bot: one :class:`ChannelSession` (voice connection + pipeline + audit log) per guild.

Joining a channel, in this order: connect; post the notice that the channel is transcribed and audited
(if that fails, disconnect: nothing is recorded without notice); build the session (transport, the mode's
pipeline with the reply gate on the user's transcript as a session hook, audit log); start py-cord's receive
sink. Every mode works here: the gate is placed by the mode (pipeline, audio-llm: after STT; realtime: on the
server's input transcription, and a turn it holds back gets no response). Leaving: stop receiving, end the pipeline (the audit
log gets its ``session.end``), disconnect. ``/persona`` and ``/mode`` end the session and start a new one
(a new audit directory) in the same channel, with a fresh notice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import warnings
from collections.abc import Callable
from typing import Any

from bot.config import Settings
from bot.discord.commands import CommandHandlers, register
from bot.discord.forget import ForgetResult, forget_speaker
from bot.attention import attention_gate, wake_names
from bot.discord.policy import AccessPolicy, SpeakerBook
from bot.discord.text import MAX_MESSAGE, TextMessage, read_message
from bot.errors import VoicebotError
from bot.persona import Persona, list_personas, load_persona
from bot.session import Session
from bot.text_chat import TextConversation
from bot.transports.discord import DiscordTransport
from bot.turns import Turn
from pipelines import MODES, SessionHooks, mode_for

log = logging.getLogger(__name__)

PYCORD_RECEIVE_WARNING = r"Voice reception is currently broken"
"""py-cord 2.8.1 still warns on start/stop_recording although its receive path decrypts DAVE (docs/discord.md)."""


class ChannelSession:
    """One voice channel: the voice client, and the pipeline session that hears and answers it."""

    def __init__(self, app: DiscordApp, channel: Any, settings: Settings, persona: Persona) -> None:
        self.app = app
        self.channel = channel
        self.settings = settings
        self.persona = persona
        self.vc: Any = None
        self.transport: DiscordTransport | None = None
        self.session: Session | None = None
        self.text: TextConversation | None = None
        """Answers text messages into the voice session's context and audit log (bot/text_chat.py)."""
        self.sink: Any = None
        self.player: Any = None
        self.speakers = SpeakerBook(settings.discord.speaker_label)
        self._speakers_lock = threading.Lock()
        self._stop = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.notices: list[Any] = []

    def describe(self) -> str:
        d = self.settings.discord
        names = ", ".join(wake_names(self.persona))
        who = "everyone" if d.respond_to == "all" else f"whoever says {names}"
        return f"mode {self.settings.mode}, answering {who}"

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        self.vc = await self.channel.connect(timeout=30.0, reconnect=True)
        try:
            await self._notice()
            await self._start_pipeline()
        except BaseException:
            with contextlib.suppress(Exception):
                await self._stop_pipeline("failed to start")
            with contextlib.suppress(Exception):
                await self.vc.disconnect(force=True)
            raise

    async def stop(self, reason: str = "left") -> None:
        await self._stop_pipeline(reason)
        if self.vc is not None:
            with contextlib.suppress(Exception):
                await self.vc.disconnect(force=True)

    async def restart(self, settings: Settings, persona: Persona) -> None:
        """End this session and start one with ``settings``/``persona``. What can be checked first (the mode's
        preflight: key, server; the reply gate's needs) is checked while the old session still runs; if the new
        one fails to start anyway, the old settings are started again and the error is raised."""
        self._hooks(settings, persona)
        await asyncio.to_thread(mode_for(settings).preflight, settings)
        old = self.settings, self.persona
        await self._stop_pipeline("restarted")
        self.settings, self.persona = settings, persona
        try:
            await self._start_new()
        except BaseException:
            with contextlib.suppress(Exception):
                await self._stop_pipeline("failed to start")
            self.settings, self.persona = old
            with contextlib.suppress(Exception):
                await self._start_new()
            raise

    async def _start_new(self) -> None:
        self.speakers = SpeakerBook(self.settings.discord.speaker_label)
        await self._notice()
        await self._start_pipeline()

    async def _notice(self) -> None:
        """Say that the channel is transcribed and audited, before anything is recorded. Raises if it can't."""
        cfg = self.settings.discord
        target = self.channel
        if cfg.notice_channel_id:
            target = self.app.get_channel(cfg.notice_channel_id) or target
        me = getattr(getattr(self.channel, "guild", None), "me", None)
        bot_name = getattr(me, "display_name", None) or self.persona.name
        text = cfg.notice.replace("{bot}", bot_name).replace("{channel}", getattr(self.channel, "name", "this channel"))
        if len(text) > 2000:
            text = text[:1999] + "…"
        try:
            message = await target.send(text)
        except Exception as exc:  # noqa: BLE001 - Forbidden, HTTPException, ...: all mean "no notice"
            raise VoicebotError(f"could not post the recording notice in {getattr(target, 'name', target)} "
                                f"({type(exc).__name__}): give the bot 'Send Messages' there or set "
                                "discord.notice_channel_id; nothing was recorded") from None
        self.notices.append(message)

    async def _start_pipeline(self) -> None:
        cfg = self.settings.discord
        transport = DiscordTransport(in_rate=self.settings.transport.sample_rate,
                                     out_rate=self.settings.transport.output_sample_rate,
                                     release_secs=cfg.floor_release_secs, lookback_secs=cfg.floor_lookback_secs)
        session = await self.app.build_session(self.settings, self.persona, transport,
                                               self._hooks(self.settings, self.persona))
        self.text = await self.app.build_text(self.settings, self.persona, session)
        transport.pipeline_busy = lambda: session.tracker.llm_running
        guild = getattr(self.channel, "guild", None)
        session.open_audit(discord={"guild_id": getattr(guild, "id", None), "channel_id": self.channel.id,
                                    "channel": getattr(self.channel, "name", None),
                                    "respond_to": cfg.respond_to, "notice": [str(getattr(m, "id", ""))
                                                                             for m in self.notices[-1:]]})
        self.transport, self.session = transport, session
        self._stop = asyncio.Event()
        self.player = self.app.make_player(self.vc, transport.playback)
        transport.on_playback = self.player.ensure
        self._task = asyncio.create_task(session.run(self._until_stopped), name="voicebot-discord-session")
        for _ in range(200):  # the input transport takes frames once the pipeline has started
            if transport.running or self._task.done():
                break
            await asyncio.sleep(0.025)
        if self._task.done():
            self._task.result()  # raises what went wrong
        self.sink = self.app.make_sink(self._deliver)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=PYCORD_RECEIVE_WARNING)
            self.app.start_listening(self.vc, self.sink)

    def _hooks(self, settings: Settings, persona: Persona) -> SessionHooks:
        """The reply gate on the user's transcript (every mode that transcribes), and the app's turn listeners.

        With ``respond_to = "addressed"`` every unaddressed utterance ends as a user turn with no transcript
        let through, which pipecat would otherwise answer ("ask them to repeat")."""
        cfg = settings.discord
        caps = mode_for(settings).capabilities(settings)
        if not caps.has_transcript and cfg.respond_to == "addressed":
            raise VoicebotError(f"discord.respond_to = \"addressed\" needs the user's transcript, which mode "
                                f"{settings.mode} does not make here: set audio_llm.transcribe_for_audit = "
                                "true or discord.respond_to = \"all\"")
        gate = [attention_gate(settings, persona, cfg.respond_to)] if caps.has_transcript else []
        return SessionHooks(on_transcript=gate, on_turn=tuple(self.app.turn_listeners),
                            answer_empty_turns=cfg.respond_to == "all")

    async def _until_stopped(self, _tracker: Any, _task: Any) -> None:
        await self._stop.wait()

    async def _stop_pipeline(self, reason: str) -> None:
        vc = self.vc
        if vc is not None:
            with warnings.catch_warnings(), contextlib.suppress(Exception):
                warnings.filterwarnings("ignore", message=PYCORD_RECEIVE_WARNING)
                if vc.is_recording():
                    vc.stop_recording()
        if self.transport is not None:
            self.transport.playback.flush()
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task
            self._task = None
        if vc is not None:
            with contextlib.suppress(Exception):
                vc.stop()  # the player, if it is still running

    # -- audio in (py-cord's packet-router thread) ------------------------------------------------

    def _deliver(self, user_id: int, user: Any, pcm: bytes, timestamp: int | None, arrival: float) -> None:
        if getattr(user, "bot", False):
            return  # other bots (music bots, ...) are not people talking to us
        transport, session = self.transport, self.session
        if transport is None:
            return
        label = self._label(user_id, getattr(user, "display_name", None))
        transport.receive(user_id, label, pcm, timestamp=timestamp, arrival=arrival)

    def _label(self, user_id: int, display_name: str | None) -> str:
        label = self.speakers.known(user_id)
        if label is None:
            with self._speakers_lock:
                label = self.speakers.known(user_id)
                if label is None:
                    label = self.speakers.label(user_id, display_name)
                    session = self.session
                    if session is not None and session.audit is not None:
                        session.audit.record("discord.speaker", {"speaker": label, "user_id": user_id})
        return label

    # -- text messages ----------------------------------------------------------------------------

    def text_channel_ids(self) -> set[int]:
        """Where text messages are answered: the voice channel's own chat, and the notice channel if set."""
        ids = {self.channel.id}
        if self.settings.discord.notice_channel_id:
            ids.add(self.settings.discord.notice_channel_id)
        return ids

    async def answer_text(self, message: Any, text: TextMessage) -> str | None:
        """Answer a text message as a turn of this session; returns what was posted.

        The reply is posted inside the turn (as several replies when it is longer than a Discord message),
        so the turn record and the context hold what was posted, not what was meant to be."""
        conversation = self.text
        if conversation is None:
            return None

        async def post(part: str) -> None:
            await message.reply(part, mention_author=False)

        reply = await conversation.ask(text.text, speaker=self._label(text.author_id, text.author_name),
                                       post=post, max_chars=MAX_MESSAGE)
        if reply.error:
            log.error("text message in %s: %s", text.channel_id, reply.error)
        return reply.text or None

    # -- members ----------------------------------------------------------------------------------

    def member_left(self, user_id: int) -> None:
        if self.transport is not None:
            self.transport.drop_user(user_id)

    async def forget(self, member: Any) -> ForgetResult:
        user_id = member.id
        label = self.speakers.known(user_id) or self.speakers.label(user_id, getattr(member, "display_name", None))
        if self.transport is not None:
            self.transport.drop_user(user_id)
        session = self.session
        if session is None or session.audit is None:
            return ForgetResult(label)
        return await asyncio.to_thread(forget_speaker, session.audit, label, user_id=user_id, requested_by=label)


class DiscordApp:
    """Sessions by guild, the allow-lists and the slash commands. ``client`` is the py-cord ``Bot``."""

    def __init__(self, settings: Settings, persona: Persona, *, client: Any = None,
                 turn_listeners: list[Callable[[Turn], None]] | None = None) -> None:
        self.settings = settings
        self.persona = persona
        self.access = AccessPolicy.from_config(settings.discord)
        self.sessions: dict[int, ChannelSession] = {}
        self.turn_listeners = list(turn_listeners or [])
        self.handlers = CommandHandlers(self)
        self.client = client
        self._lock = asyncio.Lock()

    # -- seams (py-cord and the models), replaced in tests ----------------------------------------

    async def build_session(self, settings: Settings, persona: Persona, transport: DiscordTransport,
                            hooks: SessionHooks) -> Session:
        return await asyncio.to_thread(Session, settings, persona, transport, hooks)

    async def build_text(self, settings: Settings, persona: Persona, session: Session) -> TextConversation:
        """Text turns share the voice session's context and turn tracker (so its audit log)."""
        return await asyncio.to_thread(TextConversation, settings, persona, session.built.context, session.tracker)

    def make_sink(self, deliver: Any) -> Any:
        from bot.discord.pycord import VoiceSink

        return VoiceSink(deliver, accept=self.access.user_ok)

    def start_listening(self, vc: Any, sink: Any) -> None:
        from bot.discord.pycord import start_listening

        start_listening(vc, sink)

    def make_player(self, vc: Any, queue: Any) -> Any:
        from bot.discord.pycord import Player

        return Player(vc, queue)

    def get_channel(self, channel_id: int) -> Any:
        return self.client.get_channel(channel_id) if self.client is not None else None

    # -- actions ----------------------------------------------------------------------------------

    async def join(self, channel: Any, *, requested_by: int | None = None) -> ChannelSession:
        guild_id = channel.guild.id
        if not self.access.guild_ok(guild_id) or not self.access.channel_ok(channel.id):
            raise VoicebotError(f"channel {channel.id} is not on the allow-lists (discord.guild_ids / channel_ids)")
        async with self._lock:
            if guild_id in self.sessions:
                raise VoicebotError(f"already in {self.sessions[guild_id].channel.name}")
            session = ChannelSession(self, channel, self.settings, self.persona)
            await session.start()
            self.sessions[guild_id] = session
        log.info("joined voice channel %s (guild %s), requested by %s", channel.id, guild_id, requested_by)
        return session

    async def leave(self, guild_id: int | None, reason: str = "left") -> bool:
        async with self._lock:
            session = self.sessions.pop(guild_id, None) if guild_id is not None else None
        if session is None:
            return False
        await session.stop(reason)
        return True

    async def restart(self, guild_id: int, *, persona: str | None = None, mode: str | None = None) -> ChannelSession:
        session = self.sessions.get(guild_id)
        if session is None:
            raise VoicebotError("not in a voice channel here: /join first")
        settings, persona_obj = session.settings, session.persona
        if mode is not None:
            mode_for(mode)  # VoicebotError names the choices
            settings = settings.model_copy(update={"mode": mode})
        if persona is not None:
            persona_obj = load_persona(persona)  # VoicebotError names the choices
            settings = settings.model_copy(update={"persona": persona})
        async with self._lock:
            await session.restart(settings, persona_obj)
        return session

    async def close(self) -> None:
        for guild_id in list(self.sessions):
            await self.leave(guild_id, reason="shutdown")

    # -- py-cord events ---------------------------------------------------------------------------

    async def on_voice_state_update(self, member: Any, before: Any, after: Any) -> None:
        guild = getattr(member, "guild", None)
        session = self.sessions.get(getattr(guild, "id", None))
        if session is None:
            return
        me = getattr(self.client, "user", None)
        if me is not None and member.id == me.id:
            if getattr(after, "channel", None) is None:  # disconnected (kicked, channel deleted)
                await self.leave(guild.id, reason="disconnected")
            return
        was = getattr(getattr(before, "channel", None), "id", None)
        now = getattr(getattr(after, "channel", None), "id", None)
        if was == session.channel.id and now != session.channel.id:
            session.member_left(member.id)

    async def on_message(self, message: Any) -> None:
        """A text message: answered when it mentions the bot or replies to it, in a channel a session serves."""
        me = getattr(self.client, "user", None)
        guild = getattr(message, "guild", None)
        session = self.sessions.get(getattr(guild, "id", None))
        if me is None or session is None:
            return
        text = read_message(message, me.id, session.text_channel_ids())
        if text is None or not self.access.user_ok(text.author_id):
            return
        try:
            await session.answer_text(message, text)
        except Exception as exc:  # noqa: BLE001 - a failed post must not take the bot down
            log.error("could not answer a text message in %s: %s: %s", text.channel_id, type(exc).__name__, exc)

    async def on_ready(self) -> None:
        channel_id = self.settings.discord.voice_channel_id
        if not channel_id:
            return
        channel = self.get_channel(channel_id)
        if channel is None:
            log.error("discord.voice_channel_id %s: no such channel visible to the bot", channel_id)
            return
        if getattr(channel, "guild", None) is not None and channel.guild.id in self.sessions:
            return  # a reconnect fired on_ready again
        try:
            await self.join(channel)
        except VoicebotError as exc:
            log.error("could not join %s: %s", channel_id, exc)


def make_client(app: DiscordApp) -> Any:
    """The py-cord ``Bot`` with the intents voicebot needs and the slash commands registered."""
    import discord

    intents = discord.Intents.none()
    intents.guilds = True        # guilds and channels
    intents.voice_states = True  # who is in which voice channel; needed to connect and to map audio to members
    intents.guild_messages = True  # text messages that mention the bot (their text comes without the privileged
    #                                Message Content intent)
    bot = discord.Bot(intents=intents)
    register(bot, app.handlers, guild_ids=app.settings.discord.guild_ids or None,
             personas=list_personas(), modes=list(MODES))
    bot.add_listener(app.on_voice_state_update, "on_voice_state_update")
    bot.add_listener(app.on_ready, "on_ready")
    bot.add_listener(app.on_message, "on_message")
    app.client = bot
    return bot


def check_voice_dependencies() -> None:
    """py-cord's voice needs PyNaCl, davey (DAVE) and libopus; say which is missing in one line."""
    try:
        import discord
        import discord.opus
        from discord.utils import get_missing_voice_dependencies
    except ImportError:
        raise VoicebotError("the Discord transport needs py-cord: pip install -e '.[discord]' "
                            "(py-cord[voice] 2.8)") from None
    missing = list(get_missing_voice_dependencies())
    if not discord.opus.is_loaded():
        try:
            discord.opus._load_default()
        except Exception:  # noqa: BLE001
            pass
        if not discord.opus.is_loaded():
            missing.append("libopus (apt-get install libopus0)")
    if missing:
        raise VoicebotError(f"Discord voice needs {', '.join(missing)}: pip install -e '.[discord]'")


async def run_bot(settings: Settings, persona: Persona, *, turn_listeners: list[Callable[[Turn], None]] | None = None,
                  token: str | None = None) -> None:
    """Log in with the token from ``$<discord.token_env>`` and run until interrupted."""
    check_voice_dependencies()
    import aiohttp
    import discord

    env = settings.discord.token_env
    token = token or os.environ.get(env, "").strip()
    if not token:
        raise VoicebotError(f"no Discord bot token: set ${env} to your bot's token (see docs/discord.md); "
                            "it is read from the environment only, never from config")
    app = DiscordApp(settings, persona, turn_listeners=turn_listeners)
    bot = make_client(app)
    try:
        await bot.start(token)
    except discord.LoginFailure:
        raise VoicebotError(f"Discord rejected the token in ${env}: check it (Developer Portal > Bot > Reset "
                            "Token)") from None
    except discord.PrivilegedIntentsRequired:
        raise VoicebotError("Discord refused the gateway intents: voicebot needs only guilds and voice "
                            "states, which are not privileged; check the application settings") from None
    except (aiohttp.ClientError, OSError, TimeoutError, discord.GatewayNotFound) as exc:
        reason = str(exc).split("[")[-1].rstrip("]") if "[" in str(exc) else (str(exc) or type(exc).__name__)
        raise VoicebotError(f"cannot reach Discord ({reason}): check the network connection (discord.com:443 and "
                            "its gateway must be reachable, through any proxy or firewall), then retry") from None
    except discord.HTTPException as exc:
        raise VoicebotError(f"Discord answered HTTP {exc.status} ({exc.text or 'no detail'}): retry later, or "
                            "check https://discordstatus.com") from None
    finally:
        with contextlib.suppress(Exception):
            await app.close()
        with contextlib.suppress(Exception):
            await bot.close()
