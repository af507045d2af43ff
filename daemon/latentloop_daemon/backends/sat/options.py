"""The ``[sat]`` config section: options of the stable-audio-tools-format backend. No torch.

Each field's metadata names its command-line flag (shared by ``serve``, ``render`` and ``bench``)
and help text; the environment form is ``LATENTLOOP_SAT_<KEY>``.
"""

from __future__ import annotations

from dataclasses import dataclass, field


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
