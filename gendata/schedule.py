"""Mask-ratio schedules over the iterations of a run.

``paper``: r[i] = r_max - s * floor(i * M / I) with M = r_max / s + 1 (the paper's progressive
restoration: r_max = 0.2, s = 0.05 and I = 5 give 0.20, 0.15, 0.10, 0.05, 0);
``constant``: r[i] = r_max; ``linear``: from r_max at i = 0 down to 0 at i = I - 1.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, model_validator

from schemas.config import StrictModel


class MaskSchedule(StrictModel):
    kind: Literal["paper", "constant", "linear"] = Field("paper", description="schedule shape")
    r_max: float = Field(0.2, ge=0.0, le=1.0, description="starting (largest) mask ratio")
    step: float = Field(0.05, gt=0.0, le=1.0, description="s: restoration step of the paper's schedule")
    iterations: int = Field(5, gt=0, description="I: number of iterations")

    @model_validator(mode="after")
    def _step_divides(self):
        if self.kind == "paper":
            q = self.r_max / self.step
            if abs(q - round(q)) > 1e-9:
                raise ValueError(f"step {self.step} must divide r_max {self.r_max} (r_max/s is {q:g})")
        return self

    def ratio(self, i: int) -> float:
        if not 0 <= i < self.iterations:
            raise ValueError(f"iteration {i} is outside 0..{self.iterations - 1}")
        if self.kind == "constant":
            r = self.r_max
        elif self.kind == "linear":
            r = self.r_max * (1 - i / (self.iterations - 1)) if self.iterations > 1 else self.r_max
        else:
            m = round(self.r_max / self.step) + 1
            r = self.r_max - self.step * math.floor(i * m / self.iterations)
        return round(max(r, 0.0), 10)

    def ratios(self) -> list[float]:
        return [self.ratio(i) for i in range(self.iterations)]
