"""Query journals that cannot be spliced, appended to, reordered or contradict themselves; file suspects never answered
from a journal without computing again; a resume probe of a random sample sized from the verdict's margin, with a
capped tolerance; servers rounding their answers to nothing reported; no lock file left behind; and records a third
party replays against the suspect (``records check --replay``)."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelprint.access import BlackBox, default_spliced, probe_count, tolerance_cap
from modelprint.errors import IntegrityError, ModelprintError
from modelprint.evidence.replay import replay_record
from modelprint.evidence.verification import verdict_margin
from modelprint.fingerprints import FingerprintSet, VerificationResult
from modelprint.fingerprints.ipguard import IPGuard
from modelprint.journal import QueryJournal
from modelprint.journal.lines import line_sha256
from modelprint.models import build_model, save_model

from modelprint.serving.server import Rounding, ServedModel, ServerThread, create_app
from modelprint.integrity.signing import new_key_files, sign_record
from modelprint.tasks import Classification

from conftest import free_ports, one_line, run_cli

N = 20


@pytest.fixture(scope="module")
def world(tmp_path_factory, digits, digits_target):
    """A trained target and an innocent (untrained) model on disk, an IPGuard set of N boundary samples of the
    target (its labels: one query per sample), null scores under which a score above 0.5 is PIRATED, the owner's
    keys."""
    folder = tmp_path_factory.mktemp("chain")
    torch.manual_seed(1)
    models = {"target": digits_target, "innocent": build_model("resnet18", num_outputs=10, width=8).eval()}
    for name, model in models.items():
        save_model(model, folder / f"{name}.safetensors")
    images, labels = digits.train.images[:60], digits.train.labels[:60]
    scheme = IPGuard(n=N, k=0.2, lr=0.1, steps=100, target_class="random", batch_size=10)
    scheme.generate(digits_target, images, labels).save(folder / "fp.safetensors")
    (folder / "null.json").write_text(json.dumps([0.5] * 19))  # PIRATED above 0.5
    new_key_files(folder / "owner")
    return folder, models


def verify(folder: Path, records: Path, *extra: str) -> list[str]:
    return ["verify", "--fingerprints", str(folder / "fp.safetensors"), "--mode", "black-box", "--records", str(records),
            "--null", str(folder / "null.json"), "--json", "--batch-size", "5", *extra]


def genuine_journal(world, name: str, tmp_path: Path, capsys) -> tuple[Path, dict]:
    """A journal and the summary of a genuine black-box verification of a model file."""
    folder, _ = world
    journal = tmp_path / f"{name}.jsonl"
    code, out, err = run_cli(verify(folder, tmp_path / f"records-{name}", "--suspect", str(folder / f"{name}.safetensors"),
                                    "--journal", str(journal)), capsys)
    assert code == 0, err
    return journal, json.loads(out)


def rechain(lines: list[str]) -> list[str]:
    """Recompute every line's seq and prev_sha256 after the header: a forger who recomputes every hash."""
    out = [lines[0]]
    for seq, line in enumerate(lines[1:], start=1):
        entry = json.loads(line)
        entry["seq"], entry["prev_sha256"] = seq, line_sha256(out[-1])
        out.append(json.dumps(entry))
    return out


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


# ------------------------------------------------------------------------------------------------ spliced journals
def test_header_of_an_innocent_journal_with_the_targets_answers_is_refused(world, tmp_path, capsys):
    folder, _ = world
    innocent, _ = genuine_journal(world, "innocent", tmp_path, capsys)
    target, summary = genuine_journal(world, "target", tmp_path, capsys)
    assert summary["pirated"] is True
    spliced = innocent.read_text().splitlines()[:1] + target.read_text().splitlines()[1:]  # no hash recomputed
    args = verify(folder, tmp_path / "r", "--suspect", str(folder / "innocent.safetensors"), "--journal",
                  str(write(tmp_path / "spliced.jsonl", spliced)))
    one_line(*run_cli(args, capsys)[::2], "line 2", "does not follow the line before it")
    forged = write(tmp_path / "forged.jsonl", rechain(spliced))  # every hash recomputed: the chain holds
    one_line(*run_cli(args[:-1] + [str(forged)], capsys)[::2], "does not hold", "answers")


