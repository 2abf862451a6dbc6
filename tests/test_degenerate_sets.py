"""Sets that cannot be degenerate (issue 42, part 3): no path from a set to a false PIRATED verdict for an innocent
model.

1. A signature a set carries must hold, pinned key or not.
2. A set's layout fits its scheme and task: a set relabelled for another task is refused, from a file or in memory,
   and the API never makes a set of one task for a model of another.
3. A set under which a null suspect (a constant or uniform answer, a fresh model of the target's architecture) is
   declared a copy is refused before anything is sent to the suspect.
4. The target identity a set records is one a model could have, and ``verify --target FILE`` confirms it.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from conftest import run_cli
from modelprint.access import WhiteBox
from modelprint.errors import InputError, IntegrityError
from modelprint.evidence.verification import verify_suspect
from modelprint.fingerprints import FingerprintSet, SaliencyFingerprint, scheme_for
from modelprint.fingerprints.ipguard import IPGuard
from modelprint.fingerprints.sets import DIGEST_KEY, FINGERPRINT_META_KEY, SIGNATURE_KEY, _content_digest
from modelprint.fingerprints.tafa import TAFA
from modelprint.models import build_model, save_model
from modelprint.integrity.signing import new_key_files
from modelprint.tasks import Regression

N = 4


def striped(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """3 classes of 16x16 images: class c has a bright vertical band in the c-th third (learnt in a few steps)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (n,), generator=g)
    images = torch.rand(n, 3, 16, 16, generator=g) * 0.5
    for c in range(3):
        images[labels == c, :, :, c * 5 : (c + 1) * 5] += 0.5
    return images.clamp(0, 1), labels


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny target trained on the stripes (so that its sets are not degenerate in black-box mode), an independent
    model, a zero-weight model (it answers the uniform distribution to every image), a signed saliency set and an
    IPGuard set."""
    folder = tmp_path_factory.mktemp("degenerate")
    torch.manual_seed(0)
    target = build_model("resnet18", num_outputs=3, width=2, input_size=16)
    images, labels = striped(128, 0)
    optimiser = torch.optim.Adam(target.parameters(), lr=0.03)
    target.train()
    for step in range(24):
        rows = slice((step * 32) % 128, (step * 32) % 128 + 32)
        loss = F.cross_entropy(target(images[rows]), labels[rows])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    target.eval()
    other = build_model("resnet18", num_outputs=3, width=2, input_size=16).eval()
    zeroed = build_model("resnet18", num_outputs=3, width=2, input_size=16).eval()
    with torch.no_grad():
        for p in zeroed.parameters():
            p.zero_()
    candidates, _ = striped(24, 1)
    with torch.no_grad():
        chosen = target(candidates).argmax(1)
    owner_key, owner_pub = new_key_files(folder / "owner")
    plain = SaliencyFingerprint(n=N, steps=2).generate(target, candidates, chosen).sign(owner_key)
    ipguard = IPGuard(n=N, k=0.2, lr=0.1, steps=20, target_class="random", batch_size=N).generate(target, candidates, chosen)
    return {
        "folder": folder, "target_model": target, "candidates": candidates, "labels": chosen,
        "target": save_model(target, folder / "target.safetensors"), "other": save_model(other, folder / "other.safetensors"),
        "zeroed": save_model(zeroed, folder / "zeroed.safetensors"), "plain": plain.save(folder / "plain.safetensors"),
        "ipguard": ipguard.save(folder / "ipguard.safetensors"), "owner_key": owner_key, "owner_pub": owner_pub,
    }


def parts(path):
    """A set file's metadata (as a dict), tensors and raw metadata, for editing."""
    loaded = FingerprintSet.load(path)
    return loaded._metadata(), dict(loaded.tensors), loaded.signature


def rehashed(path, meta, tensors, *, signature=None):
    """What anyone can do: write edited contents with a freshly computed SHA-256 (keeping an old signature)."""
    meta_json = json.dumps(meta, sort_keys=True)
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    metadata = {FINGERPRINT_META_KEY: meta_json, DIGEST_KEY: _content_digest(meta_json, tensors)}
    if signature is not None:
        metadata[SIGNATURE_KEY] = json.dumps(signature, sort_keys=True)
    save_file(tensors, str(path), metadata=metadata)
    return path


def as_regression(meta, tensors):
    """The set relabelled as a regression set: task, float labels."""
    meta["task"] = Regression(tolerance=0.1).to_config()
    tensors["labels"] = tensors["labels"].float()


