"""Operations (issue 42, part 5): an interrupted build leaves no process behind, a folder's manifest keeps every
model built in it, and messages name only files that exist."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from modelprint.models import build_model, load_model, save_model
from modelprint.protocol.owner import build_owner_models, check_manifest, load_helpers, read_manifest
from modelprint.protocol.training_zoo import training_helpers
from modelprint.zoo.build import build_zoo
from modelprint.zoo.executors import run_jobs
from modelprint.zoo.spec import SuspectSpec, ZooSpec

from conftest import write_npz_folder

# --- processes, read from /proc (psutil may not be installed) ---------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state first), or None when there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()


def _started(pid: int) -> str | None:
    fields = _stat(pid)
    return fields[19] if fields else None  # starttime: tells a process from a later one that got its PID


def _alive(pid: int, started: str | None) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z" and fields[19] == started


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found |= {int(child) for child in task.read_text().split()}
        except OSError:
            pass
    return found


def _descendants(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        for child in _children(todo.pop()) - found:
            found.add(child)
            todo.append(child)
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@pytest.fixture(scope="module")
def digits_target(tmp_path_factory) -> Path:
    """An untrained ResNet-18 of width 2 for digits: enough to start a build around."""
    torch.manual_seed(0)
    return save_model(build_model("resnet18", num_outputs=10, width=2), tmp_path_factory.mktemp("target") / "target.safetensors")


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads processes from /proc")
@pytest.mark.parametrize("signum, code, line", [(signal.SIGINT, 130, "modelprint: interrupted (SIGINT)"),
                                                (signal.SIGTERM, 143, "modelprint: terminated (SIGTERM)")], ids=["SIGINT", "SIGTERM"])
def test_interrupted_owner_models_leaves_no_process(tmp_path, digits_target, signum, code, line):
    """owner-models on a 2-worker pool, signalled while its workers train: it ends within seconds with one line
    and the signal's code, and so do its workers and multiprocessing's resource tracker (every PID it had)."""
    command = [sys.executable, "-m", "modelprint", "owner-models", "--target", str(digits_target), "--data", "digits", "--out", str(tmp_path / "owner"),
               "--references", "2", "--surrogates", "0", "--calibration", "0", "--epochs", "500", "--workers", "2"]
    with open(tmp_path / "stdout", "w") as out, open(tmp_path / "stderr", "w") as err:  # files: a lingering worker holds no pipe open
        process = subprocess.Popen(command, stdout=out, stderr=err, cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"})
    seen: dict[int, str | None] = {}  # every descendant PID ever seen, with its start time
    try:
        deadline = time.monotonic() + 120
        while True:
            seen.update({pid: _started(pid) for pid in _descendants(process.pid) if pid not in seen})
            workers = [pid for pid in seen if "spawn_main" in _cmdline(pid)]
            trackers = [pid for pid in seen if "resource_tracker" in _cmdline(pid)]
            if len(workers) >= 2 and trackers:
                break
            assert process.poll() is None, (tmp_path / "stderr").read_text()
            assert time.monotonic() < deadline, "the pool workers never started"
            time.sleep(0.05)
        time.sleep(1.0)  # the workers import torch and start their jobs
        seen.update({pid: _started(pid) for pid in _descendants(process.pid) if pid not in seen})
        signalled = time.monotonic()
        process.send_signal(signum)
        try:
            returncode = process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            returncode = None
        ended = time.monotonic() - signalled
        while any(_alive(pid, started) for pid, started in seen.items()) and time.monotonic() - signalled < 30:
            time.sleep(0.05)
        left = {pid: _cmdline(pid) for pid, started in seen.items() if _alive(pid, started)}
        assert not left, f"still running {ended:.0f} s after the signal: {left}"
        assert returncode == code and ended < 15
        lines = (tmp_path / "stderr").read_text().strip().splitlines()
        assert lines[-1] == line and not any("leaked" in text for text in lines), lines
        json.loads((tmp_path / "owner" / "manifest.json").read_text())  # what a rerun resumes from
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for pid, started in seen.items():  # only PIDs this test started
            if _alive(pid, started):
                os.kill(pid, signal.SIGKILL)


def _slow_or_failing(job: dict) -> dict:
    """A pool job (module level: pickled by name): sleep, or fail."""
    if job["fail"]:
        raise RuntimeError("this job fails")
    time.sleep(job["seconds"])
    return job


def test_pool_stops_its_workers_when_the_build_stops():
    """A failed job, or an exception raised by the caller's callback (as a signal handler's would be), ends the
    pool's workers at once instead of after the jobs in flight and queued."""
    jobs = [{"fail": True, "seconds": 0}, *({"fail": False, "seconds": 60} for _ in range(3))]
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="this job fails"):
        run_jobs(_slow_or_failing, jobs, executor="pool", workers=2)
    assert time.monotonic() - start < 30 and not multiprocessing.active_children()

    def interrupt(result: dict) -> None:
        raise KeyboardInterrupt

    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run_jobs(_slow_or_failing, [{"fail": False, "seconds": 0}, *({"fail": False, "seconds": 60} for _ in range(3))], executor="pool", workers=2,
                 on_result=interrupt)
    assert time.monotonic() - start < 30 and not multiprocessing.active_children()


