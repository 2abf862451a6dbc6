"""Bad inputs across the command line and the Python API, and what modelprint answers to each.

Every case must end with one line on stderr and exit code 2 (command line) or with the project's own exception
type, :class:`~modelprint.errors.ModelprintError` (Python API): never a traceback, never silent acceptance.
``tests/test_bad_inputs.py`` runs every case; ``python tests/bad_inputs.py`` prints the table and, with
``--write docs/evidence.md``, puts it in that page between its markers.

The files the cases read (tiny untrained models, a fingerprint set, good and broken data folders, a fake
prediction server) are made in a temporary folder in a few seconds; nothing is downloaded. The set comes from an
untrained target, so a fresh model of its architecture matches it: the null-suspect check would refuse it before
the input each case is about is read, and it is switched off while the cases run (degenerate sets have their own
tests, ``tests/test_degenerate_sets.py``).
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

START, END = "<!-- bad-inputs:start -->", "<!-- bad-inputs:end -->"


@dataclass
class Outcome:
    """What one bad input produced."""

    ok: bool
    code: str  # "exit 2", "InputError", "traceback: KeyError", "accepted", ...
    message: str


@dataclass
class Case:
    """One bad input: a command line (``argv`` with ``{name}`` placeholders for workspace files) or an API call."""

    surface: str
    what: str
    argv: list[str] | None = None
    call: Callable[["Workspace"], Any] | None = None

    def run(self, ws: "Workspace") -> Outcome:
        from modelprint.fingerprints import nulls

        check, nulls.check_not_degenerate = nulls.check_not_degenerate, lambda *args, **kwargs: []
        try:
            return _run_cli([a.format(**ws.paths) for a in self.argv]) if self.argv is not None else _run_api(self.call, ws)
        finally:
            nulls.check_not_degenerate = check


class _Accepted(BaseException):
    """Raised in place of work that only accepted input would reach (serving forever, a long run)."""


def _accepted(*args: Any, **kwargs: Any) -> None:
    raise _Accepted("the input was accepted: the command went on to serve")


def _alarm(signum: int, frame: Any) -> None:
    raise _Accepted(f"the input was accepted: the command was still working after {CASE_SECONDS} s")


CASE_SECONDS = 60


def _run_cli(argv: list[str]) -> Outcome:
    import signal

    import modelprint.serving.server
    from modelprint.cli import main

    err, out = io.StringIO(), io.StringIO()
    serve, modelprint.serving.server.serve = modelprint.serving.server.serve, _accepted
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(CASE_SECONDS)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            main(argv)
        code: int | None = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except _Accepted as exc:
        return Outcome(False, "accepted", str(exc))
    except BaseException as exc:  # noqa: BLE001 - a traceback is what this table looks for
        return Outcome(False, f"traceback: {type(exc).__name__}", _last_line(traceback.format_exc()))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        modelprint.serving.server.serve = serve
    lines = [line for line in err.getvalue().splitlines() if line.strip()]
    one_line = len(lines) == 1 and lines[0].startswith("modelprint: error: ")
    message = lines[-1] if lines else "(nothing on stderr)"
    return Outcome(code == 2 and one_line, f"exit {code}" + ("" if one_line or code == 0 else f", {len(lines)} lines"), message)


def _run_api(call: Callable[["Workspace"], Any] | None, ws: "Workspace") -> Outcome:
    from modelprint.errors import ModelprintError

    try:
        call(ws)  # type: ignore[misc]
    except ModelprintError as exc:
        return Outcome("\n" not in str(exc), type(exc).__name__, str(exc))
    except Exception as exc:  # noqa: BLE001
        return Outcome(False, f"traceback: {type(exc).__name__}", _last_line(str(exc)))
    return Outcome(False, "accepted", "(no error)")


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


# -------------------------------------------------------------------------------------------------- workspace
class Workspace:
    """The files the cases read, made in ``folder``; ``paths`` maps placeholder names to them."""

    def __init__(self, folder: Path) -> None:
        import torch
        from safetensors.torch import save_file

        from modelprint.fingerprints import SaliencyFingerprint
        from modelprint.models import build_model, save_model

        self.folder = folder
        p: dict[str, str] = {"w": str(folder)}
        torch.manual_seed(0)
        self.model = build_model("resnet18", num_outputs=10, width=4).eval()
        p["model"] = str(save_model(self.model, folder / "model.safetensors"))
        torch.manual_seed(1)
        p["other"] = str(save_model(build_model("resnet18", num_outputs=10, width=4), folder / "other.safetensors"))
        p["three"] = str(save_model(build_model("resnet18", num_outputs=3, width=4), folder / "three.safetensors"))
        p["small"] = str(save_model(build_model("resnet18", num_outputs=10, width=4, input_size=16), folder / "small.safetensors"))
        images = torch.rand(16, 3, 32, 32)
        labels = self.model(images).argmax(dim=1).detach()
        self.fingerprints = SaliencyFingerprint(n=4, steps=1).generate(self.model, images, labels)
        p["fp"] = str(self.fingerprints.save(folder / "fp.safetensors"))
        raw = (folder / "fp.safetensors").read_bytes()
        (folder / "fp-tampered.safetensors").write_bytes(raw[:-5] + bytes([raw[-5] ^ 1]) + raw[-4:])
        (folder / "fp-cut.safetensors").write_bytes(raw[: len(raw) // 2])
        p["fp_tampered"], p["fp_cut"] = str(folder / "fp-tampered.safetensors"), str(folder / "fp-cut.safetensors")
        model_raw = (folder / "model.safetensors").read_bytes()
        (folder / "model-cut.safetensors").write_bytes(model_raw[: len(model_raw) // 3])
        p["model_cut"] = str(folder / "model-cut.safetensors")
        # A model file whose metadata declares a huge width and holds one tiny tensor (the "width bomb").
        spec = json.loads(self.model.spec.to_json())
        spec["arch_kwargs"]["width"] = 600
        save_file({"x": torch.zeros(1)}, str(folder / "bomb.safetensors"), metadata={"modelprint.model": json.dumps(spec), "format_version": "1"})
        p["bomb"] = str(folder / "bomb.safetensors")
        nan_model = build_model("resnet18", num_outputs=10, width=4)
        with torch.no_grad():
            nan_model.net.fc.weight[0, 0] = float("nan")
        p["nan_model"] = str(save_model(nan_model, folder / "nan-model.safetensors"))
        (folder / "notes.txt").write_text("not a model\n")
        (folder / "garbage.bin").write_bytes(np.random.default_rng(0).bytes(4096))
        p["text"], p["garbage"] = str(folder / "notes.txt"), str(folder / "garbage.bin")
        (folder / "a-file").write_text("x")
        p["file"] = str(folder / "a-file")
        (folder / "adir").mkdir()
        p["dir"] = str(folder / "adir")
        p.update(self._data_folders(folder))
        (folder / "null-text.json").write_text("no json here")
        (folder / "null-empty.json").write_text("[]")
        (folder / "null-strings.json").write_text('["a", "b"]')
        p.update({k: str(folder / f"null-{k[5:]}.json") for k in ("null_text", "null_empty", "null_strings")})
        (folder / "zoo.yaml").write_text("suspects: [unclosed\n")
        p["zoo_bad"] = str(folder / "zoo.yaml")
        (folder / "zoo-budget0.yaml").write_text("suspects: [{name: thief, kind: positive, transform: extract, params: {budget: 0}}]\n")
        p["zoo_budget0"] = str(folder / "zoo-budget0.yaml")
        (folder / "zoo-thief.yaml").write_text("suspects: [{name: thief, kind: positive, transform: extract}, {name: other, kind: negative, transform: independent}]\n")
        p["zoo_thief"] = str(folder / "zoo-thief.yaml")
        p.update(self._answer_keys(folder, images, labels))
        (folder / "journal-empty-line.jsonl").write_text("{}\n")
        (folder / "journal-damaged.jsonl").write_text('{"time": 1}\n{not json\n{"time": 2}\n')
        p["journal_braces"], p["journal_damaged"] = str(folder / "journal-empty-line.jsonl"), str(folder / "journal-damaged.jsonl")
        p.update(self._keys(folder))
        (folder / "kit-garbage").mkdir()
        (folder / "kit-garbage" / "kit.json").write_text("{not json")
        (folder / "kit-unsigned").mkdir()
        (folder / "kit-unsigned" / "kit.json").write_text(json.dumps({"format": "modelprint-kit/1", "sets": []}))
        (folder / "suspects-empty").mkdir()
        (folder / "suspects-one").mkdir()
        (folder / "suspects-one" / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
        p.update({name.replace("-", "_"): str(folder / name) for name in ("kit-garbage", "kit-unsigned", "suspects-empty", "suspects-one")})
        p.update(self._ecosystem(folder, self.model))
        self.paths = p

    @staticmethod
    def _ecosystem(folder: Path, model: Any) -> dict[str, str]:
        """Files an owner brings: weights carrying a pickled object, weights of another architecture, a file that is
        not ONNX, image folders of one class and of undecodable images, JSON API mappings that are not."""
        import torch
        from PIL import Image

        class Payload:
            def __reduce__(self):
                return (print, ("a pickled payload ran",))

        torch.save({**model.net.state_dict(), "x": Payload()}, folder / "payload.pt")
        torch.save(model.net.state_dict(), folder / "own-weights.pt")
        import timm

        torch.save(timm.create_model("test_resnet", num_classes=10).state_dict(), folder / "timm-weights.pt")
        (folder / "fake.onnx").write_bytes(b"\x08\x07not an onnx graph")
        (folder / "one-class" / "cats").mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (8, 8), (i, 0, 0)).save(folder / "one-class" / "cats" / f"{i}.png")
        for name in ("a", "b"):
            (folder / "broken-images" / name).mkdir(parents=True)
            for i in range(5):
                (folder / "broken-images" / name / f"{i}.jpg").write_bytes(b"\xff\xd8 not a jpeg")
        (folder / "api-bad.yaml").write_text("send: carrier-pigeon\n")
        (folder / "api-list.yaml").write_text("- path\n")
        return {"payload_pt": str(folder / "payload.pt"), "own_weights": str(folder / "own-weights.pt"), "timm_weights": str(folder / "timm-weights.pt"), "fake_onnx": str(folder / "fake.onnx"),
                "one_class": str(folder / "one-class"), "broken_images": str(folder / "broken-images"),
                "api_bad": str(folder / "api-bad.yaml"), "api_list": str(folder / "api-list.yaml")}

    @staticmethod
    def _keys(folder: Path) -> dict[str, str]:
        """Two key pairs, a record signed by the first, and the same record with one character changed."""
        from modelprint.integrity.signing import new_key_files, sign_record

        owner_key, owner_pub = new_key_files(folder / "owner")
        _, stranger_pub = new_key_files(folder / "stranger")
        record = sign_record({"record_version": 1, "matching_score": 0.9}, owner_key)
        (folder / "record.json").write_text(json.dumps(record))
        (folder / "record-edited.json").write_text(json.dumps({**record, "matching_score": 0.8}))
        (folder / "pub-garbage.pub").write_text("not a key\n")
        return {"owner_key": str(owner_key), "owner_pub": str(owner_pub), "stranger_pub": str(stranger_pub),
                "record": str(folder / "record.json"), "record_edited": str(folder / "record-edited.json"),
                "pub_garbage": str(folder / "pub-garbage.pub")}

    @staticmethod
    def _answer_keys(folder: Path, images: Any, labels: Any) -> dict[str, str]:
        """A CSP key of another model than ``model``, one edited to a margin that could change a top-1, and USP keys
        of ``model`` edited to signs that are not signs and to a lattice the map's features do not fit."""
        from modelprint.data import ImageDataset
        from modelprint.models import load_model
        from modelprint.watermarks import CSP, USP, WatermarkKey

        def edited(key: WatermarkKey, config: dict | None = None, **tensors: Any) -> WatermarkKey:
            return WatermarkKey(scheme=key.scheme, config={**key.config, **(config or {})}, task=key.task, tensors={**key.tensors, **tensors},
                                thresholds=dict(key.thresholds), target=dict(key.target), stats=dict(key.stats))

        other = load_model(folder / "other.safetensors")
        _, key = CSP(inputs=8).embed(other, ImageDataset(images, labels))
        _, usp = USP(inputs=8, steps=5).embed(load_model(folder / "model.safetensors"), ImageDataset(images, labels))
        return {"csp_other": str(key.save(folder / "csp-other.safetensors")),
                "csp_margin": str(edited(key, {"margin": 1.0}).save(folder / "csp-margin.safetensors")),
                "usp_sign": str(edited(usp, sign=usp.tensors["sign"] * 0.5).save(folder / "usp-sign.safetensors")),
                "usp_grid": str(edited(usp, {"grid": 2}).save(folder / "usp-grid.safetensors"))}

    @staticmethod
    def _data_folders(folder: Path) -> dict[str, str]:
        rng = np.random.default_rng(0)
        made: dict[str, str] = {}

        def write(name: str, **arrays: Any) -> None:
            target = folder / name
            target.mkdir()
            for split in ("train", "test"):
                np.savez(target / f"{split}.npz", **arrays)
            made[name] = str(target)

        good = rng.integers(0, 256, (24, 32, 32, 3), dtype=np.uint8)
        write("data", images=good, labels=rng.integers(0, 10, 24))
        write("data_empty", images=np.zeros((0, 32, 32, 3), np.uint8), labels=np.zeros(0, np.int64))
        write("data_nolabels", images=good)
        write("data_2d", images=np.zeros((24, 32), np.uint8), labels=np.zeros(24, np.int64))
        write("data_mismatch", images=good, labels=np.zeros(5, np.int64))
        nan = rng.random((24, 32, 32, 3)).astype(np.float32)
        nan[0, 0, 0, 0] = np.nan
        write("data_nan", images=nan, labels=np.zeros(24, np.int64))
        write("data_negative", images=good, labels=-np.ones(24, np.int64))
        write("data_strings", images=good, labels=np.array(["cat"] * 24))
        write("data_four", images=rng.integers(0, 256, (24, 32, 32, 4), dtype=np.uint8), labels=np.zeros(24, np.int64))
        garbage = folder / "data_garbage"
        garbage.mkdir()
        for split in ("train", "test"):
            (garbage / f"{split}.npz").write_bytes(rng.bytes(2048))
        made["data_garbage"] = str(garbage)
        empty_zip = folder / "data_nothing"
        empty_zip.mkdir()
        for split in ("train", "test"):
            np.savez(empty_zip / f"{split}.npz")
        made["data_nothing"] = str(empty_zip)
        zip_signature = folder / "data_zipsig"  # a zip signature and nothing of a zip after it
        zip_signature.mkdir()
        for split in ("train", "test"):
            (zip_signature / f"{split}.npz").write_bytes(b"PK\x03\x04" + bytes(60))
        made["data_zipsig"] = str(zip_signature)
        return made