def test_the_targets_lines_appended_to_an_innocent_journal_are_refused(world, tmp_path, capsys):
    folder, _ = world
    innocent, summary = genuine_journal(world, "innocent", tmp_path, capsys)
    target, _ = genuine_journal(world, "target", tmp_path, capsys)
    appended = innocent.read_text().splitlines() + target.read_text().splitlines()[1:]
    args = verify(folder, tmp_path / "r", "--suspect", str(folder / "innocent.safetensors"), "--journal",
                  str(write(tmp_path / "appended.jsonl", appended)))
    one_line(*run_cli(args, capsys)[::2], "is batch 1, but batch")
    forged = write(tmp_path / "forged.jsonl", rechain(appended))  # chained: the later lines now contradict the earlier
    one_line(*run_cli(args[:-1] + [str(forged)], capsys)[::2], "contradictory answers")


@pytest.mark.parametrize("edit", ["drop", "swap"])
def test_a_dropped_or_reordered_line_is_refused(world, tmp_path, capsys, edit):
    folder, _ = world
    journal, _ = genuine_journal(world, "target", tmp_path, capsys)
    lines = journal.read_text().splitlines()
    assert len(lines) >= 3
    lines = lines[:1] + lines[2:] if edit == "drop" else [lines[0], lines[2], lines[1], *lines[3:]]
    with pytest.raises(IntegrityError, match="line 2"):
        QueryJournal(write(journal, lines))


@pytest.mark.parametrize("field, value", [("dtype", ["float32"]), ("seq", "1"), ("probe", [1]), ("prev_sha256", {}), ("tolerance", [0])])
def test_a_field_of_another_json_type_is_refused_in_one_line(world, tmp_path, capsys, field, value):
    """Found by the fuzzed edits below: a list where a name is expected raised TypeError (unhashable)."""
    journal, _ = genuine_journal(world, "target", tmp_path, capsys)
    lines = journal.read_text().splitlines()
    entry = json.loads(lines[1])
    entry[field] = value
    if field == "tolerance":
        entry["probe"] = True
    with pytest.raises(IntegrityError, match="line 2"):
        QueryJournal(write(journal, [lines[0], json.dumps(entry)]))  # its own line: line 1, the header, is untouched


def test_the_same_image_answered_twice_otherwise_is_refused(world, tmp_path, capsys):
    journal, _ = genuine_journal(world, "target", tmp_path, capsys)
    lines = journal.read_text().splitlines()
    entry = json.loads(lines[1])
    entry["outputs"][0] = list(reversed(entry["outputs"][0]))
    outputs = torch.tensor(entry["outputs"], dtype=torch.float32)
    from modelprint.integrity.hashing import tensors_sha256

    entry["outputs_sha256"] = tensors_sha256({"outputs": outputs})
    with pytest.raises(IntegrityError, match="contradictory answers"):
        QueryJournal(write(journal, rechain([*lines, json.dumps(entry)])))


# ------------------------------------------------------------------------------------------------ served suspects
def serve(model, port: int, **options) -> tuple[ServedModel, ServerThread]:
    served = ServedModel("suspect", model, Classification(), (model.spec.channels, *model.spec.input_size), **options)
    return served, ServerThread(create_app(served), port=port)


