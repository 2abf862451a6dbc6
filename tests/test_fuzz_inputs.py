"""Property-based tests (Hypothesis) of bad input as a class: random command lines, ``--set`` values, fingerprint
set headers and server bodies must end in one line and the project's own error (exit 2, ModelprintError), never a
traceback, and a command line must be refused before any work.

(a) command lines: random subsets and orders of each command's real options with random values (numbers out of
    range, empty strings, missing paths, folders, /proc paths, garbage files) run in-process through ``main()``;
    the work each command would start (training, generation, an evaluation, serving) is replaced by a stub, so a
    command line that reaches it was accepted: it must then hold only valid values, and one with a bad value must
    have been refused with exit 2 and one line on stderr.
(b) ``--set`` values for every registered fingerprint and watermark scheme: random JSON values for each setting
    build the scheme or raise InputError in one line.
(c) fingerprint set files whose metadata, tensor names, dtypes and shapes are mutated (and re-hashed, so the
    digest matches): ``FingerprintSet.load`` refuses them with IntegrityError/InputError or loads a set that its
    scheme's ``validate`` accepts.
(d) server bodies: the Open Inference Protocol client given random answers refuses them with a ModelprintError or
    returns a finite tensor of the right length; ``modelprint serve``'s app answers random request bodies with a
    4xx JSON error (or 200), never a 500.

Examples per test (``max_examples``) are kept small so that the file runs in well under a minute on two cores.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent))
from bad_inputs import Workspace  # noqa: E402

FAST = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Workspace:
    return Workspace(tmp_path_factory.mktemp("fuzz-inputs-"))


# ------------------------------------------------------------------------------------------------ (a) command lines
class _Reached(BaseException):
    """Raised by the stubs that stand for a command's work: the command line was accepted."""


def _reached(*args: Any, **kwargs: Any) -> Any:
    raise _Reached()


_MISSING = object()


#: The work of each command, replaced by :func:`_reached` while a command line runs.
STUBS = [
    ("modelprint.train", "train_new_model"), ("modelprint.protocol", "run_evaluation"),
    ("modelprint.protocol.owner", "build_owner_models"), ("modelprint.protocol.training_zoo", "build_training_zoo"),
    ("modelprint.demo", "run_demo"), ("modelprint.serving.server", "serve"), ("modelprint.integrity.signing", "new_key_files"),
    ("modelprint.watermarks.deepsigns", "DeepSigns.embed"), ("modelprint.kit.protect", "build_kit"), ("modelprint.kit.check", "verify_suspect"),
    ("modelprint.kit.scan", "run_jobs"),
]


def run_cli(argv: list[str]) -> tuple[str, int | None, list[str]]:
    """Run ``modelprint argv`` in-process with the work stubbed: ("reached" | "exit" | "traceback", code, stderr lines)."""
    import importlib

    from modelprint.cli import main

    from modelprint.fingerprints import SCHEMES

    targets: list[tuple[Any, str]] = [(cls, "generate") for cls in SCHEMES.values()]  # generation itself is the work
    for module_name, attribute in STUBS:
        owner: Any = importlib.import_module(module_name)
        *path, name = attribute.split(".")
        for part in path:
            owner = getattr(owner, part)
        targets.append((owner, name))
    saved = [(owner, name, owner.__dict__.get(name, _MISSING)) for owner, name in targets]
    for owner, name in targets:
        setattr(owner, name, _reached)
    err = io.StringIO()

    def overdue(signum: int, frame: Any) -> None:
        raise TimeoutError("a command line was still running after 60 s without reaching its work")

    previous = signal.signal(signal.SIGALRM, overdue)
    signal.alarm(60)  # under the whole suite on 2 cores a valid line may take 20 s before its work
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            main(argv)
        outcome: tuple[str, int | None] = ("exit", 0)
    except _Reached:
        outcome = ("reached", None)
    except SystemExit as exc:
        outcome = ("exit", exc.code if isinstance(exc.code, int) else 1)
    except BaseException as exc:  # noqa: BLE001 - what this test looks for
        return "traceback", None, [f"{type(exc).__name__}: {exc}"]
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        for owner, name, value in reversed(saved):
            if value is _MISSING:
                delattr(owner, name)
            else:
                setattr(owner, name, value)
    return outcome[0], outcome[1], [line for line in err.getvalue().splitlines() if line.strip()]


