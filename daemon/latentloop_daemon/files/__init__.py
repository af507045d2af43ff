"""Files on disk: atomic never-overwriting writes, sample formats, RIFF loop chunks, sidecars,
and the writer that turns ``Clip``s into WAV + JSON pairs (all variations or none)."""
