"""Zoo specs, resumable builds and the executors, on a tiny data folder and a tiny target."""

import json

import pytest
import torch

from modelprint.data import load_data
from modelprint.errors import InputError
from modelprint.models import build_model, load_model, save_model
from modelprint.train import after_each_epoch
from modelprint.zoo import Independent
from modelprint.zoo import build as zoo_build
from modelprint.zoo.build import build_zoo
from modelprint.zoo.executors import run_jobs
from modelprint.zoo.spec import SuspectSpec, ZooSpec, paper_zoo, quick_zoo

from conftest import write_npz_folder

TRANSFORM_KINDS = {"finetune", "retrain", "weight_prune", "filter_prune", "distill", "extract", "independent"}


@pytest.fixture
def tiny_world(tmp_path):
    data = write_npz_folder(tmp_path / "data", n=32, size=16, classes=3)
    torch.manual_seed(0)
    target = build_model("resnet18", num_outputs=3, width=2, input_size=(16, 16))
    target.spec.info["data"] = str(data)
    path = save_model(target, tmp_path / "target.safetensors")
    spec = ZooSpec(
        (
            SuspectSpec("pruned", "positive", "weight_prune", {"ratio": 0.2, "recover_epochs": 0}, 1),
            SuspectSpec("tuned", "positive", "finetune", {"layers": "last", "epochs": 1}, 2),
            SuspectSpec("other", "negative", "independent", {"epochs": 1}, 3),
        )
    )
    return spec, path, str(data), tmp_path / "zoo"


def test_presets_hold_every_transform_kind():
    paper = paper_zoo(train_epochs=3)
    assert (len(paper.positives), len(paper.negatives)) == (21, 20)
    kinds = [s.transform for s in paper.positives]
    assert (kinds.count("weight_prune"), kinds.count("filter_prune"), kinds.count("distill"), kinds.count("extract")) == (5, 7, 4, 1)
    assert {s.transform for s in quick_zoo(train_epochs=3).suspects} == TRANSFORM_KINDS


def test_spec_files_and_bad_specs(tmp_path):
    spec = quick_zoo(train_epochs=2)
    (tmp_path / "zoo.json").write_text(json.dumps(spec.to_dict()))
    assert ZooSpec.from_file(tmp_path / "zoo.json") == spec
    (tmp_path / "zoo.yaml").write_text("suspects:\n  - {name: a, kind: positive, transform: weight_prune, params: {ratio: 0.3}, seed: 1}\n")
    assert ZooSpec.from_file(tmp_path / "zoo.yaml").suspects[0].params == {"ratio": 0.3}
    with pytest.raises(InputError, match="unknown transform"):
        SuspectSpec("a", "positive", "melt")
    with pytest.raises(InputError, match="bad parameters"):
        SuspectSpec("a", "positive", "weight_prune", {"ratio": 0.3, "colour": 1})
    with pytest.raises(InputError, match="duplicate"):
        ZooSpec((SuspectSpec("a", "positive", "weight_prune"), SuspectSpec("a", "negative", "independent")))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(InputError, match="cannot parse"):
        ZooSpec.from_file(tmp_path / "bad.json")