def _numbers(good: st.SearchStrategy, bad: list[str]) -> st.SearchStrategy:
    """(text, valid) pairs: good values, and bad ones (out of range, not numbers, empty)."""
    return st.one_of(good.map(lambda v: (str(v), True)), st.sampled_from(bad + ["", "nan", "inf", "-inf", "abc", "1e999"]).map(lambda v: (v, False)))


def _paths(*good: str, bad: tuple[str, ...] = ("{w}/none", "{dir}", "/proc/x/y", "{garbage}", "{text}", "")) -> st.SearchStrategy:
    return st.one_of(st.sampled_from(good).map(lambda v: (v, True)), st.sampled_from(bad).map(lambda v: (v, False)))


def _outputs(*good: str) -> st.SearchStrategy:
    return _paths(*good, bad=("{dir}", "/proc/x", "/proc/x/y", "{file}/sub", "", "/" + "n" * 300))


def _folders(good: str) -> st.SearchStrategy:
    """An output folder: a new one is good, a file, a folder under a file, /proc and nothing are bad."""
    return _paths(good, "{w}/new-folder/below", bad=("{file}", "{file}/sub", "/proc/x", "/proc/x/y"))  # "" is "." to typer


SEED = _numbers(st.integers(0, 2**40), ["-1", "18446744073709551616", "1.5"])
DEVICE = st.one_of(st.just(("cpu", True)), st.sampled_from(["cuda", "bogus", "", "cuda:7", "mps"]).map(lambda v: (v, False)))
DATA = st.one_of(st.sampled_from(["{data}", "digits"]).map(lambda v: (v, True)),
                 st.sampled_from(["{w}/nowhere", "{file}", "{data_garbage}", "{data_nothing}", "medmnist:", "medmnist:x@abc", "", "{dir}"]).map(lambda v: (v, False)))

