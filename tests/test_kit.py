"""The owner's workflow: ``protect`` makes a signed kit, ``check`` verifies a suspect with every set and combines the
verdicts with a stated false-positive rate, ``scan`` ranks many suspects."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelprint.errors import InputError, IntegrityError
from modelprint.fingerprints import FingerprintSet
from modelprint.integrity.signing import load_private_key, new_key_files
from modelprint.journal import QueryJournal
from modelprint.kit.combine import combine, rank_p_value
from modelprint.kit.file import read_kit, sign_kit
from modelprint.models import save_model
from modelprint.probing import probe_count
from modelprint.access import default_spliced
from modelprint.serving.server import ServedModel, ServerThread, create_app
from modelprint.tasks import Classification

from conftest import run_cli

NULLS = 19


# ------------------------------------------------------------------------------------------------ the combined rule
def test_the_combined_rule_equals_a_hand_computation():
    null = {"A": [0.1, 0.5, 0.3], "B": [0.2, 0.1, 0.9]}
    # Pool A (suspect last): 0.1 0.5 0.3 0.6 -> ranks 4 2 3 1; pool B: 0.2 0.1 0.9 0.15 -> ranks 2 4 1 3.
    # Best ranks T: 2 2 1 1; the suspect's T = 1, reached by 2 of the 4 models: p = 2/4.
    verdict = combine({"A": 0.6, "B": 0.15}, null, alpha=0.05)
    assert verdict.p_rank == 0.5 and verdict.p_value == 0.5 and verdict.ranks == {"A": 1, "B": 3} and not verdict.pirated
    assert verdict.null_models == 3 and verdict.floor == 0.25
    # A tie with a null model shares the worse rank: A's 0.5 -> the suspect ranks 2 on A; T = 2 2 1 2 -> p = 4/4.
    assert combine({"A": 0.5, "B": 0.15}, null).p_value == 1.0
    # Above every null model on every component: no null model reaches rank 1 -> p = 1/4.
    assert combine({"A": 0.9, "B": 0.95}, null).p_value == 0.25
    # With an exact test beside it: Bonferroni over the 2 groups, 2 * min(0.25, 0.01) = 0.02.
    both = combine({"A": 0.9, "B": 0.95}, null, exact={"mark": 0.01}, alpha=0.05)
    assert both.p_value == pytest.approx(0.02) and both.groups == 2 and both.pirated


@settings(max_examples=150, deadline=None)
@given(k=st.integers(1, 12), m=st.integers(1, 4), data=st.data())
def test_the_rank_test_is_exact_for_every_pool(k, m, data):
    """Under exchangeability each of the K + 1 models is the suspect with chance 1/(K + 1): for every level j/(K + 1),
    at most j of the K + 1 choices may get p <= j/(K + 1), whatever the scores (ties and dependence included)."""
    grid = st.integers(0, 4).map(lambda v: v / 4)  # a coarse grid: many ties
    pool = data.draw(st.lists(st.lists(grid, min_size=m, max_size=m), min_size=k + 1, max_size=k + 1))
    ps = []
    for s in range(k + 1):
        others = [pool[i] for i in range(k + 1) if i != s]
        ps.append(rank_p_value({f"c{c}": pool[s][c] for c in range(m)}, {f"c{c}": [o[c] for o in others] for c in range(m)})[0])
    for j in range(1, k + 2):
        assert sum(p <= j / (k + 1) + 1e-12 for p in ps) <= j


@pytest.mark.parametrize("bad", [
    dict(suspect={"A": 0.5}, null={"B": [0.1]}),
    dict(suspect={"A": 0.5, "B": 0.5}, null={"A": [0.1], "B": [0.1, 0.2]}),
    dict(suspect={"A": float("nan")}, null={"A": [0.1]}),
    dict(suspect={"A": 0.5}, null={"A": []}),
    dict(suspect={}, null={}),
    dict(suspect={"A": 0.5}, null={"A": [0.1]}, exact={"w": 1.5}),
    dict(suspect={"A": 0.5}, null={"A": [0.1]}, alpha=0),
])
def test_the_combined_rule_refuses_what_it_cannot_combine(bad):
    with pytest.raises(InputError):
        combine(**bad)


# ------------------------------------------------------------------------------------------------ protect and check
@pytest.fixture(scope="module")
def kit(tmp_path_factory, digits_target):
    """A kit of the digits target: two sets (TAFA from noise and from images: the cheapest two), 20 fingerprints each,
    19 null models of one epoch."""
    folder = tmp_path_factory.mktemp("kit")
    target = save_model(digits_target, folder / "target.safetensors")
    code = _cli(["protect", "--model", str(target), "--out", str(folder / "kit"), "--new-key", str(folder / "owner"), "--n", "20",
                 "--null-models", str(NULLS), "--epochs", "1", "--executor", "inprocess", "--schemes", "tafa,tafa:images"])
    assert code == 0
    return folder


def _cli(argv):
    from modelprint.cli import main

    try:
        main(argv)
    except SystemExit as exc:
        return exc.code
    return 0


def test_protect_writes_a_signed_kit_that_names_every_set(kit):
    checked = read_kit(kit / "kit", trusted_key=kit / "owner.pub")
    assert [s.name for s in checked.sets] == ["tafa", "tafa-images"] and checked.null_models == NULLS
    for entry in checked.sets:
        assert set(entry.null) == {"white-box", "black-box"} and all(len(v) == NULLS for v in entry.null.values())
        assert FingerprintSet.load(entry.path).sha256() == entry.sha256
    seeds = checked.data["null_models"]["seeds"]
    assert len(set(seeds)) == NULLS and min(seeds) >= 5000  # apart from every preset zoo's seeds


def test_check_declares_the_target_and_states_the_rate(kit, tmp_path, capsys):
    code, out, _ = run_cli(["check", "--kit", str(kit / "kit"), "--suspect", str(kit / "target.safetensors"), "--out", str(tmp_path / "c")], capsys)
    assert code == 0
    bundle = json.loads((tmp_path / "c" / "verdict.json").read_text())
    combined = bundle["combined"]
    # The target scores 1 on both sets, above all 19 null models: p = 1/20, declared at alpha 0.05.
    assert [e["score"] for e in bundle["sets"]] == [1.0, 1.0] and max(max(e["null_scores"]) for e in bundle["sets"]) < 1
    assert combined["p_value"] == pytest.approx(1 / 20) and combined["pirated"] and "PIRATED" in out
    assert combined == combine({f"{e['set']} ({e['mode']})": e["score"] for e in bundle["sets"]},
                               {f"{e['set']} ({e['mode']})": e["null_scores"] for e in bundle["sets"]}).to_dict()
    assert (tmp_path / "c" / "verdict.html").read_text().count("<img") == 1
    for entry in bundle["sets"]:  # one record per set, named by its digest in the bundle
        record = json.loads((tmp_path / "c" / entry["record"]).read_text())
        assert record["matching_score"] == entry["score"] and record["verdict"]["n_null"] == NULLS


def _served_target(kit):
    from modelprint.models import load_model

    return ServedModel("suspect", load_model(kit / "target.safetensors"), Classification(), (3, 32, 32))


def _tampered(kit: Path, where: Path, how: str) -> Path:
    """A copy of the kit, changed one way."""
    folder = where / how
    shutil.copytree(kit / "kit", folder, ignore=shutil.ignore_patterns("null-models", "nulls"))
    data = json.loads((folder / "kit.json").read_text())
    stranger = load_private_key(new_key_files(where / f"stranger-{how}")[0])
    owner = load_private_key(kit / "owner.key")
    if how == "set edited":
        the_set = FingerprintSet.load(folder / "sets" / "tafa-images.safetensors")
        the_set.thresholds = {k: v * 0 for k, v in the_set.thresholds.items()}
        the_set.save(folder / "sets" / "tafa-images.safetensors")
    elif how == "set re-signed by another key":
        FingerprintSet.load(folder / "sets" / "tafa-images.safetensors").sign(stranger).save(folder / "sets" / "tafa-images.safetensors")
    elif how == "sets swapped":
        a, b = folder / "sets" / "tafa-images.safetensors", folder / "sets" / "tafa.safetensors"
        a.rename(folder / "x"), b.rename(a), (folder / "x").rename(b)
    elif how == "null scores changed":
        data["sets"][0]["null"]["black-box"] = [v + 0.01 if v < 0.5 else v - 0.01 for v in data["sets"][0]["null"]["black-box"]]
        (folder / "kit.json").write_text(json.dumps(data))
    elif how == "kit re-signed by another key":
        data["sets"][0]["null"]["black-box"] = [0.0] * NULLS
        (folder / "kit.json").write_text(json.dumps(sign_kit(data, stranger)))
    elif how == "kit unsigned":
        data.pop("signature")
        (folder / "kit.json").write_text(json.dumps(data))
    elif how == "a set outside the kit":
        data["sets"][0]["file"] = "../outside.safetensors"
        shutil.copy(folder / "sets" / "tafa-images.safetensors", where / "outside.safetensors")
        (folder / "kit.json").write_text(json.dumps(sign_kit(data, owner)))
    return folder


@pytest.mark.parametrize("how", ["set edited", "set re-signed by another key", "sets swapped", "null scores changed", "kit re-signed by another key",
                                 "kit unsigned", "a set outside the kit"])
def test_a_tampered_kit_is_refused_before_anything_is_sent(kit, tmp_path, capsys, how):
    folder = _tampered(kit, tmp_path, how)
    served = _served_target(kit)
    with ServerThread(create_app(served)) as server:
        code, _, err = run_cli(["check", "--kit", str(folder), "--url", server.url, "--model-name", "suspect", "--trusted-key", str(kit / "owner.pub"),
                                "--out", str(tmp_path / "c")], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("modelprint: error:")
    assert served.inference_count == 0  # nothing was sent


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_an_edited_kit_file_is_refused_or_means_the_same(kit, data):
    """Any byte of kit.json changed: the kit is refused, or the edit left the JSON's meaning as it was (whitespace)."""
    raw = (kit / "kit" / "kit.json").read_bytes()
    at = data.draw(st.integers(0, len(raw) - 1))
    new = raw[:at] + bytes([data.draw(st.integers(0, 255).filter(lambda b: b != raw[at]))]) + raw[at + 1:]
    folder = kit / f"edited-{os.getpid()}"
    folder.mkdir(exist_ok=True)
    for name in ("sets",):
        if not (folder / name).exists():
            shutil.copytree(kit / "kit" / name, folder / name)
    (folder / "kit.json").write_bytes(new)
    try:
        read_kit(folder)
    except (IntegrityError, InputError):
        return
    assert json.loads(new) == json.loads(raw)