# --------------------------------------------------------------------------------------------------- 1. signatures
def test_a_signature_that_does_not_hold_is_refused_without_a_pinned_key(world, tmp_path, counted, capsys):
    meta, tensors, signature = parts(world["plain"])
    assert signature is not None
    meta["thresholds"] = {"white_box": 0.9, "black_box": 0.9}
    edited = rehashed(tmp_path / "edited.safetensors", meta, tensors, signature=signature)  # signature over the old digest
    with pytest.raises(IntegrityError, match="does not match the content") as caught:
        FingerprintSet.load(edited)
    assert str(caught.value).startswith(str(edited)) and "\n" not in str(caught.value)
    misnamed = rehashed(tmp_path / "misnamed.safetensors", *parts(world["plain"])[:2], signature={**signature, "key_fingerprint": "0" * 64})
    with pytest.raises(IntegrityError, match="not its public key's fingerprint"):
        FingerprintSet.load(misnamed)
    record = tmp_path / "r.json"
    code, _, err = run_cli(["verify", "--fingerprints", str(edited), "--suspect", str(world["other"]), "--records", str(tmp_path / "r"),
                            "--record", str(record), "--sign", str(world["owner_key"])], capsys)
    assert code == 2 and "does not match the content" in err and len(err.strip().splitlines()) == 1
    assert not record.exists() and counted == []  # nothing asked, nothing signed


# ------------------------------------------------------------------------------------------- 2. scheme and task
def test_a_set_switched_to_regression_and_rehashed_is_refused(world, tmp_path):
    for which in ("plain", "ipguard"):
        meta, tensors, _ = parts(world[which])
        as_regression(meta, tensors)
        with pytest.raises(IntegrityError) as caught:
            FingerprintSet.load(rehashed(tmp_path / f"{which}.safetensors", meta, tensors))
        assert "\n" not in str(caught.value) and "regression" in str(caught.value)
    meta, tensors, _ = parts(world["plain"])
    meta["task"] = Regression(tolerance=0.1).to_config()  # integer labels are a classifier's classes
    with pytest.raises(IntegrityError, match="labels"):
        FingerprintSet.load(rehashed(tmp_path / "ints.safetensors", meta, tensors))


def test_the_api_does_not_make_a_regression_set_for_a_classifier(world):
    target, images, labels = world["target_model"], world["candidates"], world["labels"]
    for scheme in (SaliencyFingerprint(n=N, steps=2), TAFA(n=N)):
        with pytest.raises(InputError, match="the target is a classification model"):
            scheme.generate(target, images, labels.float(), Regression(tolerance=0.1))
    foreign = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 3)).eval()
    with pytest.raises(InputError, match="one value per image"):  # a model without a spec: its outputs say it classifies
        TAFA(n=N).generate(foreign, images, labels.float(), Regression(tolerance=0.1))
    with pytest.raises(InputError, match="protects classifiers"):
        IPGuard(n=N).generate(target, images, labels.float(), Regression(tolerance=0.1))


def test_verify_refuses_an_in_memory_set_relabelled_as_regression(world):
    fingerprints = FingerprintSet.load(world["plain"])
    relabelled = replace(fingerprints, task=Regression(tolerance=0.1).to_config(),
                         tensors={**fingerprints.tensors, "labels": fingerprints.labels.float()})
    access = WhiteBox(world["target_model"])
    for mode in ("white-box", "black-box"):
        with pytest.raises(IntegrityError, match="regression"):
            scheme_for(fingerprints).verify(access, relabelled, mode=mode)
    ipguard = FingerprintSet.load(world["ipguard"])
    with pytest.raises(IntegrityError, match="protects classification"):
        scheme_for(ipguard).verify(access, replace(ipguard, task=Regression().to_config(), tensors={**ipguard.tensors, "labels": ipguard.labels.float()}))


# ------------------------------------------------------------------------------------------- 3. null suspects
def lowered(world, tmp_path, value=0.0):
    meta, tensors, _ = parts(world["plain"])
    meta["thresholds"] = {"white_box": value, "black_box": value}
    return rehashed(tmp_path / "lowered.safetensors", meta, tensors)


@pytest.mark.parametrize("mode", ["white-box", "black-box"])
def test_thresholds_zero_are_refused_before_anything_is_sent_in_both_modes(world, tmp_path, counted, mode):
    with pytest.raises(IntegrityError, match="null suspect") as caught:
        verify_suspect(lowered(world, tmp_path), suspect=world["other"], mode=mode, records=tmp_path / "r")
    assert "\n" not in str(caught.value) and counted == []
    from modelprint.fingerprints import nulls  # (new in issue 42)

    fingerprints = FingerprintSet.load(world["plain"])
    outcomes = nulls.examine(scheme_for(fingerprints), fingerprints, modes=("black-box",))
    assert len(outcomes) == 3 and not any(o.declared for o in outcomes)  # the owner's own set passes in black-box mode
    done = verify_suspect(world["plain"], suspect=world["other"], mode="black-box", records=tmp_path / "r")
    assert sum(counted) == 2 * N and done.result.matching_score < 1