#: Per command: the options that must be given (each a strategy of (value, valid)), and optional ones.
COMMANDS: dict[tuple[str, ...], tuple[dict[str, st.SearchStrategy], dict[str, st.SearchStrategy]]] = {
    ("train",): ({"--out": _outputs("{w}/t.safetensors", "{w}/new/t.safetensors")}, {
        "--data": DATA, "--width": _numbers(st.integers(1, 64), ["0", "-3"]), "--epochs": _numbers(st.integers(0, 50), ["-1"]),
        "--seed": SEED, "--lr": _numbers(st.floats(1e-4, 1.0), ["0", "-0.1"]), "--batch-size": _numbers(st.integers(1, 512), ["0"]),
        "--size": _numbers(st.integers(16, 64), ["0", "2", "4", "-1"]), "--channels": _numbers(st.just(3), ["0", "-1"]),
        "--arch": st.one_of(st.sampled_from(["resnet18", "vgg11_bn"]).map(lambda v: (v, True)), st.sampled_from(["nosuch", ""]).map(lambda v: (v, False))),
        "--device": DEVICE, "--augment": st.one_of(st.sampled_from(["crop", "flip", "crop,flip", ""]).map(lambda v: (v, True)), st.just(("bogus", False))),
    }),
    ("generate",): ({"--model": _paths("{model}"), "--out": _outputs("{w}/g.safetensors")}, {
        "--data": DATA, "--n": _numbers(st.integers(1, 50), ["0", "-1"]), "--seed": SEED, "--device": DEVICE,
        "--xi": _numbers(st.floats(1e-3, 0.5), ["0", "-1"]), "--lam": _numbers(st.floats(0, 10), ["-1"]),
        "--steps": _numbers(st.integers(0, 50), ["-1"]), "--tolerance": _numbers(st.floats(1e-3, 10), ["0", "-1"]),
        "--norm": st.one_of(st.sampled_from(["linf"]).map(lambda v: (v, True)), st.sampled_from(["l3", ""]).map(lambda v: (v, False))),
        "--pattern": st.one_of(st.sampled_from(["0,0", "0,0;0,1"]).map(lambda v: (v, True)), st.sampled_from(["a;b", "1,2,3", ";"]).map(lambda v: (v, False))),
        "--sign": _paths("{owner_key}", bad=("{w}/none.key", "{owner_pub}", "{garbage}", "{dir}")),
        "--set": st.one_of(st.sampled_from(["pattern=[[0,1]]", "xi=0.2"]).map(lambda v: (v, True)),
                           st.sampled_from(["pattern=[[0,0,0]]", "pattern=\"00\"", "pattern=[[0]]", "xi=\"a\"", "bogus=1", "seed=-1", "n=[1]", "x"]).map(lambda v: (v, False))),
    }),
    ("verify",): ({"--fingerprints": _paths("{fp}", bad=("{w}/none", "{dir}", "{garbage}", "{model}", "{fp_tampered}", "")),
                   "--suspect": _paths("{model}", bad=("{w}/none", "{dir}", "{garbage}", "{fp}", "{bomb}", ""))}, {
        "--records": _folders("{w}/records"), "--record": _outputs("{w}/r.json"), "--journal": _outputs("{w}/j.jsonl"),
        "--null": _paths("{w}/null-ok.json", bad=("{w}/none", "{model}", "{null_text}", "{null_empty}", "{null_strings}", "{dir}", "{w}/null-nan.json")),
        "--alpha": _numbers(st.floats(0.01, 0.5), ["0", "1.5"]), "--batch-size": _numbers(st.integers(1, 64), ["0"]),
        "--trusted-key": _paths("{w}/none", bad=("{owner_pub}", "{pub_garbage}", "{model}", "{dir}")).map(lambda p: (p[0], False)),  # the set is unsigned
        "--sign": _paths("{owner_key}", bad=("{w}/none", "{owner_pub}", "{garbage}")), "--device": DEVICE,
        "--mode": st.one_of(st.sampled_from(["white-box", "black-box"]).map(lambda v: (v, True)), st.just(("grey-box", False))),
    }),
    ("evaluate",): ({"--out": _folders("{w}/eval")}, {
        "--data": DATA, "--width": _numbers(st.integers(1, 32), ["0"]), "--repeats": _numbers(st.integers(1, 3), ["0"]),
        "--n": _numbers(st.integers(1, 100), ["0"]), "--device": DEVICE, "--zoo": _paths("{w}/zoo-ok.yaml", bad=("{w}/none", "{zoo_bad}", "{garbage}", "{dir}")),
        "--target": _paths("{model}", bad=("{w}/none", "{dir}", "{garbage}")), "--training-zoo": _folders("{w}/tz"),
        "--schemes": st.one_of(st.sampled_from(["saliency", "saliency,ipguard"]).map(lambda v: (v, True)), st.sampled_from(["nosuch", ",", "saliency,saliency"]).map(lambda v: (v, False))),
    }),
    ("owner-models",): ({"--target": _paths("{model}"), "--out": _folders("{w}/helpers")}, {
        "--data": DATA, "--epochs": _numbers(st.integers(1, 20), ["0"]), "--workers": _numbers(st.integers(1, 4), ["0"]), "--device": DEVICE,
    }),
    ("training-zoo",): ({"--target": _paths("{model}"), "--out": _folders("{w}/training")}, {
        "--data": DATA, "--size": _numbers(st.integers(2, 20), ["1", "0"]), "--epochs": _numbers(st.integers(1, 20), ["0"]), "--device": DEVICE,
    }),
    ("watermark", "embed"): ({"--model": _paths("{model}"), "--out": _outputs("{w}/marked.safetensors"), "--key": _outputs("{w}/wm.safetensors")}, {
        "--data": DATA, "--seed": SEED, "--epochs": _numbers(st.integers(1, 5), ["0"]), "--device": DEVICE,
        "--set": st.one_of(st.just(("bits=16", True)), st.sampled_from(["bits=\"a\"", "bits=0", "seed=-5", "bogus=1"]).map(lambda v: (v, False))),
        "--sign": _paths("{owner_key}", bad=("{w}/none", "{owner_pub}")),
    }),
    ("watermark", "verify"): ({"--key": _paths("{fp}", bad=("{w}/none", "{garbage}", "{dir}", "")).map(lambda p: (p[0], False)),  # no key is valid here
                               "--suspect": _paths("{model}")}, {
        "--records": _folders("{w}/records"), "--record": _outputs("{w}/r2.json"), "--null": _paths("{w}/null-ok.json"), "--device": DEVICE,
    }),
    ("keys", "new"): ({"--out": _paths("{w}/keys/fresh", "{dir}", bad=("{file}/sub", "/proc/x", "/proc/x/y", "/" + "n" * 300))}, {}),  # OUT.key, OUT.pub
    ("records", "check"): ({"RECORD": _paths("{record}", bad=("{w}/none", "{dir}", "{garbage}")), "--trusted-key": _paths("{owner_pub}")}, {
        # the workspace's record names no set and no suspect: any file given to compare with it is refused
        "--fingerprints": _paths("{fp}").map(lambda p: (p[0], False)), "--suspect": _paths("{model}").map(lambda p: (p[0], False)),
    }),
    ("serve",): ({"--model": _paths("{model}", bad=("{w}/none", "{dir}", "{garbage}", "{fp}", "{bomb}", ""))}, {
        "--port": _numbers(st.integers(0, 65535), ["70000", "-1"]), "--max-body-mb": _numbers(st.floats(0.1, 64), ["0", "-1"]),
        "--noise": _numbers(st.floats(0, 1), ["-1"]), "--round": _numbers(st.integers(0, 6), ["-1"]),
        "--guard-fpr": _numbers(st.floats(0.01, 0.5), ["0", "1", "2"]), "--guard-data": DATA, "--device": DEVICE,
    }),
    ("protect",): ({"--model": _paths("{model}", bad=("{w}/none", "{dir}", "{garbage}", "{fp}", "{bomb}", "")), "--out": _folders("{w}/kit"),
                    "--new-key": _paths("{w}/fresh-owner", bad=("{w}/owner", "{file}/sub/k"))}, {
        "--data": DATA, "--profile": _paths("fast", "strong", bad=("bogus", "")), "--n": _numbers(st.integers(1, 100), ["0"]),
        "--null-models": _numbers(st.integers(1, 500), ["0", "501"]), "--epochs": _numbers(st.integers(1, 20), ["0"]),
        "--schemes": _paths("ipguard,tafa", "tafa:images", bad=("bogus", ",", "tafa,tafa:default", "tafa:bogus")), "--device": DEVICE,
        "--watermark": _paths("backdoor", "deepsigns", "backdoor:fixll_spl", bad=("bogus", "csp", "usp", "backdoor:bogus", "")),
    }),
    ("check",): ({"--kit": _paths("{kit_ok}", bad=("{w}/none", "{dir}", "{file}", "{kit_garbage}", "{kit_unsigned}")),
                  "--suspect": _paths("{model}", bad=("{w}/none", "{dir}", "{garbage}", "{fp}", ""))}, {
        "--out": _folders("{w}/check"), "--alpha": _numbers(st.floats(0.001, 0.5), ["0", "1", "2"]), "--budget": _numbers(st.integers(0, 10**6), ["-1"]),
        "--batch-size": _numbers(st.integers(1, 256), ["0"]), "--mode": _paths("white-box", "black-box", bad=("grey-box",)),
        "--trusted-key": _paths("{owner_pub}", bad=("{stranger_pub}", "{pub_garbage}", "{w}/none")), "--device": DEVICE,
    }),
    ("scan",): ({"--kit": _paths("{kit_ok}", bad=("{w}/none", "{file}", "{kit_garbage}", "{kit_unsigned}")),
                 "--suspects": _paths("{suspects_ok}", bad=("{suspects_empty}", "{text}", "{w}/none"))}, {
        "--out": _folders("{w}/scan"), "--alpha": _numbers(st.floats(0.001, 0.5), ["0", "1", "2"]), "--workers": _numbers(st.integers(1, 4), ["0"]),
    }),
    ("demo",): ({"--out": _folders("{w}/demo")}, {"--epochs": _numbers(st.integers(1, 8), ["0"]), "--n": _numbers(st.integers(1, 100), ["0"]), "--device": DEVICE}),
}


