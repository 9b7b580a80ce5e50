"""Which of a run's weights a split may report: the one rule that training's final test, ``alexnet
evaluate`` (one model or an ensemble), ``predict``, ``export``, ``features`` and the explorer share.

A run keeps ``best.pt``, the weights of the epoch with the best top-1 on :data:`SELECTION_SPLIT`, and
``last.pt``. A number measured on the images that chose the weights is optimistic, so where the
reported split is the selection split (ILSVRC-2012, whose test labels are not public, reports on val)
the last weights are reported, as the paper reports its validation numbers without choosing a
checkpoint on them; on any other split ``best.pt``, chosen on val, is reported.
"""

from __future__ import annotations

from dataclasses import dataclass

SELECTION_SPLIT = "val"  # the split whose top-1 chooses best.pt (training.trainer: each epoch's validation)


@dataclass(frozen=True)
class WeightsChoice:
    """``which`` ("best" or "last") of a run's checkpoints to report, and ``why``."""

    which: str
    why: str

    def __str__(self) -> str:
        return f"{self.which}: {self.why}"


def reported_weights(reported_split: str | None, *, has_best: bool = True) -> WeightsChoice:
    """The weights to report on ``reported_split`` (the split the numbers are measured on, after a
    missing test split fell back to val); ``None``: a run that has not said which split it reports
    (no results.json yet), whose latest weights are its own."""
    if reported_split is None:
        return WeightsChoice("last", "the run has reported on no split yet (no results.json): its latest "
                                     "weights")
    if reported_split == SELECTION_SPLIT:
        return WeightsChoice("last", f"{reported_split} is the split reported, and best.pt was chosen on it: "
                                     "a number chosen on the images it reports would be optimistic")
    if not has_best:
        return WeightsChoice("last", "the run has no best.pt")
    return WeightsChoice("best", f"chosen on {SELECTION_SPLIT}, reported on {reported_split}")
