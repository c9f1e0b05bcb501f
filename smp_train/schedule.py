"""Keep-ratio and regularizer schedules (cubic, as in SMP / movement pruning)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class CubicSchedule:
    """``v_t = v_f + (1 - v_f) * (1 - (t - t0) / N)^3`` for ``t0 <= t < t0 + N``, then ``v_f``.

    Before ``t0 = start_step`` (a warm-up, emmental's ``initial_warmup``) nothing is pruned and
    the scores learn first-order importance; ``t0 = 0`` is the plain cubic schedule.
    ``lambda_t = lambda_final * (1 - (1 - (t - t0) / N)^3)`` ramps from 0 to ``lambda_final``
    over the same steps; the regularizer enters the loss as ``lambda_t * (v_t / v_f) * R``.
    """

    final_keep: float
    lambda_final: float
    prune_steps: int
    start_step: int = 0

    def _progress(self, step: int) -> float:
        if self.prune_steps <= 0:
            return 0.0 if step < self.start_step else 1.0
        return min(max(step - self.start_step, 0) / self.prune_steps, 1.0)

    def keep(self, step: int) -> float:
        """The keep ratio v_t at optimizer step ``step`` (0-based)."""
        remaining = 1.0 - self._progress(step)
        return self.final_keep + (1.0 - self.final_keep) * remaining ** 3

    def regu_lambda(self, step: int) -> float:
        """lambda_t: cubic ramp from 0 to ``lambda_final``."""
        remaining = 1.0 - self._progress(step)
        return self.lambda_final * (1.0 - remaining ** 3)

    def reg_weight(self, step: int) -> float:
        """The factor in front of R in the loss: ``lambda_t * v_t / v_f``."""
        return self.regu_lambda(step) * self.keep(step) / self.final_keep


def prune_steps(total_steps: int, fraction: float) -> int:
    """N, the length of the cubic phase: ``round(fraction * total_steps)`` (0 means no ramp)."""
    return max(int(round(fraction * total_steps)), 0)