@st.composite
def command_lines(draw: Any, command: tuple[str, ...]) -> tuple[list[str], bool]:
    """A command line of ``command``: its required options and a random subset of the others, in random order,
    each with a random good or bad value; returns the argv (with placeholders) and whether every value was good."""
    required, optional = COMMANDS[command]
    chosen = dict(required)
    chosen.update({k: optional[k] for k in draw(st.lists(st.sampled_from(sorted(optional)), unique=True, max_size=4))} if optional else {})
    pairs = [(name, draw(strategy)) for name, strategy in chosen.items()]
    pairs = draw(st.permutations(pairs))
    argv, valid = list(command), True
    for name, (value, good) in pairs:
        argv += [value] if name == "RECORD" else [name, value]
        valid = valid and good
    return argv, valid


def _extra_files(ws: Workspace) -> dict[str, str]:
    """Files the fuzzed command lines read beyond the bad-inputs workspace: a good null file and zoo spec, and a
    null file holding NaN."""
    folder = ws.folder
    if not (folder / "kit-ok").exists():  # a kit signed by the owner's key around the workspace's set, and a folder of one suspect
        from modelprint.fingerprints import FingerprintSet
        from modelprint.kit.file import FORMAT, sign_kit

        (folder / "kit-ok" / "sets").mkdir(parents=True)
        the_set = FingerprintSet.load(ws.paths["fp"]).sign(ws.paths["owner_key"])
        the_set.save(folder / "kit-ok" / "sets" / "fp.safetensors")
        kit = {"format": FORMAT, "target": {"sha256": the_set.target["sha256"]}, "null_models": {"count": 3},
               "sets": [{"name": "fp", "file": "sets/fp.safetensors", "sha256": the_set.sha256(), "scheme": the_set.scheme, "configuration": "default",
                         "null": {"white-box": [0.1, 0.2, 0.3], "black-box": [0.1, 0.2, 0.3]}}]}
        (folder / "kit-ok" / "kit.json").write_text(json.dumps(sign_kit(kit, ws.paths["owner_key"])))
        (folder / "suspects-ok").mkdir()
        shutil.copy(ws.paths["model"], folder / "suspects-ok" / "model.safetensors")
        ws.paths.update({"kit_ok": str(folder / "kit-ok"), "suspects_ok": str(folder / "suspects-ok")})
    if not (folder / "null-ok.json").exists():
        (folder / "null-ok.json").write_text("[0.1, 0.2, 0.3]")
        (folder / "null-nan.json").write_text("[0.1, NaN]")
        (folder / "zoo-ok.yaml").write_text(ZOO_SPEC)
    return ws.paths


