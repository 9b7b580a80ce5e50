"""Sample photographs that ship inside scikit-learn (china.jpg, flower.jpg): real images every
installation has, for the explorer's gallery and the benchmarks."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def gallery() -> dict[str, Path]:
    """The sample photographs, by file name (found without importing scikit-learn, which is slow to
    import)."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        return {}
    folder = Path(spec.origin).parent / "datasets" / "images"
    return {p.name: p for p in sorted(folder.glob("*.jpg"))}
