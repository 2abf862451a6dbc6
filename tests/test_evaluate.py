"""The evaluation protocol end to end on a tiny data folder and a tiny zoo: report.json, the plots, report.html, and
resuming a finished run without redoing its work.

Under pytest-xdist the tests that read or extend the one finished run (the ``world`` fixture) share a worker
(``xdist_group("evaluate_world")``), as do the two owner-model tests; the MetaV and watermark tests make runs of their
own from the same data (``inputs``), so they go to whichever worker is free."""

import json

import numpy as np
import pytest

from modelprint.cli import main
from modelprint.fingerprints import FingerprintSet
from modelprint.watermarks import WatermarkKey

from conftest import write_npz_folder


def run_cli(argv):
    try:
        main(argv)
    except SystemExit as exc:
        assert exc.code in (0, None), f"exit code {exc.code}"


#: The tests that read or extend the finished run of ``world`` (one worker builds it once).
WORLD = pytest.mark.xdist_group("evaluate_world")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """The data folder, the zoo and the evaluation's arguments (nothing run yet)."""
    base = tmp_path_factory.mktemp("evaluate")
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 96)
    images = rng.integers(0, 60, (96, 16, 16, 3), dtype=np.uint8)
    for i, label in enumerate(labels):  # a learnable signal: a bright quadrant per class
        r, c = divmod(int(label), 2)
        images[i, r * 8 : r * 8 + 8, c * 8 : c * 8 + 8] += 150
    data = write_npz_folder(base / "data", images=images, labels=labels)
    zoo = {
        "suspects": [
            {"name": "pruned", "kind": "positive", "transform": "weight_prune", "params": {"ratio": 0.2, "recover_epochs": 0}, "seed": 1},
            {"name": "filtered", "kind": "positive", "transform": "filter_prune", "params": {"ratio": 0.125, "recover_epochs": 0}, "seed": 2},
            {"name": "tuned", "kind": "positive", "transform": "finetune", "params": {"layers": "all", "epochs": 1}, "seed": 3},
            {"name": "other_a", "kind": "negative", "transform": "independent", "params": {"epochs": 2}, "seed": 4},
            {"name": "other_b", "kind": "negative", "transform": "independent", "params": {"epochs": 2}, "seed": 5},
        ]
    }
    (base / "zoo.json").write_text(json.dumps(zoo))
    argv = ["evaluate", "--data", str(data), "--arch", "resnet18", "--width", "4", "--epochs", "3", "--zoo", str(base / "zoo.json"),
            "--repeats", "2", "--n", "6", "--out", str(base / "run")]
    return base, argv


@pytest.fixture
def fewer_steps(monkeypatch):
    """The compared schemes' default configurations with fewer optimisation steps on these 16x16 images (IPGuard
    1000 -> 100, LTRC 200 -> 50): `--schemes` runs every scheme but the first in its default configuration."""
    from modelprint.fingerprints.ipguard import IPGuard
    from modelprint.fingerprints.ltrc import LTRC

    monkeypatch.setattr(IPGuard, "task_settings", {"default": {"classification": {"steps": 100}}})
    monkeypatch.setattr(LTRC, "task_settings", {"default": {"classification": {"steps": 50}}})


@pytest.fixture(scope="module")
def world(inputs):
    """The finished evaluation run of ``inputs`` (base/run)."""
    base, argv = inputs
    run_cli(argv)
    return base, argv