# ------------------------------------------------------------------------------------------------ resume after kill -9
def test_check_resumes_after_kill_9_without_resending_answered_queries(kit, tmp_path, capsys):
    served = _served_target(kit)
    answer, stalled = served.answer, threading.Event()

    def answer_or_stall(images):
        if served.execution_count == 1:  # the second request: the check is killed while it waits
            stalled.set()
            time.sleep(20)
        return answer(images)

    served.answer = answer_or_stall
    out = tmp_path / "c"
    with ServerThread(create_app(served)) as server:
        args = ["check", "--kit", str(kit / "kit"), "--url", server.url, "--model-name", "suspect", "--batch-size", "8", "--out", str(out)]
        process = subprocess.Popen([sys.executable, "-m", "modelprint", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            assert stalled.wait(120), "the check never asked a second batch"
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
        finally:
            if process.poll() is None:
                process.kill()
        journals = sorted((out / "records").glob("*.queries.jsonl"))
        answered = sum(len(QueryJournal(j)) for j in journals)
        assert answered == 8  # the first batch of the first set
        served.answer = answer
        before = served.inference_count
        code, _, _ = run_cli(args, capsys)
        sent = served.inference_count - before
    assert code == 0
    bundle = json.loads((out / "verdict.json").read_text())
    needed = sum(json.loads((out / e["record"]).read_text())["queries"]["answered"] for e in bundle["sets"])
    assert sent == needed - answered + probe_count(answered, default_spliced(answered))


# ------------------------------------------------------------------------------------------------ scan
def test_scan_ranks_the_suspects_and_reports_a_corrupt_file(kit, tmp_path, capsys):
    suspects = tmp_path / "suspects"
    suspects.mkdir()
    shutil.copy(kit / "target.safetensors", suspects / "copy.safetensors")
    shutil.copy(kit / "kit" / "null-models" / "suspects" / "null_0.safetensors", suspects / "other.safetensors")
    (suspects / "corrupt.safetensors").write_bytes(os.urandom(2048))
    code, out, _ = run_cli(["scan", "--kit", str(kit / "kit"), "--suspects", str(suspects), "--out", str(tmp_path / "s")], capsys)
    assert code == 0
    rows = json.loads((tmp_path / "s" / "scan.json").read_text())["suspects"]
    assert [r["suspect"] for r in rows] == ["copy", "other", "corrupt"]
    assert rows[0]["pirated"] and not rows[1]["pirated"] and "error" in rows[2]
    page = (tmp_path / "s" / "scan.html").read_text()
    sets = list(rows[0]["scores"])
    assert page.count("<th>") == 4 + len(sets) and all(f"<th>{s}</th>" in page for s in sets)  # a column per set
    for row in rows[:2]:  # each checked suspect's name links to its own page, which exists
        link = f"{Path(row['folder']).name}/verdict.html"
        assert f"href='{link}'" in page and (tmp_path / "s" / link).is_file()
        assert f"<td>{row['scores'][sets[0]]:.3f}</td>" in page
    code, _, _ = run_cli(["scan", "--kit", str(kit / "kit"), "--suspects", str(suspects), "--out", str(tmp_path / "s")], capsys)
    again = json.loads((tmp_path / "s" / "scan.json").read_text())["suspects"]
    assert code == 0 and [r.get("reused") for r in again[:2]] == [True, True]  # finished checks are not asked again


# ------------------------------------------------------------------------------------------------ the bundle, checked by a third party
def test_records_check_checks_a_signed_bundle_and_refuses_an_edited_one(kit, tmp_path, capsys):
    out = tmp_path / "c"
    code, _, _ = run_cli(["check", "--kit", str(kit / "kit"), "--suspect", str(kit / "target.safetensors"), "--out", str(out), "--sign", str(kit / "owner.key")], capsys)
    assert code == 0
    check = ["records", "check", str(out / "verdict.json"), "--trusted-key", str(kit / "owner.pub")]
    code, text, _ = run_cli(check + ["--kit", str(kit / "kit")], capsys)
    assert code == 0 and "combined verdict recomputed: p = 0.05, PIRATED" in text
    bundle = json.loads((out / "verdict.json").read_text())
    record_path = out / bundle["sets"][0]["record"]
    record = json.loads(record_path.read_text())
    for edit in ("bundle", "record"):
        if edit == "bundle":  # a verdict that its records do not give, even re-signed by the owner's key
            from modelprint.integrity.signing import sign_record

            changed = sign_record({**bundle, "combined": {**bundle["combined"], "p_value": 0.001}}, kit / "owner.key")
            (out / "verdict.json").write_text(json.dumps(changed))
        else:
            (out / "verdict.json").write_text(json.dumps(bundle))
            record_path.write_text(json.dumps({**record, "matching_score": 0.5}))
        code, _, err = run_cli(check, capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1, (edit, err)


# ------------------------------------------------------------------------------------------------ a kit with a watermark
@pytest.fixture(scope="module")
def marked_kit(tmp_path_factory, digits_target, kit):
    """A kit with a backdoor watermark of 2 chains of 5 triggers beside the TAFA set (the first kit's key)."""
    folder = tmp_path_factory.mktemp("marked")
    target = save_model(digits_target, folder / "host.safetensors")
    code = _cli(["protect", "--model", str(target), "--out", str(folder / "kit"), "--sign", str(kit / "owner.key"), "--n", "20",
                 "--null-models", str(NULLS), "--epochs", "1", "--executor", "inprocess", "--schemes", "tafa", "--watermark", "backdoor",
                 "--set", "backdoor.seeds=2", "--set", "backdoor.links=5"])
    assert code == 0
    return folder


def test_a_watermark_kit_protects_the_marked_model_and_holds_its_key(marked_kit, kit, digits_target):
    from modelprint.models import load_model, state_sha256

    checked = read_kit(marked_kit / "kit", trusted_key=kit / "owner.pub")
    marked = load_model(marked_kit / "kit" / "marked.safetensors")
    assert checked.target_sha256 == state_sha256(marked) != state_sha256(digits_target)  # the kit protects what is deployed
    assert checked.data["host"]["sha256"] == state_sha256(digits_target)
    assert [(s.name, s.kind, s.null) for s in checked.sets][1] == ("watermark-backdoor", "watermark", {})
    assert len(checked.load_set(checked.sets[1])) == 10 and checked.sets[0].kind == "fingerprints"


def test_check_combines_the_watermark_exact_test_by_bonferroni_and_records_check_recomputes_it(marked_kit, kit, tmp_path, capsys):
    for suspect, name in ((marked_kit / "kit" / "marked.safetensors", "marked"), (marked_kit / "host.safetensors", "host")):
        out = tmp_path / name
        code, text, _ = run_cli(["check", "--kit", str(marked_kit / "kit"), "--suspect", str(suspect), "--out", str(out), "--sign", str(kit / "owner.key")], capsys)
        assert code == 0 and "its own exact test" in text
        bundle = json.loads((out / "verdict.json").read_text())
        tafa, mark = bundle["sets"]
        assert mark["kind"] == "watermark" and mark["null_scores"] is None and tafa["null_scores"] is not None
        p_mark = json.loads((out / mark["record"]).read_text())["verdict"]["p_value"]
        p_rank = combine({"x": tafa["score"]}, {"x": tafa["null_scores"]}).p_rank
        assert bundle["combined"]["p_value"] == pytest.approx(min(1.0, 2 * min(p_rank, p_mark)))  # Bonferroni over the 2 groups
        if name == "marked":  # every trigger answered by the marked model: 0.1 ** 10 by the binomial test at chance 1/10
            assert mark["score"] == 1.0 and p_mark == pytest.approx(1e-10) and bundle["combined"]["pirated"]
        else:  # the host never learnt the triggers
            assert mark["score"] < 0.5 and p_mark > 0.05
        code, text, _ = run_cli(["records", "check", str(out / "verdict.json"), "--trusted-key", str(kit / "owner.pub"), "--kit", str(marked_kit / "kit")], capsys)
        assert code == 0 and "combined verdict recomputed" in text
        assert "its own exact test: p =" in (out / "verdict.html").read_text()
    # A bundle that calls the watermark's record a fingerprint set (re-signed by the owner) is refused against the kit.
    from modelprint.integrity.signing import sign_record

    bundle = json.loads((tmp_path / "marked" / "verdict.json").read_text())
    bundle["sets"][1] = {**bundle["sets"][1], "kind": "fingerprints", "null_scores": bundle["sets"][0]["null_scores"]}
    (tmp_path / "marked" / "verdict.json").write_text(json.dumps(sign_record(bundle, kit / "owner.key")))
    code, _, err = run_cli(["records", "check", str(tmp_path / "marked" / "verdict.json"), "--trusted-key", str(kit / "owner.pub"), "--kit", str(marked_kit / "kit")], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("how", ["null scores given to the key", "the key swapped with the set", "the key's kind changed"])
def test_a_tampered_watermark_kit_is_refused(marked_kit, kit, tmp_path, how):
    folder = tmp_path / "kit"
    shutil.copytree(marked_kit / "kit", folder, ignore=shutil.ignore_patterns("null-models", "nulls"))
    data = json.loads((folder / "kit.json").read_text())
    if how == "null scores given to the key":
        data["sets"][1]["null"] = {"black-box": [0.0] * NULLS}
    elif how == "the key swapped with the set":
        data["sets"][0]["file"], data["sets"][1]["file"] = data["sets"][1]["file"], data["sets"][0]["file"]
        data["sets"][0]["sha256"], data["sets"][1]["sha256"] = data["sets"][1]["sha256"], data["sets"][0]["sha256"]
    else:
        data["sets"][1]["kind"] = "fingerprints"
    (folder / "kit.json").write_text(json.dumps(sign_kit(data, load_private_key(kit / "owner.key"))))  # even signed by the owner
    with pytest.raises((IntegrityError, InputError)):
        read_kit(folder, trusted_key=kit / "owner.pub")


def test_the_demo_prints_lines_that_fit_an_80_column_terminal():
    from modelprint.demo import summary_lines

    row = {"suspect": "independent", "kind": "independent", "asked": "served", "scores": {"ipguard": 0.123456, "tafa-images": 1.0}, "p_value": 0.75, "pirated": False}
    lines = summary_lines({"kit": {"sets": ["ipguard", "tafa-images"], "null_models": 19}, "checks": [row, {**row, "suspect": "fine-tuned", "p_value": 0.05, "pirated": True}]})
    assert max(len(line) for line in lines) <= 80
    assert lines[2].split()[:3] == ["independent", "independent", "served"] and lines[3].endswith("PIRATED")
