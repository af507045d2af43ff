"""Playback: a clip launcher inside the daemon (docs/playback.md).

- ``transport``: tempo, meter and bar positions on the stream's sample clock, exactly;
- ``mixer``: the audio callback's work (slots, swaps, fades, gains, limiter). REAL-TIME;
- ``conform``: channels, resampling (soxr) and tempo conform (Signalsmith Stretch);
- ``source``: ``Loop``, from a finished ``Clip`` or a file;
- ``devices``: listing and choosing output devices (lazy ``sounddevice``);
- ``player``: the output stream and its control thread;
- ``link``: Ableton Link (optional, GPL binding imported only when enabled).

Nothing here imports sounddevice, python-stretch or Link at import time.
"""