@WORLD
@pytest.mark.slow(90)  # the group's whole run
def test_report_json_holds_the_protocol_figures(world):
    base, _ = world
    report = json.loads((base / "run" / "report.json").read_text())
    for key in ("aruc", "auc"):
        for mode in ("white_box", "black_box"):
            figure = report[key][mode]
            assert len(figure["values"]) == 2 and 0 <= figure["mean"] <= 1 and figure["std"] >= 0
    assert {s["name"] for s in report["suspects"]} == {"pruned", "filtered", "tuned", "other_a", "other_b"}
    for suspect in report["suspects"]:
        assert suspect["kind"] in ("positive", "negative")
        assert 0 <= suspect["ms_white_box"] <= 1 and 0 <= suspect["ms_black_box"] <= 1
        assert suspect["test_metric"] is not None
    assert set(report["per_transform"]) == {"weight_prune", "filter_prune", "finetune", "independent"}
    for key in ("acc", "psnr_db", "ssim", "dr_feature_squeezing", "dr_deepsvdd"):
        assert len(report["stealth"][key]["values"]) == 2
    assert report["stealth"]["acc"]["mean"] == 1.0  # label invariance: changed samples are never kept
    assert {"target_s", "zoo_s", "generation_s", "verification_s"} <= set(report["timings_s"])
    assert report["config"]["repeats"] == 2