#: A valid custom zoo spec.
ZOO_SPEC = "suspects:\n  - {name: ft, kind: positive, transform: finetune, seed: 1}\n  - {name: ind, kind: negative, transform: independent, seed: 2}\n"
#: Commands whose valid command lines may still be refused in one line (a combination the fuzzer does not model:
#: a journal of an earlier example, say); their bad lines must still be refused.
LENIENT = {"verify"}


def check_command(ws: Workspace, argv: list[str], valid: bool) -> None:
    paths = _extra_files(ws)
    concrete = [a.format(**paths) for a in argv]
    kind, code, lines = run_cli(concrete)
    assert kind != "traceback", f"{concrete}: {lines}"
    assert not any("Traceback" in line for line in lines), f"{concrete}: {lines}"
    if kind == "reached" or code == 0:
        assert valid, f"{concrete}: a bad value was accepted (the command went on to its work)"
        return
    assert not valid or argv[0] in LENIENT, f"{concrete}: a valid command line was refused: {lines}"
    assert code == 2 and len(lines) == 1 and lines[0].startswith("modelprint: error: "), f"{concrete}: exit {code}, stderr {lines}"


def _command_test(command: tuple[str, ...], examples: int):
    @settings(max_examples=examples, **FAST)
    @given(line=command_lines(command))
    def test(ws, line):
        check_command(ws, *line)

    test.__name__ = f"test_fuzzed_command_line_{'_'.join(command).replace('-', '_')}"
    return test


