"""Choose DDP sampling steps per frame to stay under a latency budget.

A frame's latency is modelled as ``base_ms + steps · step_ms`` (encoders once, decoder once per
step).  Both terms are fitted by exponentially weighted least squares over the frames seen so far
(weight ``decay`` per older frame), so the estimate follows a machine whose speed drifts.  While
only one step count has been observed the fit cannot separate the two terms and the controller
assumes ``base_ms = 0`` (every millisecond scales with steps), which over-estimates the cost of
more steps: it errs on the side of the budget; to learn the split it probes one step more on
a single frame while frames run under budget (that frame may overshoot by one step's cost).

Without a budget the controller always answers ``max_steps``.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class LatencyEstimate:
    base_ms: float
    step_ms: float

    def predict(self, steps: int) -> float:
        return self.base_ms + steps * self.step_ms


class StepController:
    """Args:
        max_steps: the most steps a frame may use (``--steps``).
        budget_ms: latency target per frame; ``None`` disables the controller.
        decay: weight kept by older observations per new one (EMA factor, in (0, 1)).
    """

    def __init__(self, *, max_steps: int, budget_ms: float | None = None, decay: float = 0.8) -> None:
        if max_steps < 1:
            raise ValueError(f"max_steps must be ≥ 1, got {max_steps}")
        if budget_ms is not None and not budget_ms > 0:
            raise ValueError(f"latency budget must be > 0 ms, got {budget_ms}")
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        self.max_steps = int(max_steps)
        self.budget_ms = budget_ms
        self.decay = decay
        # exponentially weighted sums: weight, Σk, Σk², Σt, Σk·t
        self._w = self._sk = self._skk = self._st = self._skt = 0.0

    def observe(self, steps: int, latency_ms: float) -> None:
        """Record that a frame with ``steps`` steps took ``latency_ms``."""
        d = self.decay
        k, t = float(steps), float(latency_ms)
        self._w = d * self._w + 1.0
        self._sk = d * self._sk + k
        self._skk = d * self._skk + k * k
        self._st = d * self._st + t
        self._skt = d * self._skt + k * t

    def _fit(self) -> tuple[LatencyEstimate, bool] | None:
        """(estimate, separable): separable when base and per-step cost could be told apart."""
        if self._w == 0.0:
            return None
        mean_k, mean_t = self._sk / self._w, self._st / self._w
        var_k = self._skk / self._w - mean_k**2
        if var_k > 1e-6:
            slope = (self._skt / self._w - mean_k * mean_t) / var_k
            base = mean_t - slope * mean_k
            if slope > 0.0 and base >= 0.0:
                return LatencyEstimate(base_ms=base, step_ms=slope), True
        return LatencyEstimate(base_ms=0.0, step_ms=mean_t / mean_k), False

    def estimate(self) -> LatencyEstimate | None:
        """Current ``base_ms`` / ``step_ms`` fit, ``None`` before the first observation."""
        fit = self._fit()
        return None if fit is None else fit[0]

    def choose(self) -> int:
        """Steps for the next frame: the most that fit the budget (at least 1).

        While the fit cannot separate the two costs (one step count seen recently) and the frames
        run under budget, one frame probes one step more, so the fit learns the per-step cost.
        """
        if self.budget_ms is None:
            return self.max_steps
        fit = self._fit()
        if fit is None:
            return 1  # nothing measured yet: the cheapest setting
        estimate, separable = fit
        fitting = [k for k in range(1, self.max_steps + 1) if estimate.predict(k) <= self.budget_ms]
        chosen = max(fitting, default=1)
        if not separable:
            seen = round(self._sk / self._w)
            if chosen <= seen < self.max_steps and estimate.predict(seen) < self.budget_ms:
                return seen + 1
        return chosen
