"""The daemon behind ``latentloop serve``.

- ``lifecycle``: ``Service`` (startup -> main loop -> shutdown, signals);
- ``handlers``: ``RequestHandlers``, one ``on_<leaf>`` per OSC request, dispatched by type;
- ``replies``: ``Replies`` (to sender, fixed targets, subscribers) and ``JobReplies``
  (render-worker events -> ``/progress``, ``/done``, ``/retry``, ``/fail``);
- ``jobs``: ``RenderJob`` and the bounded ``JobQueue``;
- ``worker``: ``RenderWorker``, the model's only thread, running the loop pipeline.
"""

from latentloop_daemon.service.lifecycle import Service

__all__ = ["Service"]
