"""OSC request handlers: validate, enqueue or answer, return (the bridge's dispatch thread).

``RequestHandlers`` implements the bridge's ``CommandHandler``: each command type maps to one
``on_<leaf>`` method through a table. Nothing here waits for a render: the worker reports
through ``JobReplies``.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from latentloop_bridge import protocol as p
from latentloop_bridge.errors import FailCode
from latentloop_daemon import __version__
from latentloop_daemon.errors import OutputError, RenderError
from latentloop_daemon.service.auth import Authorizer
from latentloop_daemon.service.jobs import CANCELLED, FAILED, QueueFull, RenderJob
from latentloop_daemon.service.limits import RenderRate, render_over_limits
from latentloop_daemon.service.playback import PlayFailure
from latentloop_daemon.service.playback import fail_code as playback_fail_code
from latentloop_daemon.service.replies import Replies

if TYPE_CHECKING:
    from latentloop_daemon.loops.pipeline import LoopRequest
    from latentloop_daemon.playback.player import Player
    from latentloop_daemon.service.lifecycle import Service

logger = logging.getLogger(__name__)

Address = tuple[str, int]


class RequestHandlers:
    """Answers every request of protocol v1; ``service`` gives the state, queue and server."""

    def __init__(self, service: Service, replies: Replies) -> None:
        self.service = service
        self.replies = replies
        self._table: dict[type, Callable[[Any, Address], None]] = {
            p.RenderCommand: self.on_render,
            p.CancelCommand: self.on_cancel,
            p.StatusCommand: self.on_status,
            p.PingCommand: self.on_ping,
            p.NotifyCommand: self.on_notify,
            p.AuthCommand: self.on_auth,
            p.PlayCommand: self.on_play,
            p.StopCommand: self.on_stop,
            p.GainCommand: self.on_gain,
            p.TempoCommand: self.on_tempo,
            p.TransportCommand: self.on_transport,
            p.LinkCommand: self.on_link,
            p.AudioCommand: self.on_audio,
        }
        osc = service.config.osc
        self.auth = Authorizer(osc.token, osc.auth_ttl_s)
        self.rate = RenderRate(service.config.limits.renders_per_minute)
        # ids for positional renders: six digits, so Pd's number boxes and [print] show them
        # exactly; above what clients count up to; cycling, so the supply never runs out
        self._assigned_ids = itertools.cycle(range(100_000, 1_000_000))
        self._ids_lock = threading.Lock()

    @property
    def commands(self) -> tuple[type, ...]:
        """The command types this daemon serves."""
        return tuple(self._table)

    def on_command(self, command: p.Command, sender: Address) -> None:
        handler = self._table.get(type(command))
        if handler is None:  # the bridge parsed a request nothing here serves: a bug
            self.replies.fail(
                sender,
                command.reply_id,
                command.command,
                FailCode.INTERNAL,
                "this daemon has no handler for that request",
            )
            return
        if not self.auth.permits(command, sender[0]):
            logger.warning("unauthorized %s from %s:%d", command.command, *sender)
            request_id = command.reply_id
            self.replies.fail(
                sender,
                request_id,
                command.command,
                FailCode.UNAUTHORIZED,
                "this daemon needs its token: send /latentloop/auth <id> <token> first, or a "
                "'token' pair with the render (docs/security.md)",
            )
            return
        handler(command, sender)

    def on_protocol_error(self, error: p.ProtocolError, sender: Address) -> None:
        # the bridge already logged it at WARNING
        self.replies.reply(sender, *p.error_reply(error))

    def on_render(self, cmd: p.RenderCommand, sender: Address) -> None:
        svc = self.service
        request_id = cmd.client_id if cmd.client_id is not None else self._assign_id()
        if svc.state == "stopping":
            self._fail_render(sender, request_id, FailCode.STOPPING, "the daemon is shutting down")
            return
        if svc.state != "ready" and svc.config.render.while_loading == "fail":
            self._fail_render(
                sender,
                request_id,
                FailCode.LOADING,
                "the model is still loading; retry when status says ready",
            )
            return
        over = render_over_limits(cmd, svc.config.limits, svc.config.render)
        if over is not None:
            self._fail_render(sender, request_id, FailCode.INVALID, over)
            return
        if not self.rate.admit(sender[0]):
            logger.warning("render from %s:%d over the rate limit", *sender)
            self._fail_render(
                sender, request_id, FailCode.BUSY, self.rate.refused_message(sender[0])
            )
            return
        try:
            request = loop_request(cmd)
        except RenderError as e:  # the bridge checked the ranges; this is a defensive second look
            self._fail_render(sender, request_id, FailCode.INVALID, str(e))
            return
        if cmd.play is not None and cmd.play >= svc.config.audio.slots:
            slots = svc.config.audio.slots
            self._fail_render(
                sender, request_id, FailCode.INVALID, f"play slot must be 0..{slots - 1}"
            )
            return
        job = RenderJob(svc.queue.new_job_id(), request_id, sender, request, play_slot=cmd.play)
        # refused (OutputError: the journal could not make it durable; QueueFull): nothing was
        # queued and nothing dropped, so no replaced job is left without its outcome
        try:
            position, dropped = svc.queue.submit(job, replace=cmd.replace)
        except OutputError as e:
            self._fail_render(sender, request_id, FailCode.IO, f"not accepted: {e}")
            return
        except QueueFull as e:
            if e.size:
                self._fail_render(sender, request_id, FailCode.BUSY, f"queue full ({e.size})")
            else:
                self._fail_render(
                    sender, request_id, FailCode.STOPPING, "the daemon is shutting down"
                )
            return
        for old in dropped:
            svc.job_replies.failed(old, FailCode.CANCELLED, "replaced by a newer request")
        logger.info(
            "job %d queued at %d (id %d from %s:%d)", job.job_id, position, request_id, *sender
        )
        self.replies.publish(sender, *p.queued_reply(request_id, position))

    def on_cancel(self, cmd: p.CancelCommand, sender: Address) -> None:
        hit = self.service.queue.cancel(sender, cmd.request_id)
        if not hit:
            self.replies.fail(
                sender,
                cmd.request_id,
                cmd.command,
                FailCode.NOT_FOUND,
                f"no queued or running job with id {cmd.request_id} from this sender",
            )
            return
        for job in hit:
            if job.state == CANCELLED:  # was queued: finished now; running ones report later
                self.service.job_replies.failed(job, FailCode.CANCELLED, "cancelled by the client")

    def on_status(self, cmd: p.StatusCommand, sender: Address) -> None:
        svc = self.service
        caps = svc.capabilities
        model = caps.model_id if caps else svc.config.engine.model
        device = caps.device if caps else svc.config.engine.device
        address, args = p.status_reply(
            cmd.request_id, svc.state, len(svc.queue), model, device, __version__
        )
        # appended to the v1 shape: the state and first file of this sender's job with that id
        job = svc.queue.find(sender, cmd.request_id) if cmd.request_id >= 0 else None
        args = [*args, job.state if job else "", job.paths[0] if job and job.paths else ""]
        args += svc.playback.status_strings()  # appended: the transport and the playing slots
        # appended: why that job failed or was cancelled, '<code>: <message>' (what its /fail said)
        args.append((job.error or "") if job and job.state in (FAILED, CANCELLED) else "")
        self.replies.reply(sender, address, args)

    def on_ping(self, cmd: p.PingCommand, sender: Address) -> None:
        self.replies.reply(sender, *p.pong_reply(cmd.request_id))

    def on_notify(self, cmd: p.NotifyCommand, sender: Address) -> None:
        server = self.replies.server
        assert server is not None  # requests arrive only through a bound server
        target = cmd.target(sender)
        try:
            if cmd.subscribe:
                server.subscribe(target)
            else:
                server.unsubscribe(target)
        except p.ProtocolError as e:
            self.replies.fail(sender, p.NO_ID, cmd.command, FailCode(e.code), e.message)
            return
        address, args = p.notify_reply(cmd.subscribe, target[1])
        server.send([sender, target, *server.fixed_targets], address, args)

    # --- playback: each answered once, by its .reply or a /fail (docs/protocol.md §4.6) -------

    def on_play(self, cmd: p.PlayCommand, sender: Address) -> None:
        def play() -> tuple[int, int]:
            pb = self.service.playback
            if cmd.job_id is not None:
                job = self.service.queue.find(sender, cmd.job_id)
                loop = pb.loop_for_job(job, cmd.job_id, cmd.variation)
            else:
                assert cmd.path is not None
                loop = pb.loop_for_path(cmd.path)
            quantize = cmd.quantize or self.service.config.audio.quantize
            player = pb.require_player()
            return player.play(cmd.slot, loop, quantize)

        self._on_player(cmd, sender, play, lambda r: p.play_reply(cmd.request_id, *r))

    def on_stop(self, cmd: p.StopCommand, sender: Address) -> None:
        quantize = cmd.quantize or self.service.config.audio.quantize
        self._on_player(
            cmd, sender,
            lambda: self._player().stop(cmd.slot, quantize),
            lambda bar: p.stop_reply(cmd.request_id, cmd.slot, bar),
        )  # fmt: skip

    def on_gain(self, cmd: p.GainCommand, sender: Address) -> None:
        self._on_player(
            cmd, sender,
            lambda: self._player().set_gain(cmd.slot, cmd.db),
            lambda _: p.gain_reply(cmd.request_id, cmd.slot, cmd.db),
        )  # fmt: skip

    def on_tempo(self, cmd: p.TempoCommand, sender: Address) -> None:
        def tempo() -> tuple[int, int]:
            player = self._player()
            bar = player.set_tempo(cmd.bpm, cmd.beats_per_bar)
            return player.beats_per_bar, bar

        self._on_player(
            cmd, sender, tempo, lambda r: p.tempo_reply(cmd.request_id, cmd.bpm, r[0], r[1])
        )

    def on_transport(self, cmd: p.TransportCommand, sender: Address) -> None:
        def transport() -> bool:
            player = self._player()
            player.set_transport(cmd.run)
            return player.running

        self._on_player(cmd, sender, transport, lambda r: p.transport_reply(cmd.request_id, r))

    def on_link(self, cmd: p.LinkCommand, sender: Address) -> None:
        self._on_player(
            cmd, sender,
            lambda: self._player().set_link(cmd.enabled),
            lambda peers: p.link_reply(cmd.request_id, cmd.enabled, peers),
        )  # fmt: skip

    def on_audio(self, cmd: p.AudioCommand, sender: Address) -> None:
        pb = self.service.playback
        if pb.player is None:  # file-only so far: try to open a device now
            pb.start()
            player = pb.player
            if player is None:
                message = "no output device found"
                self.replies.fail(sender, cmd.request_id, cmd.command, FailCode.NO_AUDIO, message)
            else:
                self.replies.reply(sender, *p.audio_reply(cmd.request_id, "on", player.device_name))
            return
        self._on_player(
            cmd, sender, pb.player.restart,
            lambda name: p.audio_reply(cmd.request_id, "on", name),
            require_active=False,
        )  # fmt: skip

    def _player(self) -> Player:
        return self.service.playback.require_player()

    def _on_player(
        self,
        cmd: p.Command,
        sender: Address,
        task: Callable[[], Any],
        reply: Callable[[Any], p.Reply],
        require_active: bool = True,
    ) -> None:
        """Run ``task`` on the player's control thread; answer with ``reply`` or a /fail."""
        pb = self.service.playback
        try:
            player = pb.require_player() if require_active else pb.player
            assert player is not None
        except PlayFailure as e:
            self.replies.fail(sender, cmd.reply_id, cmd.command, e.code, e.message)
            return

        def answer(future: Future[Any]) -> None:
            error = future.exception()
            if error is None:
                self.replies.reply(sender, *reply(future.result()))
                return
            code = playback_fail_code(error)
            if code is FailCode.INTERNAL:
                logger.error("%s failed", cmd.command, exc_info=error)
            else:
                logger.warning("%s from %s:%d: %s", cmd.command, *sender, error)
            message = getattr(error, "message", None) or str(error) or type(error).__name__
            self.replies.fail(sender, cmd.reply_id, cmd.command, code, message)

        player.submit(task).add_done_callback(answer)

    def on_auth(self, cmd: p.AuthCommand, sender: Address) -> None:
        if not self.auth.enabled:
            self.replies.reply(sender, *p.auth_reply(cmd.request_id, 0))
            return
        if not self.auth.authorise(sender[0], cmd.token):
            logger.warning("wrong token from %s:%d", *sender)
            self.replies.fail(
                sender, cmd.request_id, cmd.command, FailCode.UNAUTHORIZED, "wrong token"
            )
            return
        logger.info("authorised %s for %.0f s", sender[0], self.auth.ttl_s)
        self.replies.reply(sender, *p.auth_reply(cmd.request_id, int(self.auth.ttl_s)))

    def _fail_render(self, to: Address, request_id: int, code: FailCode, message: str) -> None:
        self.replies.fail(to, request_id, p.RenderCommand.command, code, message)

    def _assign_id(self) -> int:
        with self._ids_lock:
            return next(self._assigned_ids)


def loop_request(cmd: p.RenderCommand) -> LoopRequest:
    """A render command as a loop request; omitted values take the ``[render]`` defaults later."""
    # imported here: the loop pipeline pulls in scipy (~1 s), which need not delay the bind
    from latentloop_daemon.loops.pipeline import LoopRequest

    return LoopRequest(
        prompt=cmd.prompt,
        negative=cmd.negative or None,
        bpm=cmd.bpm,
        bars=cmd.bars,
        beats_per_bar=cmd.beats_per_bar,
        seconds=cmd.seconds,
        key=cmd.key,
        seed=cmd.seed,
        steps=cmd.steps,
        cfg=cmd.cfg,
        variations=cmd.variations,
    )