def test_a_spliced_server_journal_with_one_genuine_line_is_caught_by_the_probe(world, tmp_path, capsys):
    """The attack of issue 42: one genuine single-image line from the innocent server, then the target's answers
    (every hash recomputed); the old probe re-asked only the first journalled image."""
    folder, models = world
    (port,) = free_ports(1)
    url = f"http://127.0.0.1:{port}"
    journal = tmp_path / "j.jsonl"
    args = verify(folder, tmp_path / "records", "--url", url, "--model-name", "suspect", "--journal", str(journal))
    served, server = serve(models["target"], port)
    with server:
        code, out, err = run_cli(args, capsys)
    assert code == 0 and json.loads(out)["pirated"] is True, err
    target_lines = journal.read_text().splitlines()
    journal.unlink()
    fingerprints = FingerprintSet.load(folder / "fp.safetensors")
    served, server = serve(models["innocent"], port)
    with server:
        box = BlackBox.http(url, "suspect", journal=journal, fingerprints_sha256=fingerprints.sha256())
        with box:
            box.predict(fingerprints.samples[:1])  # the innocent server's genuine single-image line
        genuine = journal.read_text().splitlines()
        keys = set(json.loads(genuine[1])["image_sha256"])
        rest = [line for line in target_lines[1:] if not keys & set(json.loads(line)["image_sha256"])]
        write(journal, rechain(genuine + rest))
        QueryJournal(journal)  # reads: nothing in the file itself gives the splice away
        code, _, err = run_cli(args, capsys)
    one_line(code, err, "no longer answers as the journal", "drawn at random")
    assert 1 < served.inference_count <= 1 + probe_count(N, default_spliced(N))  # nothing but the probe (it stops at the first wrong batch)


def test_the_probe_tolerance_is_capped_by_the_set(world, tmp_path, capsys):
    folder, _ = world
    fingerprints = FingerprintSet.load(folder / "fp.safetensors")
    cap = tolerance_cap(fingerprints.thresholds["black_box"])
    assert 0 < cap <= 1e-2
    args = verify(folder, tmp_path / "r", "--url", "http://127.0.0.1:9", "--model-name", "m", "--probe-tolerance", "1.0")
    one_line(*run_cli(args, capsys)[::2], "--probe-tolerance 1 is above")
    with pytest.raises(ModelprintError, match="probe tolerance"):
        BlackBox(lambda x: x, probe_tolerance=1.0)


def test_a_server_rounding_its_answers_to_nothing_is_reported(world, tmp_path, capsys):
    folder, models = world
    (port,) = free_ports(1)
    args = verify(folder, tmp_path / "records", "--url", f"http://127.0.0.1:{port}", "--model-name", "suspect")
    served, server = serve(models["innocent"], port, filters=[Rounding(decimals=0)])
    with server:
        code, _, err = run_cli([a for a in args if a != "--json"], capsys)
        assert code == 0 and "distinct value" in err and "cannot distinguish" in err, err  # said when it happens
        record = json.loads(next((tmp_path / "records").glob("*.json")).read_text())
        assert record["queries"]["answer_levels"] <= 2  # and stated in the record
        code, _, err = run_cli(args, capsys)  # resuming: the probe could not tell this server from another
    one_line(code, err, "rounded to", "cannot distinguish")


def test_no_lock_file_is_left_behind(world, tmp_path, capsys):
    folder, _ = world
    records = tmp_path / "records"
    assert run_cli(verify(folder, records, "--suspect", str(folder / "target.safetensors")), capsys)[0] == 0
    assert run_cli(verify(folder, records, "--url", "http://127.0.0.1:9", "--model-name", "m", "--retries", "0"), capsys)[0] == 2
    assert list(records.glob("*.lock")) == []
    assert len(list(records.glob("*.queries.jsonl"))) == 1  # the failed run wrote no journal, and says so


# ------------------------------------------------------------------------------------------------ the probe's size
@pytest.mark.parametrize("journalled", [1, 7, 20, 100, 200])
@pytest.mark.parametrize("spliced", [1, 2, 5, 20])
def test_probe_count_is_the_smallest_sample_that_catches_a_splice_with_99_percent(journalled, spliced):
    spliced = min(spliced, journalled)
    k = probe_count(journalled, spliced)

    def miss(draws: int) -> float:
        return math.comb(journalled - spliced, draws) / math.comb(journalled, draws)

    assert miss(k) <= 0.01 + 1e-12 and (k == 0 or miss(k - 1) > 0.01)