for _command, _examples in ((("train",), 25), (("generate",), 25), (("verify",), 15), (("evaluate",), 20), (("owner-models",), 12),
                            (("training-zoo",), 12), (("watermark", "embed"), 15), (("watermark", "verify"), 12), (("keys", "new"), 10),
                            (("records", "check"), 10), (("serve",), 20), (("demo",), 10),
                            (("protect",), 15), (("check",), 15), (("scan",), 10)):
    globals()[_command_test(_command, _examples).__name__] = _command_test(_command, _examples)


# --------------------------------------------------------------------------------------------- (b) --set values
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


def _all_schemes() -> dict[str, type]:
    from modelprint.fingerprints import SCHEMES
    from modelprint.watermarks import WATERMARKS

    return {**{f"fingerprint {k}": v for k, v in SCHEMES.items()}, **{f"watermark {k}": v for k, v in WATERMARKS.items()}}


@st.composite
def set_values(draw: Any) -> tuple[type, str, Any]:
    from dataclasses import fields

    schemes = _all_schemes()
    cls = schemes[draw(st.sampled_from(sorted(schemes)))]
    name = draw(st.sampled_from(sorted(f.name for f in fields(cls) if not f.name.startswith("_"))))
    return cls, name, draw(JSON)


SHAPED = st.one_of(st.lists(st.lists(st.integers(-3, 3), max_size=3), max_size=3), st.text(max_size=3),
                   st.lists(st.tuples(st.text(max_size=4), JSON), max_size=2), st.dictionaries(st.sampled_from(["xi", "n", "bogus", "pattern"]), JSON, max_size=2))


@st.composite
def shaped_values(draw: Any) -> tuple[type, str, Any]:
    """A value of a tuple-typed setting (``pattern``, ``black_box_settings``), of random shape."""
    from dataclasses import fields

    shaped = [(cls, f.name) for cls in _all_schemes().values() for f in fields(cls) if str(f.type).startswith("tuple")]
    cls, name = draw(st.sampled_from(shaped))
    return cls, name, draw(SHAPED)


@settings(max_examples=200, **FAST)
@given(case=st.one_of(set_values(), shaped_values()))
def test_a_set_value_builds_the_scheme_or_is_refused_in_one_line(case):
    from modelprint.errors import InputError

    cls, name, value = case
    text = f"{name}={json.dumps(value)}"  # as `--set` gives it
    try:
        scheme = cls.named("default", **cls.parse_settings([text]))
    except InputError as exc:
        assert "\n" not in str(exc) and str(exc), f"{cls.__name__} {text}: {exc!r}"
        return
    scheme.settings()  # an accepted value is stored and read back as JSON


# ---------------------------------------------------------------------------------------- (c) fingerprint headers
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.int8, torch.uint8, torch.bool]