@WORLD
def test_report_html_embeds_the_plots(world):
    base, _ = world
    run = base / "run"
    for name in ("curves.png", "scores.png", "gallery.png"):
        assert (run / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (run / "report.html").read_text()
    assert page.count("src='data:image/png;base64,") == 3
    assert "filter_prune" in page and "ARUC" in page


@WORLD
def test_a_finished_run_started_again_redoes_nothing(world, capsys):
    base, argv = world
    run = base / "run"
    before = {p.name: p.stat().st_mtime_ns for p in run.rglob("*") if p.suffix in (".safetensors", ".json") and p.name not in ("report.json", "manifest.json")}
    run_cli(argv)
    after = {p.name: p.stat().st_mtime_ns for p in run.rglob("*") if p.suffix in (".safetensors", ".json") and p.name not in ("report.json", "manifest.json")}
    assert before == after
    report = json.loads((run / "report.json").read_text())
    assert report["timings_s"]["zoo_s"] < 5


@pytest.mark.xdist_group("evaluate_owner")
@pytest.mark.slow(80)  # with the next test
def test_owner_models_are_built_and_used(inputs):
    """--references and --calibration: the owner's models are trained once, the penalty and the per-sample
    thresholds use them, and the report states their number and cost."""
    base, argv = inputs
    out = base / "run_owner"
    settings = ["--set", "beta=1", "--set", "wb_threshold=per_sample", "--set", "bb_threshold=per_sample"]
    run_cli([*argv[: argv.index("--repeats")], "--repeats", "1", "--n", "6", "--out", str(out), "--references", "1", "--calibration", "1", *settings])
    report = json.loads((out / "report.json").read_text())
    assert {k: report["owner_models"][k] for k in ("references", "surrogates", "calibration")} == {"references": 1, "surrogates": 0, "calibration": 1}
    assert report["owner_models"]["build_seconds"] > 0
    assert sorted(p.name for p in (out / "owner" / "suspects").glob("*.safetensors")) == ["calibration_0.safetensors", "reference_0.safetensors"]
    fingerprints = FingerprintSet.load(out / "saliency" / "fingerprints-0.safetensors")
    assert fingerprints.tensors["t_white_box"].shape == (6,) and fingerprints.tensors["t_black_box"].shape == (6,)
    assert len(fingerprints.config["reference_sha256"]) == 1 and len(fingerprints.config["calibration_sha256"]) == 1


@pytest.mark.xdist_group("evaluate_owner")
def test_owner_models_then_generate_make_the_set_the_evaluation_makes(inputs, capsys):
    """`modelprint owner-models` + `generate --scheme saliency --set ... --owner-models DIR` give exactly the set that
    the evaluation made with the same helper models and seed; a folder for another target, or one missing a role
    the configuration reads, is refused in one line before anything is generated."""
    import torch

    from conftest import run_cli as run_cli_captured

    base, argv = inputs
    out = base / "run_owner"  # made by test_owner_models_are_built_and_used with 1 reference and 1 calibration model
    if not (out / "saliency" / "fingerprints-0.safetensors").is_file():
        test_owner_models_are_built_and_used(inputs)
    data, target = argv[argv.index("--data") + 1], str(out / "target.safetensors")  # the target that evaluation trained
    helpers = base / "helpers"
    code, _, err = run_cli_captured(["owner-models", "--target", target, "--data", data, "--out", str(helpers),
                                     "--references", "1", "--surrogates", "0", "--calibration", "1", "--epochs", "3"], capsys)
    assert code == 0, err
    settings = ["--set", "beta=1", "--set", "wb_threshold=per_sample", "--set", "bb_threshold=per_sample"]
    made = base / "generated.safetensors"
    code, _, err = run_cli_captured(["generate", "--model", target, "--data", data, "--scheme", "saliency", *settings, "--n", "6",
                                     "--seed", "0", "--owner-models", str(helpers), "--out", str(made)], capsys)
    assert code == 0, err
    generated, evaluated = FingerprintSet.load(made), FingerprintSet.load(out / "saliency" / "fingerprints-0.safetensors")
    assert generated.config == evaluated.config and generated.thresholds == evaluated.thresholds
    assert set(generated.tensors) == set(evaluated.tensors)
    assert all(torch.equal(generated.tensors[k], evaluated.tensors[k]) for k in generated.tensors)
    # The same settings without the folder, or with a folder missing the calibration model: one line, nothing written.
    code, _, err = run_cli_captured(["generate", "--model", target, "--data", data, *settings, "--out", str(base / "x.safetensors")], capsys)
    assert code == 2 and "modelprint owner-models" in err and len(err.strip().splitlines()) == 1
    fewer = base / "fewer"
    run_cli_captured(["owner-models", "--target", target, "--data", data, "--out", str(fewer), "--references", "1", "--surrogates", "0",
                      "--calibration", "0", "--epochs", "3"], capsys)
    code, _, err = run_cli_captured(["generate", "--model", target, "--data", data, *settings, "--owner-models", str(fewer),
                                     "--out", str(base / "x.safetensors")], capsys)
    assert code == 2 and "calibration: 0 of 1" in err and not (base / "x.safetensors").exists()
    other = base / "other-target.safetensors"
    run_cli_captured(["train", "--data", data, "--arch", "resnet18", "--width", "4", "--epochs", "1", "--seed", "9", "--out", str(other)], capsys)
    code, _, err = run_cli_captured(["generate", "--model", str(other), "--data", data, *settings, "--owner-models", str(helpers),
                                     "--out", str(base / "x.safetensors")], capsys)
    assert code == 2 and "made for target" in err


@WORLD
def test_several_schemes_meet_the_same_zoo(world, fewer_steps):
    """--schemes saliency,ipguard on a finished run: the zoo and the saliency sets are reused, each scheme gets its
    block (its own queries per verification), the headline is the first, and report.html compares them."""
    base, argv = world
    run_cli([*argv, "--schemes", "saliency,ipguard"])
    run = base / "run"
    report = json.loads((run / "report.json").read_text())
    assert list(report["schemes"]) == ["saliency", "ipguard"] and report["scheme_name"] == "saliency"
    assert report["timings_s"]["zoo_s"] < 5  # reused
    saliency, ipguard = report["schemes"]["saliency"], report["schemes"]["ipguard"]
    assert saliency["aruc"] == report["aruc"]  # the headline is the first scheme's block
    assert saliency["queries"]["black_box"] == 2 * 6 and ipguard["queries"]["black_box"] == 6
    assert ipguard["target_scores"]["ms_black_box"]["mean"] == 1.0  # labelled by the target itself
    assert set(ipguard["per_transform"]) == set(saliency["per_transform"])
    assert (run / "ipguard" / "fingerprints-1.safetensors").is_file() and all((run / f"compare-{m}.png").is_file() for m in ("white_box", "black_box"))
    assert all(set(s["schemes"]) == {"saliency", "ipguard"} for s in report["suspects"])
    page = (run / "report.html").read_text()
    assert "Schemes compared" in page and "ARUC white-box: " in page and "Per kind of suspect: " in page


@WORLD
def test_tafa_and_ltrc_join_the_comparison(world, fewer_steps):
    """TAFA (3 score queries a pair) and LTRC (1 label query a sample) on the same finished run: their blocks, the
    target matching its own sets, and stealth figures without PSNR (generated from noise, no originals)."""
    base, argv = world
    run_cli([*argv, "--schemes", "saliency,tafa,ltrc"])
    report = json.loads((base / "run" / "report.json").read_text())
    assert list(report["schemes"]) == ["saliency", "tafa", "ltrc"] and report["timings_s"]["zoo_s"] < 5
    tafa, ltrc = report["schemes"]["tafa"], report["schemes"]["ltrc"]
    assert tafa["queries"]["black_box"] == 3 * 6 and ltrc["queries"]["black_box"] == 6
    for block in (tafa, ltrc):
        assert block["target_scores"]["ms_white_box"]["mean"] == 1.0
        assert "psnr_db" not in block["stealth"]


@WORLD
def test_a_set_made_before_a_setting_existed_is_reused(world):
    """A set whose stored settings lack one added later (at its default) is the set the scheme makes now: reused,
    not made again; a set whose stored settings differ is made again."""
    base, argv = world
    path = base / "run" / "saliency" / "fingerprints-0.safetensors"
    if not path.is_file():
        run_cli(argv)
    old = FingerprintSet.load(path)
    old.config.pop("cam_direction")
    old.stats["scheme_repr"] = old.stats["scheme_repr"].replace("cam_direction='value', ", "")  # as printed then
    old.save(path)
    before = path.read_bytes()
    run_cli(argv)
    assert path.read_bytes() == before
    changed = FingerprintSet.load(path)  # as if made with 51 steps
    changed.stats["scheme_repr"] = changed.stats["scheme_repr"].replace("steps=50,", "steps=51,")
    changed.save(path)
    run_cli(argv)
    assert "steps=50," in FingerprintSet.load(path).stats["scheme_repr"] and path.read_bytes() != before


@pytest.mark.xdist_group("evaluate_metav")  # a run of its own: any worker
@pytest.mark.slow(50)
def test_metav_learns_from_a_training_zoo_that_generate_and_verify_share(inputs, capsys, untrained_sets_allowed):  # a 4-model zoo: a toy verifier
    """--schemes metav: the owner's training zoo is built (with checkpoints) beside the evaluation zoo and its cost
    reported; `training-zoo` + `generate --training-zoo` make exactly the evaluation's set; the evidence record
    names the training zoo; without the zoo, or with an evaluation zoo that shares its seeds, one line and exit 2."""
    import torch

    from conftest import run_cli as run_cli_captured

    base, argv = inputs
    out = base / "run_metav"
    settings = ["--set", "training_models=4", "--set", "steps=20", "--set", "hidden=8"]
    cut = argv.index("--repeats")
    run_cli([*argv[:cut], "--repeats", "1", "--n", "6", "--out", str(out), "--schemes", "metav", *settings])
    report = json.loads((out / "report.json").read_text())
    assert report["training_zoo"]["models"] == 4 and report["training_zoo"]["positives"] == 2 and report["training_zoo"]["checkpoints"] >= 2
    metav = report["schemes"]["metav"]
    assert metav["queries"]["black_box"] == 6 and metav["target_scores"]["ms_black_box"]["mean"] > 0.5
    evaluated = FingerprintSet.load(out / "metav" / "fingerprints-0.safetensors")
    assert len(evaluated.config["training_zoo_sha256"]) == 64 and len(evaluated.config["reference_sha256"]) == 2
    assert "training zoo: 2 pirated and 2 independent models" in (out / "report.html").read_text()
    manifest = json.loads((out / "training_zoo" / "manifest.json").read_text())
    assert manifest["role"] == "training" and all(r["seed"] >= 8000 for r in manifest["suspects"])

    data, target = argv[argv.index("--data") + 1], str(out / "target.safetensors")
    zoo = base / "training_zoo"
    code, stdout_text, err = run_cli_captured(["training-zoo", "--target", target, "--data", data, "--out", str(zoo), "--size", "4", "--epochs", "3"], capsys)
    assert code == 0 and "2 pirated and 2 independent models" in stdout_text, err
    made = base / "metav.safetensors"
    code, _, err = run_cli_captured(["generate", "--model", target, "--data", data, "--scheme", "metav", *settings, "--n", "6", "--seed", "0",
                                     "--training-zoo", str(zoo), "--out", str(made)], capsys)
    assert code == 0, err
    generated = FingerprintSet.load(made)
    assert generated.config == evaluated.config and set(generated.tensors) == set(evaluated.tensors)
    assert all(torch.equal(generated.tensors[k], evaluated.tensors[k]) for k in generated.tensors)
    suspect = next(s for s in report["suspects"] if s["kind"] == "positive")
    record = base / "metav-record.json"
    code, _, err = run_cli_captured(["verify", "--fingerprints", str(made), "--suspect", str(out / "zoo" / "suspects" / f"{suspect['name']}.safetensors"),
                                     "--records", str(base / "records"), "--record", str(record)], capsys)
    assert code == 0, err
    assert json.loads(record.read_text())["fingerprints"]["config"]["training_zoo_sha256"] == evaluated.config["training_zoo_sha256"]

    code, _, err = run_cli_captured(["generate", "--model", target, "--data", data, "--scheme", "metav", "--out", str(base / "x.safetensors")], capsys)
    assert code == 2 and "modelprint training-zoo" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli_captured(["generate", "--model", target, "--data", data, "--scheme", "tafa", "--training-zoo", str(zoo), "--out", str(base / "x.safetensors")], capsys)
    assert code == 2 and "drop --training-zoo" in err and not (base / "x.safetensors").exists()
    clash = json.loads((base / "zoo.json").read_text())
    clash["suspects"][0]["seed"] = 8000  # the training zoo's first pirated copy
    (base / "clash.json").write_text(json.dumps(clash))
    code, _, err = run_cli_captured(["evaluate", "--data", data, "--arch", "resnet18", "--width", "4", "--epochs", "3", "--zoo", str(base / "clash.json"),
                                     "--n", "6", "--out", str(base / "run_clash"), "--schemes", "metav", *settings], capsys)
    assert code == 2 and "shares seeds [8000]" in err and not (base / "run_clash" / "zoo").exists()


@pytest.mark.xdist_group("evaluate_watermark")  # a run of its own: any worker
@pytest.mark.slow(40)
def test_a_watermark_meets_the_same_negatives_and_the_transforms_of_its_marked_model(inputs, capsys, fewer_steps):
    """--watermark deepsigns: the host is marked, the zoo's positives and the two attacks on watermarks are made from
    the marked model, the host and the zoo's independent models are the negatives, every suspect gets the scheme's
    p-value, and the report states fidelity and verdict rates; a second run reuses everything."""
    from conftest import run_cli as run_cli_captured

    base, argv = inputs
    out = base / "run_watermark"
    cut = argv.index("--repeats")
    args = [*argv[:cut], "--repeats", "1", "--n", "4", "--out", str(out), "--schemes", "ipguard", "--watermark", "deepsigns,backdoor:fixll_spl",
            "--watermark-set", "deepsigns.epochs=20", "--watermark-set", "deepsigns.keys=12", "--watermark-set", "backdoor.seeds=3", "--ambiguity-keys", "3",
            "--watermark-set", "deepsigns.bits=16"]
    run_cli(args)
    report = json.loads((out / "report.json").read_text())
    block = report["watermarks"]["deepsigns"]
    names = {s["name"]: s for s in block["suspects"]}
    assert {"overwrite", "fine_prune", "pruned", "tuned", "host", "other_a"} <= set(names) and names["host"]["kind"] == "negative"
    key = WatermarkKey.load(out / "deepsigns" / "key-0.safetensors")
    manifest = json.loads((out / "deepsigns" / "zoo-0" / "manifest.json").read_text())
    assert manifest["target"]["sha256"] == key.target["sha256"] != key.config["host_sha256"]  # the zoo descends from the marked model
    assert {r["name"] for r in manifest["suspects"]} == {"pruned", "filtered", "tuned", "overwrite", "fine_prune"}
    cache = json.loads((out / "deepsigns" / "verification-0.json").read_text())
    assert all(0 < entry["p_white_box"] <= 1 and 0 < entry["p_black_box"] <= 1 for entry in cache["suspects"].values())
    assert cache["suspects"]["host"]["queries_black_box"] == 12
    assert block["per_transform"]["overwrite"]["kind"] == "positive" and set(block["fidelity"]) >= {"test_metric_change", "kl_host_to_marked", "penultimate_distance"}
    assert block["verdicts"]["black_box"]["alpha"] == 0.05
    assert "Watermark deepsigns" in (out / "report.html").read_text() and (out / "watermarks.png").is_file()
    # the backdoor in its FixLL+SPL mode beside it: 3 chains of 4 links (the data's 4 classes), one query per trigger
    backdoor = report["watermarks"]["backdoor:fixll_spl"]
    cache = json.loads((out / "backdoor-fixll_spl" / "verification-0.json").read_text())
    assert cache["suspects"]["host"]["queries_black_box"] == 12 and backdoor["aruc"]["white_box"] is None is not backdoor["aruc"]["black_box"]
    assert backdoor["fidelity"]["last_layer_change"]["mean"] == 0.0  # FixLL
    assert {"top1_agreement", "total_weight_change"} <= set(backdoor["fidelity"]) and len(backdoor["projection"]["host"]) == len(backdoor["projection"]["marked"])
    for mode, counts in (("black_box", backdoor["ambiguity"]["black_box"]), ("white_box", block["ambiguity"]["white_box"])):
        assert counts["marked_trials"] == 3 and counts["negatives_trials"] == 3 * 3, (mode, counts)  # 3 forged keys; the host and 2 independent models
    ambiguity = json.loads((out / "backdoor-fixll_spl" / "ambiguity-0.json").read_text())
    assert set(ambiguity["models"]) == {"marked", "host", "other_a", "other_b"}
    page = (out / "report.html").read_text()
    assert (out / "fidelity-backdoor-fixll_spl.png").is_file() and "ambiguity test" in page and "Watermarks compared" in page
    stamp = (out / "deepsigns" / "zoo-0" / "suspects" / "overwrite.safetensors").stat().st_mtime
    code, stdout_text, err = run_cli_captured(args, capsys)
    assert code == 0 and "Watermarks" in stdout_text, err
    assert (out / "deepsigns" / "zoo-0" / "suspects" / "overwrite.safetensors").stat().st_mtime == stamp  # reused, not rebuilt
    code, _, err = run_cli_captured([*args[:-2], "--watermark-set", "seed=3"], capsys)
    assert code == 2 and "seed is the repeat index" in err
    code, _, err = run_cli_captured([*args[:-2], "--watermark-set", "backdoor.seed=3"], capsys)
    assert code == 2 and "seed is the repeat index" in err
    code, _, err = run_cli_captured([*args[: args.index("--watermark") + 1], "deepsigns", *args[args.index("--watermark") + 2 :]], capsys)
    assert code == 2 and "which this run does not evaluate" in err
