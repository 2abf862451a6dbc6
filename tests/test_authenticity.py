"""Authenticity and validation of fingerprint sets and evidence records (issue 17, items 2 and 3).

A set anyone edited and re-hashed passes the integrity check (its SHA-256 is unkeyed): that is the documented limit.
Its content must still fit its scheme (odd contents end in one line, never a traceback or a silent score), and a
set checked against the owner's pinned key or digest is refused before a single image is sent to the suspect.
Records signed by the owner's key check, and fail after a one-byte edit.
"""

from __future__ import annotations

import json
import os
import stat

import pytest
import torch
from safetensors.torch import save_file

from conftest import run_cli, write_npz_folder
from modelprint.errors import IntegrityError, ModelprintError
from modelprint.fingerprints import FingerprintSet, SaliencyFingerprint, scheme_for
from modelprint.fingerprints.sets import DIGEST_KEY, FINGERPRINT_META_KEY, _content_digest
from modelprint.models import build_model, save_model
from modelprint.evidence.check import check_record_file
from modelprint.integrity.signing import load_private_key, new_key_files, public_hex
from modelprint.evidence.verification import verify_suspect

N = 4


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny untrained target (3 classes, 16x16), an independent model, a signed set and a grouped set."""
    folder = tmp_path_factory.mktemp("authenticity")
    torch.manual_seed(0)
    target = build_model("resnet18", num_outputs=3, width=2, input_size=16).eval()
    other = build_model("resnet18", num_outputs=3, width=2, input_size=16).eval()
    images = torch.rand(24, 3, 16, 16)
    with torch.no_grad():
        labels = target(images).argmax(1)
    owner_key, owner_pub = new_key_files(folder / "owner")
    thief_key, thief_pub = new_key_files(folder / "thief")
    plain = SaliencyFingerprint(n=N, steps=2).generate(target, images, labels).sign(owner_key)
    grouped = SaliencyFingerprint(
        n=N, steps=2, wb_threshold="per_sample", bb_threshold="per_sample", black_box_settings={"xi": 0.2}
    ).generate(target, images, labels, calibration=[other])
    return {
        "folder": folder, "target": save_model(target, folder / "target.safetensors"), "other": save_model(other, folder / "other.safetensors"),
        "plain": plain.save(folder / "plain.safetensors"), "grouped": grouped.save(folder / "grouped.safetensors"),
        "owner_key": owner_key, "owner_pub": owner_pub, "thief_key": thief_key, "thief_pub": thief_pub,
    }


def _parts(path):
    """A set file's metadata (as a dict) and tensors, for editing."""
    loaded = FingerprintSet.load(path)
    return loaded._metadata(), dict(loaded.tensors)


def _write_rehashed(path, meta, tensors, *, meta_json=None):
    """What anyone can do: write edited contents with a freshly computed SHA-256."""
    meta_json = meta_json if meta_json is not None else json.dumps(meta, sort_keys=True)
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    save_file(tensors, str(path), metadata={FINGERPRINT_META_KEY: meta_json, DIGEST_KEY: _content_digest(meta_json, tensors)})
    return path


def _set(d, key, value):
    d[key] = value