def test_inflated_tafa_thresholds_let_a_constant_answer_match_and_are_refused(world, tmp_path):
    fingerprints = TAFA(n=2).generate(world["target_model"], world["candidates"], world["labels"])
    scheme = scheme_for(fingerprints)
    inflated = replace(fingerprints, tensors={**fingerprints.tensors, "t_white_box": fingerprints.tensors["t_white_box"] + 1e6,
                                              "t_black_box": fingerprints.tensors["t_black_box"] + 1e6})
    with pytest.raises(IntegrityError, match="constant suspect"):
        scheme.check_not_degenerate(inflated)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(t_wb=st.floats(0.0, 1.0), t_bb=st.floats(0.0, 1.0), regression=st.booleans(), mode=st.sampled_from(["white-box", "black-box"]))
def test_edited_thresholds_or_task_never_declare_a_null_suspect_pirated(world, tmp_path, t_wb, t_bb, regression, mode):
    """Whatever thresholds (or task) a re-hashed set holds, the zero-weight model (the same answer to every image)
    is never verified as PIRATED, even with null scores under which any positive score would be."""
    meta, tensors, _ = parts(world["plain"])
    meta["thresholds"] = {"white_box": t_wb, "black_box": t_bb}
    if regression:
        as_regression(meta, tensors)
    path = rehashed(tmp_path / "edited.safetensors", meta, tensors)
    null = tmp_path / "null.json"
    null.write_text(json.dumps([0.0] * 39))  # a calibrated verdict of 40 ranks: any score above 0 has p = 1/40
    try:
        done = verify_suspect(path, suspect=world["zeroed"], mode=mode, records=tmp_path / "r", null=null)
    except IntegrityError:
        return  # refused: no verdict at all
    assert done.record["verdict"]["pirated"] is False, (t_wb, t_bb, regression, mode, done.result.matching_score)


# ------------------------------------------------------------------------------------------- 4. target identity
@pytest.mark.parametrize("edit, word", [
    (lambda t: t.update(sha256="made-up"), "SHA-256"),
    (lambda t: t.update(sha256="AB" * 32), "SHA-256"),
    (lambda t: t.pop("sha256"), "SHA-256"),
    (lambda t: t.update(arch="nosuch"), "architecture"),
    (lambda t: t["arch_kwargs"].update(width=0), "width"),
    (lambda t: t["arch_kwargs"].update(depth=3), "depth"),
    (lambda t: t.update(input_size=[32, 32]), "32"),
    (lambda t: t["arch_kwargs"].update(in_channels=1), "channels"),
    (lambda t: t["arch_kwargs"].update(num_outputs=1), "classes"),
    (lambda t: t["arch_kwargs"].update(num_outputs=2), "labels"),  # labels of class 2 for a target of 2 classes
    (lambda t: t.update(task="regression"), "regression"),
])
def test_a_made_up_or_malformed_target_identity_is_refused(world, tmp_path, edit, word):
    meta, tensors, _ = parts(world["plain"])
    tensors["labels"] = torch.tensor([0, 1, 2, 2])[: len(tensors["labels"])]
    edit(meta["target"])
    with pytest.raises(IntegrityError, match=word) as caught:
        FingerprintSet.load(rehashed(tmp_path / "odd.safetensors", meta, tensors))
    assert "\n" not in str(caught.value)


def test_verify_target_confirms_the_hash_the_set_names(world, tmp_path, counted, capsys):
    with pytest.raises(IntegrityError, match="another model"):
        verify_suspect(world["plain"], suspect=world["other"], mode="black-box", records=tmp_path / "r", target=world["other"])
    assert counted == []
    done = verify_suspect(world["plain"], suspect=world["other"], mode="black-box", records=tmp_path / "r", target=world["target"])
    assert done.record["fingerprints"]["target_confirmed"]["sha256"] == FingerprintSet.load(world["plain"]).target["sha256"]
    code, _, err = run_cli(["verify", "--fingerprints", str(world["plain"]), "--suspect", str(world["other"]), "--mode", "black-box",
                            "--records", str(tmp_path / "r"), "--target", str(world["zeroed"])], capsys)
    assert code == 2 and "another model" in err and len(err.strip().splitlines()) == 1