def test_verdict_margin_counts_samples_to_the_boundary():
    def result(score: float, n: int = 10, p: float | None = None) -> VerificationResult:
        return VerificationResult("s", "black-box", score, n, 0, 0.1, [0.0] * n, 0.0, p_value=p)

    null = [0.0] * 15 + [0.1] * 4  # p(score) = (1 + #null >= score) / 20: PIRATED (alpha 0.05) only above 0.1
    assert verdict_margin(result(0.5), null, 0.05) == 4  # 5 of 10 matched; 1 of 10 would not be PIRATED
    assert verdict_margin(result(0.2), null, 0.05) == 1
    assert verdict_margin(result(0.0), null, 0.05) == 2  # 2 of 10 matched would make it PIRATED
    assert verdict_margin(result(0.5), None, 0.05) is None  # no verdict: nothing a splice could change
    assert verdict_margin(result(0.5, p=0.01), None, 0.05) == 1  # a scheme's own p-value: every answer may matter
    assert verdict_margin(result(0.37, n=1), null, 0.05) == 1  # one value read from every answer (MetaV)


# ------------------------------------------------------------------------------------------------ journal lines, fuzzed
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_edit_of_a_journal_is_refused_or_keeps_its_answers(world, tmp_path_factory, data):
    """Random edits of a genuine journal (drop, duplicate, move, or change a field of a line; a line of another
    journal; cut bytes; hashes recomputed or not) either leave answers that the genuine journal gave, or are
    refused with the project's own error: never another exception, never an answer the suspect did not give."""
    folder, models = world
    cache = tmp_path_factory.getbasetemp() / "fuzz-journals"
    if not (cache / "target.jsonl").exists():
        cache.mkdir(exist_ok=True)
        fingerprints = FingerprintSet.load(folder / "fp.safetensors")
        for name in ("target", "innocent"):
            with BlackBox.from_model(models[name], Classification(), batch_size=3, journal=cache / f"{name}.jsonl") as box:
                box.predict(fingerprints.samples)
    lines = (cache / "target.jsonl").read_text().splitlines()
    other = (cache / "innocent.jsonl").read_text().splitlines()
    genuine = QueryJournal(cache / "target.jsonl")
    edit = data.draw(st.sampled_from(["drop", "duplicate", "move", "field", "foreign", "cut"]))
    where = data.draw(st.integers(1, len(lines) - 1))
    if edit == "drop":
        lines.pop(where)
    elif edit == "duplicate":
        lines.insert(where, lines[where])
    elif edit == "move":
        lines.insert(data.draw(st.integers(1, len(lines) - 1)), lines.pop(where))
    elif edit == "foreign":
        lines.insert(where, other[data.draw(st.integers(1, len(other) - 1))])
    elif edit == "field":
        entry = json.loads(lines[where])
        field = data.draw(st.sampled_from(sorted(entry)))
        entry[field] = data.draw(st.one_of(st.none(), st.booleans(), st.integers(-3, 10**6), st.floats(allow_nan=False),
                                           st.text(max_size=70), st.lists(st.integers(0, 3), max_size=3)))
        lines[where] = json.dumps(entry)
    text = "\n".join(rechain(lines) if data.draw(st.booleans()) and edit != "field" else lines) + "\n"
    if edit == "cut":
        text = text[: data.draw(st.integers(0, len(text)))]
    path = tmp_path_factory.mktemp("fuzz") / "j.jsonl"
    path.write_text(text)
    try:
        edited = QueryJournal(path)
    except ModelprintError:
        return
    for key in list(edited._answers):
        assert genuine.lookup(key) is not None and torch.equal(edited.lookup(key), genuine.lookup(key))