# (name, which set, edit of (meta, tensors), a word the one-line message must contain)
ODD = [
    ("no samples", "plain", lambda m, t: t.pop("samples"), "samples"),
    ("no labels", "plain", lambda m, t: t.pop("labels"), "labels"),
    ("no originals", "plain", lambda m, t: t.pop("originals"), "originals"),
    ("no pattern", "plain", lambda m, t: t.pop("pattern"), "pattern"),
    ("samples 3-D", "plain", lambda m, t: _set(t, "samples", t["samples"][:, 0]), "samples"),
    ("samples zero rows", "plain", lambda m, t: [_set(t, k, t[k][:0]) for k in ("samples", "originals", "labels")], "samples"),
    ("samples uint8", "plain", lambda m, t: _set(t, "samples", (t["samples"] * 255).to(torch.uint8)), "samples"),
    ("samples float8 (a dtype never written)", "plain", lambda m, t: _set(t, "samples", t["samples"].to(torch.float8_e4m3fn)), "F8_E4M3"),
    ("samples NaN", "plain", lambda m, t: t["samples"].view(-1).__setitem__(0, float("nan")), "samples"),
    ("samples above 1", "plain", lambda m, t: _set(t, "samples", t["samples"] * 255), "samples"),
    ("samples negative", "plain", lambda m, t: _set(t, "samples", t["samples"] - 1), "samples"),
    ("labels float", "plain", lambda m, t: _set(t, "labels", t["labels"].float()), "labels"),
    ("labels one short", "plain", lambda m, t: _set(t, "labels", t["labels"][:-1]), "labels"),
    ("labels 2-D", "plain", lambda m, t: _set(t, "labels", t["labels"][:, None]), "labels"),
    ("label = num classes", "plain", lambda m, t: t["labels"].__setitem__(0, 3), "labels"),
    ("label negative", "plain", lambda m, t: t["labels"].__setitem__(0, -1), "labels"),
    ("originals other shape", "plain", lambda m, t: _set(t, "originals", t["originals"][:, :, :8]), "originals"),
    ("originals inf", "plain", lambda m, t: t["originals"].view(-1).__setitem__(0, float("inf")), "originals"),
    ("pattern empty", "plain", lambda m, t: _set(t, "pattern", torch.zeros_like(t["pattern"])), "pattern"),
    ("pattern everywhere", "plain", lambda m, t: _set(t, "pattern", torch.ones_like(t["pattern"])), "pattern"),
    ("pattern 0.5", "plain", lambda m, t: _set(t, "pattern", t["pattern"] * 0.5), "pattern"),
    ("pattern 1-D", "plain", lambda m, t: _set(t, "pattern", t["pattern"].view(-1)), "pattern"),
    ("unknown tensor", "plain", lambda m, t: _set(t, "extra", torch.zeros(3)), "extra"),
    ("per-sample t_wb negative", "plain", lambda m, t: _set(t, "t_white_box", torch.full((N,), -1.0)), "t_white_box"),
    ("per-sample t_wb NaN", "plain", lambda m, t: _set(t, "t_white_box", torch.full((N,), float("nan"))), "t_white_box"),
    ("per-sample t_bb short", "plain", lambda m, t: _set(t, "t_black_box", torch.zeros(N - 1)), "t_black_box"),
    ("per-sample t_wb integer", "plain", lambda m, t: _set(t, "t_white_box", torch.zeros(N, dtype=torch.int64)), "t_white_box"),
    ("direction 0.5", "plain", lambda m, t: _set(t, "direction", torch.full((N,), 0.5)), "direction"),
    ("direction NaN", "plain", lambda m, t: _set(t, "direction", torch.full((N,), float("nan"))), "direction"),
    ("direction one short", "plain", lambda m, t: _set(t, "direction", torch.ones(N - 1)), "direction"),
    ("direction integer", "plain", lambda m, t: _set(t, "direction", torch.ones(N, dtype=torch.int64)), "direction"),
    ("setting cam_direction unknown", "plain", lambda m, t: m["config"].__setitem__("cam_direction", "sideways"), "cam_direction"),
    ("grouped t_bb NaN on its rows", "grouped", lambda m, t: t["t_black_box"].__setitem__(-1, float("nan")), "t_black_box"),
    ("grouped t_wb above 1", "grouped", lambda m, t: t["t_white_box"].__setitem__(0, 2.0), "t_white_box"),
    ("mode code 3", "grouped", lambda m, t: t["mode"].__setitem__(0, 3), "mode"),
    ("mode one short", "grouped", lambda m, t: _set(t, "mode", t["mode"][:-1]), "mode"),
    ("mode marks no black-box row", "grouped", lambda m, t: _set(t, "mode", torch.ones_like(t["mode"])), "mode"),
    ("grouped set without mode", "grouped", lambda m, t: t.pop("mode"), "mode"),
    ("threshold white_box negative", "plain", lambda m, t: m["thresholds"].__setitem__("white_box", -0.5), "white_box"),
    ("threshold black_box NaN", "plain", lambda m, t: m["thresholds"].__setitem__("black_box", float("nan")), "black_box"),
    ("threshold black_box missing", "plain", lambda m, t: m["thresholds"].pop("black_box"), "black_box"),
    ("threshold white_box a string", "plain", lambda m, t: m["thresholds"].__setitem__("white_box", "0.3"), "white_box"),
    ("setting n a string", "plain", lambda m, t: m["config"].__setitem__("n", "four"), "n="),
    ("setting n other count", "plain", lambda m, t: m["config"].__setitem__("n", N + 1), "samples"),
    ("setting xi negative", "plain", lambda m, t: m["config"].__setitem__("xi", -1.0), "xi"),
    ("setting pattern strings", "plain", lambda m, t: m["config"].__setitem__("pattern", [["a", "b"]]), "pattern"),
    ("setting bb_score unknown", "plain", lambda m, t: m["config"].__setitem__("bb_score", "bogus"), "bb_score"),
    ("setting t_wb negative", "plain", lambda m, t: m["config"].__setitem__("t_wb", -5.0), "t_wb"),
    ("setting fill 2", "plain", lambda m, t: m["config"].__setitem__("fill", 2.0), "fill"),
    ("setting cam_logit a number", "plain", lambda m, t: m["config"].__setitem__("cam_logit", 3), "cam_logit"),
    ("setting black_box_settings 5", "plain", lambda m, t: m["config"].__setitem__("black_box_settings", 5), "black_box_settings"),
    ("config a list", "plain", lambda m, t: _set(m, "config", [1, 2]), "config"),
    ("task unknown", "plain", lambda m, t: _set(m, "task", {"name": "ranking"}), "ranking"),
    ("task extra setting", "plain", lambda m, t: m["task"].__setitem__("margin", 1), "task"),
    ("task missing", "plain", lambda m, t: m.pop("task"), "task"),
    ("task regression tolerance negative", "plain", lambda m, t: [_set(m, "task", {"name": "regression", "tolerance": -1}), m["target"].pop("task", None),
                                                                  _set(t, "labels", t["labels"].float())], "tolerance"),
    ("similarity without pairs", "plain", lambda m, t: _set(m, "task", {"name": "similarity", "metric": "l2", "tolerance": None}), "pairs"),
    ("log score on regression", "plain", lambda m, t: [_set(m, "task", {"name": "regression", "tolerance": 0.1}), m["config"].__setitem__("bb_score", "log"),
                                                       m["target"].pop("task", None), m["target"]["arch_kwargs"].__setitem__("num_outputs", 1),
                                                       _set(t, "labels", t["labels"].float())], "log"),
    ("scheme unknown", "plain", lambda m, t: _set(m, "scheme", "other"), "other"),
    ("metadata part unknown", "plain", lambda m, t: _set(m, "owner", "me"), "owner"),
    ("target num_outputs a string", "plain", lambda m, t: m["target"]["arch_kwargs"].__setitem__("num_outputs", "three"), "num_outputs"),
]


