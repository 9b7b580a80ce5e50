"""The paper's experiments and figures, one function each (``alexnet experiment NAME`` runs them).

Each writes a report folder (``report.md`` with its figures and tables, ``results.json`` with the raw
numbers, every run it trained under ``runs/``) and prints where it is. Run the same call again after an
interruption: finished runs are reused, an interrupted one continues from its checkpoint.
"""

from __future__ import annotations

from .ablations import ablations
from .fig1 import fig1
from .fig3 import fig3
from .fig4 import fig4
from .lab import lab

__all__ = ["ablations", "fig1", "fig3", "fig4", "lab"]