def table(results: list[tuple[Case, Outcome]]) -> str:
    """The Markdown table of every case and its outcome (paths shown relative to the workspace)."""
    rows = ["| # | where | bad input | outcome | message |", "|---|---|---|---|---|"]
    for number, (case, outcome) in enumerate(results, start=1):
        message = re.sub(r"/\S*?/bad-inputs-[^/\s]*/", "", outcome.message)
        message = message.replace("modelprint: error: ", "").replace("|", "\\|")
        mark = outcome.code if outcome.ok else f"**{outcome.code}**"
        rows.append(f"| {number} | {case.surface} | {case.what.replace('|', chr(92) + '|')} | {mark} | {message[:160]} |")
    return "\n".join(rows)


def run_all(folder: Path) -> list[tuple[Case, Outcome]]:
    from cases_bad_inputs import CASES  # the case list, beside this file

    ws = Workspace(folder)
    return [(case, case.run(ws)) for case in CASES]


def main() -> None:
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", type=Path, help="a Markdown page whose bad-inputs section is replaced by the table")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bad-inputs-") as tmp:
        results = run_all(Path(tmp))
    text = table(results)
    failed = sum(not outcome.ok for _, outcome in results)
    summary = f"{len(results)} bad inputs: {len(results) - failed} refused with one line, {failed} not"
    print(text + "\n\n" + summary)
    if args.write:
        page = args.write.read_text()
        if START not in page or END not in page:
            raise SystemExit(f"{args.write}: no {START} ... {END} markers")
        head, rest = page.split(START, 1)
        _, tail = rest.split(END, 1)
        args.write.write_text(f"{head}{START}\n{summary}.\n\n{text}\n{END}{tail}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    main()