# ------------------------------------------------------------------------------------------------ replay
def signed_record(world, tmp_path, capsys, *, url: str | None = None, journal: Path | None = None) -> tuple[Path, Path]:
    folder, _ = world
    journal = journal or tmp_path / "journal.jsonl"
    who = ["--url", url, "--model-name", "suspect"] if url else ["--suspect", str(folder / "innocent.safetensors")]
    code, out, err = run_cli(verify(folder, tmp_path / "records", *who, "--journal", str(journal), "--sign",
                                    str(folder / "owner.key")), capsys)
    assert code == 0, err
    return Path(json.loads(out)["record"]), journal


def forge(record_path: Path, journal: Path, target_lines: list[str], key: Path) -> None:
    """Swap the journal's answers for the target's, recompute every hash, and re-sign a record that says PIRATED:
    what an owner bent on accusing the innocent model could write."""
    lines = journal.read_text().splitlines()
    write(journal, rechain(lines[:1] + target_lines[1:]))
    record = json.loads(record_path.read_text())
    record.pop("signature")
    record["queries"]["log"]["sha256"] = hashlib.sha256(journal.read_bytes()).hexdigest()
    record["matching_score"], record["verdict"]["pirated"] = 1.0, True
    from modelprint.integrity.signing import load_private_key

    record_path.write_text(json.dumps(sign_record(record, load_private_key(key)), indent=2))


def replay_args(world, record: Path, *who: str) -> list[str]:
    folder, _ = world
    return ["records", "check", str(record), "--replay", "--fingerprints", str(folder / "fp.safetensors"),
            "--trusted-key", str(folder / "owner.pub"), *who]


def test_replay_of_a_file_suspects_record(world, tmp_path, capsys):
    folder, _ = world
    innocent = ["--suspect", str(folder / "innocent.safetensors")]
    record, journal = signed_record(world, tmp_path, capsys)
    code, out, err = run_cli(replay_args(world, record, *innocent), capsys)
    assert code == 0 and "computed again" in out and "reproduced" in out, err
    original = journal.read_text()
    lines = original.splitlines()
    entry = json.loads(lines[1])
    entry["time"] = "2020-01-01T00:00:00.000+00:00"
    write(journal, [lines[0], json.dumps(entry), *lines[2:]])  # spliced in place: the record's digest no longer holds
    one_line(*run_cli(replay_args(world, record, *innocent), capsys)[::2], "not the query journal the record names")
    journal.write_text(original)
    target, _ = genuine_journal(world, "target", tmp_path, capsys)
    forge(record, journal, target.read_text().splitlines(), folder / "owner.key")
    code, out, err = run_cli(["records", "check", str(record), "--trusted-key", str(folder / "owner.pub")], capsys)
    assert code == 0, err  # the signature and every hash hold: only asking the suspect again tells
    one_line(*run_cli(replay_args(world, record, *innocent), capsys)[::2], "does not hold")


def test_replay_of_a_served_suspects_record(world, tmp_path, capsys):
    folder, models = world
    (port,) = free_ports(1)
    url = f"http://127.0.0.1:{port}"
    served, server = serve(models["innocent"], port)
    with server:
        record, journal = signed_record(world, tmp_path, capsys, url=url)
        sent = served.inference_count
        code, out, err = run_cli(replay_args(world, record, "--url", url, "--model-name", "suspect", "--sample", "5"), capsys)
        assert code == 0 and f"5 of {N} journalled answers asked again" in out, err
        assert served.inference_count == sent + 5
        code, out, err = run_cli(replay_args(world, record, "--url", url, "--model-name", "suspect"), capsys)
        assert code == 0 and f"{N} of {N}" in out, err
        target, _ = genuine_journal(world, "target", tmp_path, capsys)
        forge(record, journal, target.read_text().splitlines(), folder / "owner.key")
        code, _, err = run_cli(replay_args(world, record, "--url", url, "--model-name", "suspect", "--sample", "5"), capsys)
    one_line(code, err, "no longer answers as the journal")
    with pytest.raises(ModelprintError, match="a replay needs the suspect"):
        replay_record(record, fingerprints=folder / "fp.safetensors")