@st.composite
def mutations(draw: Any) -> list[tuple[str, Any]]:
    """A few edits of a set file: a metadata part or setting replaced by random JSON or removed, a tensor renamed,
    removed, cast to another dtype or reshaped."""
    kinds = st.one_of(
        st.tuples(st.just("meta"), st.sampled_from(["scheme", "config", "task", "thresholds", "target", "stats", "extra"]), JSON),
        st.tuples(st.just("drop-meta"), st.sampled_from(["scheme", "config", "task", "thresholds"]), st.none()),
        st.tuples(st.just("setting"), st.sampled_from(["n", "pattern", "xi", "norm", "bb_score", "t_wb", "t_bb", "black_box_settings", "seed", "bogus"]), JSON),
        st.tuples(st.just("task"), st.sampled_from(["name", "tolerance", "metric"]), JSON),
        st.tuples(st.just("threshold"), st.sampled_from(["white_box", "black_box"]), JSON),
        st.tuples(st.just("rename"), st.sampled_from(["samples", "labels", "originals", "pattern"]), st.sampled_from(["samples", "labels", "x", "mode", "pairs"])),
        st.tuples(st.just("drop"), st.sampled_from(["samples", "labels", "originals", "pattern"]), st.none()),
        st.tuples(st.just("dtype"), st.sampled_from(["samples", "labels", "originals", "pattern"]), st.sampled_from(DTYPES)),
        st.tuples(st.just("shape"), st.sampled_from(["samples", "labels", "originals", "pattern"]), st.sampled_from(["flat", "first", "empty", "extra-dim", "double"])),
    )
    return draw(st.lists(kinds, min_size=1, max_size=3))


def _mutated_file(fingerprints: Any, edits: list[tuple[str, str, Any]], path: Path) -> Path:
    from safetensors.torch import save_file

    from modelprint.fingerprints import sets

    meta = json.loads(json.dumps(fingerprints._metadata()))
    tensors = {k: v.clone() for k, v in fingerprints.tensors.items()}
    for kind, name, value in edits:
        if kind == "meta":
            meta[name] = value
        elif kind == "drop-meta":
            meta.pop(name, None)
        elif kind in ("setting", "task", "threshold"):
            part = {"setting": "config", "task": "task", "threshold": "thresholds"}[kind]
            if isinstance(meta.get(part), dict):
                meta[part][name] = value
        elif name in tensors:
            tensor = tensors.pop(name)
            if kind == "rename":
                tensors[value] = tensor
            elif kind == "dtype":
                tensors[name] = tensor.to(value)
            elif kind == "shape":
                reshaped = {"flat": tensor.reshape(-1), "first": tensor[:1], "empty": tensor[:0], "extra-dim": tensor.unsqueeze(0),
                            "double": torch.cat([tensor, tensor])}[value]
                tensors[name] = reshaped.contiguous()
    meta_json = json.dumps(meta, sort_keys=True)
    digest = sets._content_digest(meta_json, tensors)  # re-hashed: the digest matches the edited content
    save_file(tensors, str(path), metadata={sets.FINGERPRINT_META_KEY: meta_json, sets.DIGEST_KEY: digest})
    return path


@settings(max_examples=100, **FAST)
@given(edits=mutations())
def test_an_edited_set_is_refused_or_valid(ws, edits):
    from modelprint.errors import InputError, IntegrityError
    from modelprint.fingerprints import FingerprintSet

    path = _mutated_file(ws.fingerprints, edits, ws.folder / "mutated.safetensors")
    try:
        loaded = FingerprintSet.load(path)
    except (IntegrityError, InputError) as exc:
        assert "\n" not in str(exc), f"{edits}: {exc!r}"
        return
    loaded.scheme_class(loaded.scheme).validate(loaded)  # a set that loads is one its scheme accepts


# --------------------------------------------------------------------------------------------- (d) server bodies
@pytest.fixture(scope="module")
def served():
    from modelprint.models import build_model
    from modelprint.serving.server import ServedModel
    from modelprint.tasks import Classification

    torch.manual_seed(0)
    return ServedModel("suspect", build_model("resnet18", num_outputs=10, width=4).eval(), Classification(), (3, 32, 32))


@pytest.fixture(scope="module")
def app_client(served):
    from fastapi.testclient import TestClient

    from modelprint.serving.server import create_app

    with TestClient(create_app(served), raise_server_exceptions=False) as client:
        yield client


