"""The ``[sat]`` config section: options of the stable-audio-tools-format backend. No torch.

Each field's metadata names its command-line flag (shared by ``serve``, ``render`` and ``bench``)
and help text; the environment form is ``LATENTLOOP_SAT_<KEY>``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ...errors import ConfigError


@dataclass(frozen=True, slots=True)
class SatOptions:
    """How to load a stable-audio-tools-format checkpoint (SAO 1.0, SAO Small, fine-tunes)."""

    # folder with a T5 encoder + tokenizer; "" = from the model folder or the HF cache
    t5: str = field(
        default="",
        metadata={"flag": "--t5", "help": "folder with the T5 encoder + tokenizer"},
    )
    # a .ckpt that needs full (unsafe) unpickling is refused unless this is set
    trust_checkpoint: bool = field(
        default=False,
        metadata={"flag": "--trust-checkpoint", "help": "allow unsafe .ckpt unpickling"},
    )
    # torch's CPU threads (process-wide); 0 = one per physical core (docs/perf.md)
    threads: int = field(
        default=0,
        metadata={"flag": "--threads", "help": "CPU threads; 0 = physical cores"},
    )
    # decode the whole window even when the caller keeps less (reference precision always does)
    full_decode: bool = field(
        default=False,
        metadata={"flag": "--full-decode", "help": "decode the whole window, not the kept span"},
    )
    # experimental, changes the output: sample only the latents a kept span needs (docs/perf.md)
    fit_window: bool = field(
        default=False,
        metadata={
            "flag": "--fit-window",
            "help": "experimental: sample only the latents the loop needs (changes the output)",
        },
    )
    # prompts whose T5 embeddings stay cached (per conditioner, least recently used out); 0 = off
    text_cache: int = 16

    def __post_init__(self) -> None:
        if not 0 <= self.threads <= 1024:
            raise ConfigError(f"sat.threads must be 0..1024, got {self.threads}")
        if not 0 <= self.text_cache <= 4096:
            raise ConfigError(f"sat.text_cache must be 0..4096, got {self.text_cache}")
