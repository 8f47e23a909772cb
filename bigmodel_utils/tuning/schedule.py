"""Hyperband's schedule from scratch: the brackets, how many configurations each starts with and
how many epochs each round trains. Used in chapter 5.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from bigmodel_utils.validation import check_int, positive_int

# Hyperband's schedule, from scratch
# ---------------------------------------------------------------------------


@dataclass
class HyperbandSchedule:
    """The rounds Hyperband will run: one dict per (bracket, round), and the totals."""

    max_epochs: int
    factor: int
    rounds: list[dict[str, int]] = field(default_factory=list)

    @property
    def trials(self) -> int:
        return sum(r["trials"] for r in self.rounds)

    @property
    def epochs_trained(self) -> int:
        """Epochs actually trained: a promoted model continues from its checkpoint."""
        return sum(r["trials"] * r["new_epochs"] for r in self.rounds)

    @property
    def epochs_if_from_scratch(self) -> int:
        """Epochs if every trial trained from scratch up to its target (what ``trials x epochs`` suggests)."""
        return sum(r["trials"] * r["epochs"] for r in self.rounds)


def hyperband_schedule(max_epochs: int, factor: int = 3, iterations: int = 1) -> HyperbandSchedule:
    """Predict the trials and epochs of KerasTuner's Hyperband (Li et al. 2018) without running it.

    Brackets run from the most aggressive (many models, few epochs) to plain
    random search (few models, ``max_epochs`` each). In bracket ``b`` round
    ``r`` KerasTuner trains ``ceil(B / (b + 1) * factor**(b - r))`` models to
    ``ceil(max_epochs / factor**(b - r))`` epochs, with
    ``B = ceil(1 + log_factor(max_epochs))``; round ``r > 0`` continues the
    best models of round ``r - 1`` from their checkpoints. Used in chapter 5.
    """
    max_epochs = positive_int("max_epochs", max_epochs)
    iterations = positive_int("iterations", iterations)
    factor = check_int("factor", factor, minimum=2)
    num_brackets, epochs = 0, float(max_epochs)
    while epochs >= 1:
        epochs /= factor
        num_brackets += 1
    last_round_size = math.ceil(1 + math.log(max_epochs, factor))
    schedule = HyperbandSchedule(max_epochs, factor)
    for iteration in range(iterations):
        for bracket in reversed(range(num_brackets)):
            previous_epochs = 0
            for round_num in range(bracket + 1):
                trials = math.ceil(last_round_size / (bracket + 1) * factor ** (bracket - round_num))
                target = math.ceil(max_epochs / factor ** (bracket - round_num))
                schedule.rounds.append({"iteration": iteration, "bracket": bracket, "round": round_num,
                                        "trials": trials, "epochs": target, "new_epochs": target - previous_epochs})
                previous_epochs = target
    return schedule

