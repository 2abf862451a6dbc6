"""Scores of a zoo's suspects under one fingerprint set or watermark key, cached per suspect so that an interrupted
evaluation resumes."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..access import WhiteBox
from ..fingerprints import FingerprintSet
from ..fingerprints.base import Scheme
from ..models import load_model
from .summary import MODE_KEYS


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def verify_all(scheme: Scheme, fingerprints: FingerprintSet, suspects: list[dict], cache_path: Path, progress: bool) -> dict[str, dict]:
    """Matching scores of every suspect (manifest records) in every mode of the scheme, with the scheme's p-values
    where it gives them; finished suspects are cached in ``cache_path`` (resume), for this set (or key) only."""
    key = fingerprints.sha256()
    cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    if cache.get("fingerprints_sha256") != key:
        cache = {"fingerprints_sha256": key, "suspects": {}}
    for record in tqdm(suspects, desc=f"verify {scheme.name}", unit="suspect", disable=not progress, leave=False):
        cached = cache["suspects"].get(record["name"])
        if cached and cached.get("sha256") == record["sha256"]:
            continue
        access = WhiteBox(load_model(record["path"]))
        results = {MODE_KEYS[mode]: scheme.verify(access, fingerprints, mode=mode) for mode in scheme.modes}
        cache["suspects"][record["name"]] = {
            "sha256": record["sha256"],
            **{f"ms_{field}": r.matching_score for field, r in results.items()},
            **{f"queries_{field}": r.queries for field, r in results.items()},
            **{f"p_{field}": r.p_value for field, r in results.items() if r.p_value is not None},
            "seconds": sum(r.elapsed_s for r in results.values()),
        }
        write_json(cache_path, cache)
    return cache["suspects"]