@pytest.mark.parametrize("name,which,edit,word", ODD, ids=[case[0] for case in ODD])
def test_rehashed_set_with_odd_contents_is_refused_in_one_line(world, tmp_path, name, which, edit, word):
    meta, tensors = _parts(world[which])
    edit(meta, tensors)
    path = _write_rehashed(tmp_path / "odd.safetensors", meta, tensors)
    with pytest.raises(IntegrityError) as caught:
        FingerprintSet.load(path)
    message = str(caught.value)
    assert message.startswith(str(path)) and "\n" not in message and word in message, message


def test_rehashed_set_with_odd_contents_ends_the_cli_with_one_line(world, tmp_path, capsys):
    meta, tensors = _parts(world["plain"])
    meta["thresholds"]["black_box"] = float("nan")
    path = _write_rehashed(tmp_path / "odd.safetensors", meta, tensors)
    code, out, err = run_cli(["verify", "--fingerprints", str(path), "--suspect", str(world["other"]), "--records", str(tmp_path / "r")], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "black_box" in err, err
    meta_text = "{not json"
    path = _write_rehashed(tmp_path / "garbled.safetensors", {}, tensors, meta_json=meta_text)
    code, out, err = run_cli(["verify", "--fingerprints", str(path), "--suspect", str(world["other"]), "--records", str(tmp_path / "r")], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "not JSON" in err, err


def test_valid_sets_load_and_keep_their_signature(world):
    plain = FingerprintSet.load(world["plain"])
    assert plain.signature and plain.signature["public_key"] == public_hex(load_private_key(world["owner_key"]))
    plain.check_authenticity(trusted_key=world["owner_pub"], expect_sha256=plain.sha256())
    grouped = FingerprintSet.load(world["grouped"])
    assert grouped.signature is None and "mode" in grouped.tensors
    assert isinstance(scheme_for(grouped), SaliencyFingerprint)


def _lowered(world, tmp_path):
    """The attack: the owner's set with its thresholds set to 0 and re-hashed (every model then matches)."""
    meta, tensors = _parts(world["plain"])
    meta["thresholds"] = {"white_box": 0.0, "black_box": 0.0}
    return _write_rehashed(tmp_path / "lowered.safetensors", meta, tensors)


def test_rehashed_set_passes_integrity_alone_but_not_the_null_suspects(world, tmp_path, counted):
    # Integrity alone cannot refuse it (the documented limit); since issue 42 the null-suspect check does: a constant
    # answer would "match" every sample (tests/test_degenerate_sets.py)
    assert FingerprintSet.load(_lowered(world, tmp_path)).thresholds == {"white_box": 0.0, "black_box": 0.0}
    with pytest.raises(IntegrityError, match="null suspect"):
        verify_suspect(_lowered(world, tmp_path), suspect=world["other"], mode="black-box", records=tmp_path / "r")
    assert counted == []


@pytest.mark.parametrize("pin", ["trusted_key", "expect_sha256", "thief_key"])
def test_pinned_key_or_digest_refuses_a_rehashed_set_before_any_image_is_sent(world, tmp_path, counted, pin, untrained_sets_allowed):
    lowered = _lowered(world, tmp_path)
    if pin == "thief_key":  # re-signed by someone else's key: still not the owner's
        edited = FingerprintSet.load(lowered).sign(world["thief_key"])
        lowered = edited.save(tmp_path / "resigned.safetensors")
    genuine = FingerprintSet.load(world["plain"]).sha256()
    options = {"expect_sha256": genuine} if pin == "expect_sha256" else {"trusted_key": world["owner_pub"]}
    with pytest.raises(IntegrityError) as caught:
        verify_suspect(lowered, suspect=world["other"], mode="black-box", records=tmp_path / "r", **options)
    assert counted == [] and "\n" not in str(caught.value)
    assert {"trusted_key": "not signed", "expect_sha256": "not the expected", "thief_key": "not by the trusted key"}[pin] in str(caught.value)
    done = verify_suspect(world["plain"], suspect=world["other"], mode="black-box", records=tmp_path / "r", **{"trusted_key": world["owner_pub"]})
    assert sum(counted) == 2 * N and done.record["fingerprints"]["signature"]["key_fingerprint"]


def test_edited_signed_set_fails_its_signature(world, tmp_path):
    raw = bytearray(world["plain"].read_bytes())
    raw[-3] ^= 0x01  # one bit of the last tensor
    (tmp_path / "flipped.safetensors").write_bytes(bytes(raw))
    with pytest.raises(IntegrityError, match="modified"):
        FingerprintSet.load(tmp_path / "flipped.safetensors", trusted_key=world["owner_pub"])
    with pytest.raises(IntegrityError, match="not by the trusted key"):
        FingerprintSet.load(world["plain"], trusted_key=world["thief_pub"])


def test_signed_record_checks_and_fails_after_a_one_byte_edit(world, tmp_path, capsys, untrained_sets_allowed):
    record = tmp_path / "record.json"
    verify_suspect(world["plain"], suspect=world["other"], records=tmp_path / "r", record=record, sign=world["owner_key"])
    done = check_record_file(record, world["owner_pub"], fingerprints=world["plain"], suspect=world["other"])
    assert done.set_signed and len(done.checked) == 4
    code, out, err = run_cli(["records", "check", str(record), "--trusted-key", str(world["owner_pub"])], capsys)
    assert code == 0 and "ok: record signed" in out
    code, out, err = run_cli(["records", "check", str(record), "--trusted-key", str(world["thief_pub"])], capsys)
    assert code == 2 and "not by the trusted key" in err and len(err.strip().splitlines()) == 1
    text = record.read_text()
    at = text.index('"matching_score": ') + len('"matching_score": ')
    edited = text[:at] + ("1" if text[at] != "1" else "0") + text[at + 1 :]  # one byte of the score
    (tmp_path / "edited.json").write_text(edited)
    code, out, err = run_cli(["records", "check", str(tmp_path / "edited.json"), "--trusted-key", str(world["owner_pub"])], capsys)
    assert code == 2 and "does not match the content" in err and len(err.strip().splitlines()) == 1, err
    with pytest.raises(IntegrityError, match="names suspect"):
        check_record_file(record, world["owner_pub"], suspect=world["target"])


def test_keys_new_writes_a_private_key_only_its_owner_reads_and_never_overwrites(tmp_path, capsys):
    code, out, err = run_cli(["keys", "new", "--out", str(tmp_path / "k" / "owner")], capsys)
    assert code == 0 and out.startswith("key ")
    assert stat.S_IMODE(os.stat(tmp_path / "k" / "owner.key").st_mode) == 0o600
    before = (tmp_path / "k" / "owner.key").read_bytes()
    code, out, err = run_cli(["keys", "new", "--out", str(tmp_path / "k" / "owner")], capsys)
    assert code == 2 and "never overwritten" in err and (tmp_path / "k" / "owner.key").read_bytes() == before
    code, out, err = run_cli(["records", "check", str(tmp_path / "none.json"), "--trusted-key", str(tmp_path / "k" / "owner.key")], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1


def test_generate_sign_and_verify_trusted_key_on_the_command_line(world, tmp_path, capsys, untrained_sets_allowed):
    out = tmp_path / "fp.safetensors"
    data = write_npz_folder(tmp_path / "data", n=40, size=16, classes=3)
    argv = ["generate", "--model", str(world["target"]), "--data", str(data), "--n", "2", "--steps", "1", "--out", str(out)]
    code, _, err = run_cli([*argv, "--sign", str(tmp_path / "missing.key")], capsys)
    assert code == 2 and "missing.key" in err and not out.exists()  # a bad key fails before any work
    code, _, err = run_cli([*argv, "--sign", str(world["owner_key"])], capsys)
    assert code == 0, err
    verify = ["verify", "--fingerprints", str(out), "--suspect", str(world["other"]), "--records", str(tmp_path / "r")]
    code, _, err = run_cli([*verify, "--trusted-key", str(world["owner_pub"]), "--json"], capsys)
    assert code == 0, err
    code, _, err = run_cli([*verify, "--trusted-key", str(world["thief_pub"])], capsys)
    assert code == 2 and "not by the trusted key" in err


def test_scheme_for_turns_bad_settings_into_one_line(world):
    fingerprints = FingerprintSet.load(world["plain"])
    fingerprints.config = {**fingerprints.config, "steps": "many"}
    with pytest.raises(ModelprintError) as caught:
        scheme_for(fingerprints)
    assert "steps" in str(caught.value) and "\n" not in str(caught.value)