@pytest.fixture(scope="module")
def good_answers(app_client):
    metadata = app_client.get("/v2/models/suspect").json()
    body = {"inputs": [{"name": "images", "shape": [2, 3, 32, 32], "datatype": "FP32", "data": torch.rand(2 * 3 * 32 * 32).tolist()}]}
    answer = app_client.post("/v2/models/suspect/infer", json=body).json()
    return metadata, answer


def _edit(document: Any, path: list[Any], value: Any) -> Any:
    """``document`` with the value at ``path`` (keys and indices, as far as they exist) replaced by ``value``."""
    if not path or not isinstance(document, (dict, list)):
        return value
    key, rest = path[0], path[1:]
    copy = dict(document) if isinstance(document, dict) else list(document)
    if isinstance(copy, dict) and key in copy or isinstance(copy, list) and isinstance(key, int) and 0 <= key < len(copy):
        copy[key] = _edit(copy[key], rest, value)
    return copy


ANSWER_PATHS = [["outputs"], ["outputs", 0], ["outputs", 0, "shape"], ["outputs", 0, "data"], ["outputs", 0, "datatype"], ["outputs", 0, "data", 0],
                ["outputs", 0, "name"], ["model_name"], []]
META_PATHS = [["inputs"], ["inputs", 0, "shape"], ["inputs", 0, "datatype"], ["outputs"], ["outputs", 0, "shape"], ["name"], ["platform"], []]


@st.composite
def server_answers(draw: Any) -> tuple[Any, Any, int]:
    """(metadata edit, answer edit, HTTP status): each edit a path and a random JSON value, or raw bytes."""
    def edit(paths: list[list[Any]]) -> Any:
        return draw(st.one_of(st.none(), st.tuples(st.sampled_from(paths), JSON), st.binary(max_size=40)))
    return edit(META_PATHS), edit(ANSWER_PATHS), draw(st.sampled_from([200, 200, 200, 400, 404, 422, 500, 503]))


@settings(max_examples=120, **FAST)
@given(case=server_answers())
def test_the_client_refuses_a_bad_answer_in_one_line(good_answers, case):
    import httpx

    from modelprint.errors import ModelprintError
    from modelprint.serving.client import OipClient

    metadata, answer = good_answers
    meta_edit, answer_edit, status = case

    def body(document: Any, edit: Any) -> bytes:
        if isinstance(edit, bytes):
            return edit
        return json.dumps(document if edit is None else _edit(document, *edit), allow_nan=True).encode()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(200, content=body(metadata, meta_edit), headers={"content-type": "application/json"})
        return httpx.Response(status, content=body(answer, answer_edit), headers={"content-type": "application/json"})

    try:
        client = OipClient("http://api", "suspect", transport=httpx.MockTransport(handler), retries=0, backoff=0.0, timeout=5)
        outputs = client(torch.rand(2, 3, 32, 32))
    except ModelprintError as exc:
        assert "\n" not in str(exc).strip(), repr(exc)
        return
    assert isinstance(outputs, torch.Tensor) and len(outputs) == 2 and bool(torch.isfinite(outputs.float()).all()), outputs


REQUEST_PATHS = [["inputs"], ["inputs", 0], ["inputs", 0, "shape"], ["inputs", 0, "datatype"], ["inputs", 0, "data"], ["inputs", 0, "data", 0],
                 ["inputs", 0, "name"], ["outputs"], ["parameters"], ["id"], []]


@settings(max_examples=120, **FAST)
@given(edit=st.one_of(st.tuples(st.sampled_from(REQUEST_PATHS), JSON), st.binary(max_size=60)))
def test_the_server_answers_a_bad_request_with_a_4xx(app_client, edit):
    good = {"inputs": [{"name": "images", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": [0.5] * (3 * 32 * 32)}]}
    content = edit if isinstance(edit, bytes) else json.dumps(_edit(good, *edit), allow_nan=True).encode()
    answer = app_client.post("/v2/models/suspect/infer", content=content, headers={"content-type": "application/json"})
    assert answer.status_code < 500, (edit, answer.status_code, answer.text[:200])
    if answer.status_code >= 400:
        assert isinstance(answer.json(), dict), answer.text[:200]
