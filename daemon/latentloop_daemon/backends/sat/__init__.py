"""Backend for stable-audio-tools-format checkpoints: Stable Audio Open 1.0, Small, fine-tunes."""
