"""The query journal: every batch a black-box access sent to a suspect and what came back, as JSON lines.

It is two things at once. As a *query log* it is part of the verification record: each line holds the time, the
batch size, the SHA-256 of the inputs and of the outputs, so a third party can check which images were asked and
what was answered. As a *journal* it makes an interrupted verification resumable: the answers are stored with the
SHA-256 of each image, and a rerun that asks the same images again is answered from the file instead of the API.

Each line is written, flushed and fsync'ed before the next batch is sent, so at most the batch in flight is lost
when the process or the server dies; a truncated last line (a crash mid-write) is ignored on reading.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime, timezone
from pathlib import Path

import torch

from .errors import IntegrityError
from .hashing import tensors_sha256


def image_key(image: torch.Tensor) -> str:
    """SHA-256 of one image as float32 bytes and shape: the key an answer is stored under."""
    return tensors_sha256({"image": image.detach().float()})


class QueryJournal:
    """An append-only JSON-lines file of the batches sent and their answers.

    Args:
        path: the file; created (with its folder) on the first answer, read back when it exists.

    Attributes:
        path: the file.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._answers: dict[str, torch.Tensor] = {}
        self._log: list[dict] = []
        if self.path.exists():
            self._read()

    def _read(self) -> None:
        text = self.path.read_text()
        rows = text.split("\n")
        for number, row in enumerate(rows, start=1):
            if not row.strip():
                continue
            try:
                entry = json.loads(row)
            except json.JSONDecodeError:
                if number == len(rows):  # the last line, cut short by a crash mid-write: its batch is asked again
                    self._truncate_to(text.rfind("\n") + 1)
                    return
                raise IntegrityError(f"{self.path}: line {number} is not JSON; the query journal was damaged") from None
            outputs = torch.tensor(entry["outputs"], dtype=getattr(torch, entry["dtype"]))
            self._remember(entry, outputs)

    def _truncate_to(self, size: int) -> None:
        with open(self.path, "r+b") as handle:
            handle.truncate(size)

    def __len__(self) -> int:
        """Number of images answered."""
        return len(self._answers)

    def lookup(self, key: str) -> torch.Tensor | None:
        """The stored answer for an image key, or None."""
        return self._answers.get(key)

    def record(self, keys: list[str], images: torch.Tensor, outputs: torch.Tensor, *, seconds: float) -> None:
        """Append one answered batch and make it durable before returning."""
        outputs = outputs.detach().cpu()
        entry = {
            "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "batch_size": len(keys),
            "seconds": round(seconds, 6),
            "inputs_sha256": tensors_sha256({"inputs": images.detach().float()}),
            "outputs_sha256": tensors_sha256({"outputs": outputs}),
            "image_sha256": keys,
            "dtype": str(outputs.dtype).removeprefix("torch."),
            "outputs": outputs.tolist(),  # float32 -> Python float is exact, so a resumed run reads the same bits
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as handle:
            handle.write(json.dumps(entry) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        self._remember(entry, outputs)

    def _remember(self, entry: dict, outputs: torch.Tensor) -> None:
        for key, answer in zip(entry["image_sha256"], outputs):
            self._answers[key] = answer
        self._log.append({k: entry[k] for k in ("time", "batch_size", "seconds", "inputs_sha256", "outputs_sha256")})

    @property
    def lines(self) -> int:
        """Number of batches in the file."""
        return len(self._log)

    def log(self) -> list[dict]:
        """The query log: per batch, its time, size, seconds and the SHA-256 of its inputs and outputs."""
        return list(self._log)

    def digest(self) -> str | None:
        """SHA-256 of the file's bytes (None before the first answer): the query log's identity in a record."""
        if not self.path.exists():
            return None
        return hashlib.sha256(self.path.read_bytes()).hexdigest()