def test_interrupted_build_redoes_no_finished_suspect(tiny_world, monkeypatch):
    spec, target, data, out = tiny_world
    real = zoo_build.build_suspect
    built = []

    def crash_on_third(job):
        if len(built) == 2:
            raise KeyboardInterrupt  # the build is killed while the third suspect is in flight
        built.append(job["suspect"]["name"])
        return real(job)

    monkeypatch.setattr(zoo_build, "build_suspect", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        build_zoo(spec, target, data, out, progress=False)
    finished = json.loads((out / "manifest.json").read_text())["suspects"]
    assert [s["name"] for s in finished] == ["pruned", "tuned"]
    mtimes = {p.name: p.stat().st_mtime_ns for p in (out / "suspects").glob("*.safetensors")}

    rebuilt = []
    monkeypatch.setattr(zoo_build, "build_suspect", lambda job: rebuilt.append(job["suspect"]["name"]) or real(job))
    manifest = build_zoo(spec, target, data, out, progress=False)
    assert rebuilt == ["other"]  # only the unfinished suspect
    assert {s["name"]: s["reused"] for s in manifest["suspects"]} == {"pruned": True, "tuned": True, "other": False}
    assert all((out / "suspects" / name).stat().st_mtime_ns == t for name, t in mtimes.items())
    # Provenance in every file: transform, parameters, seed, parent hash (not for the negative), test metric.
    records = {s["name"]: s for s in manifest["suspects"]}
    assert records["pruned"]["params"]["ratio"] == 0.2 and records["pruned"]["seed"] == 1
    assert 0.0 <= records["other"]["test_metric"] <= 1.0

    # A transform whose algorithm was revised records its revision in the recipe; the others' recipes are unchanged.
    assert "revision" not in load_model(out / "suspects" / "pruned.safetensors").spec.info["recipe"]

    # A changed spec entry rebuilds that suspect only.
    rebuilt.clear()
    changed = ZooSpec((SuspectSpec("pruned", "positive", "weight_prune", {"ratio": 0.3, "recover_epochs": 0}, 1), *spec.suspects[1:]))
    build_zoo(changed, target, data, out, progress=False)
    assert rebuilt == ["pruned"]


def test_a_revised_transform_rebuilds_what_its_old_revision_built(tiny_world):
    _, target, data, out = tiny_world
    spec = ZooSpec((SuspectSpec("filters", "positive", "filter_prune", {"ratio": 0.25, "recover_epochs": 0}, 1),))
    build_zoo(spec, target, data, out, progress=False)
    path = out / "suspects" / "filters.safetensors"
    model = load_model(path)
    assert model.spec.info["recipe"]["revision"] == 2
    del model.spec.info["recipe"]["revision"]  # what revision 1 wrote
    save_model(model, path)
    manifest = build_zoo(spec, target, data, out, progress=False)
    assert manifest["suspects"][0]["reused"] is False
    assert build_zoo(spec, target, data, out, progress=False)["suspects"][0]["reused"] is True


def _square(job):
    return {"name": job["name"], "value": job["x"] ** 2}


def test_pool_executor_runs_every_job_once():
    jobs = [{"name": str(i), "x": i} for i in range(4)]
    seen = []
    results = run_jobs(_square, jobs, executor="pool", workers=2, on_result=seen.append)
    assert sorted(r["value"] for r in results) == [0, 1, 4, 9] and len(seen) == 4
    with pytest.raises(InputError, match="executor"):
        run_jobs(_square, jobs, executor="slurm")


@pytest.mark.slow(25)
def test_ray_executor_builds_the_same_suspects(tiny_world, tmp_path):
    pytest.importorskip("ray")
    spec, target, data, out = tiny_world
    torch.set_num_threads(1)  # the same arithmetic as a one-thread Ray worker
    try:
        local = build_zoo(spec, target, data, tmp_path / "local", progress=False)
    finally:
        torch.set_num_threads(2)
    remote = build_zoo(spec, target, data, tmp_path / "ray", executor="ray", workers=2, progress=False)
    for a, b in zip(local["suspects"], remote["suspects"]):
        assert a["name"] == b["name"] and a["sha256"] == b["sha256"] and a["test_metric"] == b["test_metric"]


def test_checkpoints_are_the_epochs_weights_kept_beside_the_suspect_and_resumed(tiny_world):
    """checkpoints=2: a model trained for 3 epochs leaves its epoch-1 and epoch-2 weights (each the weights the run
    had then: reproduced by training 1 and 2 epochs from the same seed), listed in the manifest; a second build
    reuses all of it; a build without checkpoints is another recipe."""
    _, path, data, out = tiny_world
    spec = ZooSpec((SuspectSpec("other", "negative", "independent", {"epochs": 3}, 3), SuspectSpec("pruned", "positive", "weight_prune", {"ratio": 0.2, "recover_epochs": 0}, 1)))
    manifest = build_zoo(spec, path, data, out, executor="inprocess", checkpoints=2, progress=False)
    other, pruned = manifest["suspects"]
    assert [c["epoch"] for c in other["checkpoints"]] == [1, 2] and pruned["checkpoints"] == []  # pruning without recovery trains nothing
    first = load_model(other["checkpoints"][0]["path"])
    assert first.spec.info["checkpoint_of"] == "other" and first.spec.info["sha256"] == other["checkpoints"][0]["sha256"]
    final = load_model(other["path"])
    assert first.spec.info["sha256"] != final.spec.info["sha256"]
    target = load_model(path)
    splits = load_data(data, channels=target.spec.channels, size=target.spec.input_size[0])
    states, threads = [], torch.get_num_threads()
    torch.set_num_threads(1)  # as the executor builds: the same sums, bit for bit
    try:  # the epoch-1 checkpoint is the weights after the first epoch of the same seeded run
        with after_each_epoch(lambda m: states.append({k: v.clone() for k, v in m.state_dict().items()})):
            again = Independent(epochs=3).apply(target, splits.train, seed=3)
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(states[0][k], v) for k, v in first.state_dict().items())
    assert all(torch.equal(again.state_dict()[k], v) for k, v in final.state_dict().items())
    again_manifest = build_zoo(spec, path, data, out, executor="inprocess", checkpoints=2, progress=False)
    assert all(r["reused"] for r in again_manifest["suspects"])
    plain = build_zoo(spec, path, data, out, executor="inprocess", progress=False)
    assert not plain["suspects"][0]["reused"] and "checkpoints" not in plain["suspects"][0]
