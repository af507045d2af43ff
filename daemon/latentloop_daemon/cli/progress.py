"""A terminal progress bar for sampler steps; light imports only (client commands use it)."""

from __future__ import annotations

import sys
from typing import Any


class progress_bar:  # noqa: N801 - used as a context manager like a function
    """A tqdm bar on stderr (hidden when stderr is not a terminal); yields the step callback."""

    def __enter__(self) -> Any:
        from tqdm import tqdm

        self.bar: Any = None
        self._tqdm = tqdm

        def on_step(step: int, total: int, sigma: float) -> None:
            if self.bar is None:
                self.bar = self._tqdm(total=total, unit="step", file=sys.stderr, disable=None)
            self.bar.update(step - self.bar.n)

        return on_step

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()
