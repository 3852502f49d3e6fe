"""The guard: a fine-tuned model is handed over only if it beats its base model on the held-back pairs."""

from __future__ import annotations

import math

from ..errors import EmbedkitError


class GuardError(EmbedkitError):
    """The best checkpoint did not beat the base model on the valid pairs; no model was written.

    ``result`` is the :class:`~embedkit.training.run.FinetuneResult` of the run (scores, curve, work dir)."""

    def __init__(self, message: str, result=None):
        super().__init__(message)
        self.result = result


def improved(base: float, best: float, min_delta: float = 0.0) -> bool:
    """``best`` beats ``base`` by more than ``min_delta`` (a NaN never does)."""
    return math.isfinite(best) and (not math.isfinite(base) or best > base + min_delta)


def verdict(metric: str, base: float, best: float, best_step: int | None, min_delta: float = 0.0) -> str:
    """One line with the numbers (×100), for logs and the error message."""
    delta = (best - base) * 100 if math.isfinite(best) and math.isfinite(base) else math.nan
    where = f"step {best_step}" if best_step is not None else "the final model"
    ok = improved(base, best, min_delta)
    return (f"valid {metric}: base {base * 100:.2f}, best ({where}) {best * 100:.2f} ({delta:+.2f}) -- "
            + ("better than the base model" if ok else
               "not better than the base model" + (f" by more than {min_delta * 100:.2f}" if min_delta else "")))