# --- the manifest keeps every model built in its folder -----------------------------------------------------------


@pytest.fixture
def tiny(tmp_path):
    """A data folder and two tiny targets for it (another target makes other models)."""
    data = write_npz_folder(tmp_path / "data", n=24, size=16, classes=3)
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        paths.append(save_model(build_model("resnet18", num_outputs=3, width=2, input_size=(16, 16)), tmp_path / f"target{seed}.safetensors"))
    return str(data), paths


def _names(folder: Path) -> list[str]:
    return [r["name"] for r in json.loads((folder / "manifest.json").read_text())["suspects"]]


def test_owner_manifest_keeps_the_roles_a_later_run_does_not_read(tiny, tmp_path):
    """A run that reads fewer roles (ConferAE reads no calibration models) keeps the others in the manifest, so a
    configuration that reads them finds them; the models of another target are not listed."""
    data, (target, other) = tiny
    out = tmp_path / "owner"
    build_owner_models({"references": 1, "calibration": 1}, target, data, out, epochs=1, progress=False)
    returned = build_owner_models({"references": 1}, target, data, out, epochs=1, progress=False)
    assert [r["name"] for r in returned["suspects"]] == ["reference_0"]  # what this run reads
    assert _names(out) == ["reference_0", "calibration_0"]  # what the folder holds
    manifest = read_manifest(out)
    check_manifest(manifest, target_sha256=load_model(target).spec.info["sha256"], data=data, needed={"references": 1, "calibration": 1}, where=str(out))
    assert [len(models) for models in load_helpers(manifest).values()] == [1, 0, 1]
    (out / "suspects" / "calibration_0.safetensors").unlink()  # a model whose file is gone is not listed
    build_owner_models({"references": 1}, target, data, out, epochs=1, progress=False)
    assert _names(out) == ["reference_0"]
    build_owner_models({"references": 1, "calibration": 1}, target, data, out, epochs=1, progress=False)
    build_owner_models({"references": 1}, other, data, out, epochs=1, progress=False)  # another target: its own models only
    assert _names(out) == ["reference_0"]


def test_zoo_manifest_keeps_the_suspects_of_an_earlier_spec(tiny, tmp_path):
    """The mechanism is build_zoo's, for every folder it writes (evaluation zoo, owner folder, training zoo)."""
    data, (target, _) = tiny
    pruned = SuspectSpec("pruned", "positive", "weight_prune", {"ratio": 0.2, "recover_epochs": 0}, 1)
    cut = SuspectSpec("cut", "positive", "weight_prune", {"ratio": 0.5, "recover_epochs": 0}, 2)
    build_zoo(ZooSpec((pruned, cut)), target, data, tmp_path / "zoo", progress=False)
    manifest = build_zoo(ZooSpec((cut,)), target, data, tmp_path / "zoo", progress=False, role="training")
    assert [r["name"] for r in manifest["suspects"]] == ["cut"]
    assert _names(tmp_path / "zoo") == ["cut", "pruned"]
    assert json.loads((tmp_path / "zoo" / "manifest.json").read_text())["suspects"][1]["earlier_spec"] is True


# --- messages name only files that exist --------------------------------------------------------------------------


def test_a_folder_read_from_elsewhere_names_its_own_files(tiny, tmp_path, monkeypatch):
    """A manifest records paths relative to the directory its build ran in: read from another directory (or after
    the folder moved), the helper and training models are the folder's, not a missing file of the same name."""
    data, (target, _) = tiny
    monkeypatch.chdir(tmp_path)
    build_zoo(ZooSpec((SuspectSpec("reference_0", "negative", "weight_prune", {"ratio": 0.2, "recover_epochs": 0}, 5000),
                       SuspectSpec("surrogate_0", "positive", "weight_prune", {"ratio": 0.3, "recover_epochs": 0}, 6000))),
              target, data, Path("owner"), progress=False)
    record = json.loads(Path("owner/manifest.json").read_text())["suspects"][0]
    record["checkpoints"] = [{"file": "reference_0@e1.safetensors", "epoch": 1, "sha256": "x", "test_metric": 0.0, "path": "owner/checkpoints/reference_0@e1.safetensors"}]
    (tmp_path / "owner" / "checkpoints").mkdir()
    shutil.copy(tmp_path / "owner" / "suspects" / "reference_0.safetensors", tmp_path / "owner" / "checkpoints" / "reference_0@e1.safetensors")
    manifest = json.loads(Path("owner/manifest.json").read_text())
    manifest["suspects"][0] = record
    Path("owner/manifest.json").write_text(json.dumps(manifest))
    shutil.move(tmp_path / "owner", tmp_path / "moved")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    manifest = read_manifest(tmp_path / "moved")
    assert all(Path(r["path"]).is_file() for r in manifest["suspects"])
    assert [len(models) for models in load_helpers(manifest).values()] == [1, 1, 0]
    for record in manifest["suspects"]:
        record["kind"] = "negative" if record["name"].startswith("reference") else "positive"
    models, _ = training_helpers(manifest, 2, checkpoints=True)
    assert [len(models["references"]), len(models["surrogates"])] == [2, 1]
