"""The shared test vectors of ``../shared/vectors`` (another folder with ``ICWS_VECTORS``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VECTORS = Path(os.environ.get("ICWS_VECTORS", ROOT.parent / "shared" / "vectors"))


def load_vectors(name: str) -> list[dict[str, Any]]:
    """The records of ``<VECTORS>/<name>.json``; a missing file fails the test run."""
    path = VECTORS / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(f"shared test vectors not found at {path} (set ICWS_VECTORS)")
    records: list[dict[str, Any]] = json.loads(path.read_text())["records"]
    return records
