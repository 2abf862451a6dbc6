import pytest
import torch

from modelprint.access import BlackBox, WhiteBox
from modelprint.errors import CapabilityError, InputError, IntegrityError, QueryBudgetExceeded
from modelprint.fingerprints import FingerprintSet, SaliencyFingerprint, scheme_for
from modelprint.models import save_model, state_sha256
from modelprint.tasks import Classification

N = 12


@pytest.fixture(scope="module")
def fingerprints(digits, digits_target):
    scheme = SaliencyFingerprint(n=N, steps=10, seed=3)
    return scheme.generate(digits_target, digits.train.images[:200], digits.train.labels[:200])


def test_generation_keeps_labels_and_budget(fingerprints, digits_target):
    samples, originals = fingerprints.samples, fingerprints.tensors["originals"]
    assert samples.shape == (N, 3, 32, 32)
    with torch.no_grad():
        predicted = digits_target(samples).argmax(dim=1)
    assert torch.equal(predicted, fingerprints.labels)  # label invariance, measured afresh
    assert (samples - originals).abs().max() <= 0.1 + 1e-6
    assert samples.min() >= 0 and samples.max() <= 1
    assert fingerprints.stats["psnr_db_mean"] > 20
    assert fingerprints.target["sha256"] == state_sha256(digits_target)
    # Thresholds follow the paper's rule on the target: t_wb lies between the originals' and the fingerprints' means.
    stats = fingerprints.stats
    lo, hi = sorted([stats["target_wb_value_originals"], stats["target_wb_value_fingerprints"]])
    assert lo <= fingerprints.thresholds["white_box"] <= hi


def test_generation_moves_saliency_onto_the_pattern(fingerprints):
    stats = fingerprints.stats
    assert stats["target_wb_value_fingerprints"] > stats["target_wb_value_originals"]


def test_generation_is_seeded(digits, digits_target, fingerprints):
    again = SaliencyFingerprint(n=N, steps=10, seed=3).generate(digits_target, digits.train.images[:200], digits.train.labels[:200])
    assert torch.equal(again.samples, fingerprints.samples)


def test_black_box_sends_exactly_2n_and_respects_budget(fingerprints, digits_target):
    scheme = scheme_for(fingerprints)
    box = WhiteBox(digits_target).black_box(Classification())
    result = scheme.verify(box, fingerprints)
    assert result.mode == "black-box" and result.queries == 2 * N and box.queries == 2 * N
    assert 0 <= result.matching_score <= 1 and len(result.values) == N
    short = WhiteBox(digits_target).black_box(Classification(), budget=2 * N - 1)
    with pytest.raises(QueryBudgetExceeded):
        scheme.verify(short, fingerprints)
    assert short.queries == 0  # nothing was sent
    exact = WhiteBox(digits_target).black_box(Classification(), budget=2 * N)
    assert scheme.verify(exact, fingerprints).queries == 2 * N


def test_black_box_counts_one_query_per_image_across_batches():
    box = BlackBox(lambda x: torch.zeros(len(x), 2), batch_size=3, budget=10)
    assert box.predict(torch.rand(7, 3, 4, 4)).shape == (7, 2)
    assert box.queries == 7 and box.remaining == 3
    with pytest.raises(QueryBudgetExceeded):
        box.predict(torch.rand(4, 3, 4, 4))
    assert box.queries == 7


def test_white_box_needs_white_box_access(fingerprints, digits_target):
    scheme = scheme_for(fingerprints)
    box = BlackBox.from_model(digits_target, Classification())
    with pytest.raises(CapabilityError, match="white-box access"):
        scheme.verify(box, fingerprints, mode="white-box")
    result = scheme.verify(WhiteBox(digits_target), fingerprints)
    assert result.mode == "white-box" and result.queries == 0 and result.n_samples == N


def test_fixed_thresholds_override_the_stored_ones(fingerprints, digits_target):
    low = SaliencyFingerprint(t_wb=0.0).verify(WhiteBox(digits_target), fingerprints)
    high = SaliencyFingerprint(t_wb=1.01).verify(WhiteBox(digits_target), fingerprints)
    assert low.matching_score == 1.0 and high.matching_score == 0.0 and low.threshold == 0.0


def test_save_load_round_trip_and_tampering(fingerprints, tmp_path, digits_target):
    path = fingerprints.save(tmp_path / "fp.safetensors")
    loaded = FingerprintSet.load(path)
    assert loaded.sha256() == fingerprints.sha256()
    assert torch.equal(loaded.samples, fingerprints.samples)
    assert loaded.thresholds == fingerprints.thresholds and loaded.config == fingerprints.config
    assert scheme_for(loaded) == scheme_for(fingerprints)

    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0xFF  # flip bits in the last tensor's bytes
    (tmp_path / "tampered.safetensors").write_bytes(bytes(raw))
    with pytest.raises(IntegrityError, match="modified"):
        FingerprintSet.load(tmp_path / "tampered.safetensors")
    (tmp_path / "truncated.safetensors").write_bytes(path.read_bytes()[: len(raw) // 2])
    with pytest.raises(IntegrityError, match="truncated"):
        FingerprintSet.load(tmp_path / "truncated.safetensors")
    model_file = save_model(digits_target, tmp_path / "model.safetensors")
    with pytest.raises(IntegrityError, match="not a modelprint fingerprint set"):
        FingerprintSet.load(model_file)


def test_paper_configuration_is_kept_by_name():
    paper = SaliencyFingerprint.paper(n=5)
    assert (paper.cam_logit, paper.sam_norm, paper.keep, paper.bb_threshold) == (False, "none", "label", "originals")
    assert paper != SaliencyFingerprint(n=5)
    assert "SaliencyFingerprint(" in repr(paper) and "xi=0.1" in repr(paper)
    with pytest.raises(TypeError):
        SaliencyFingerprint(5)  # settings are keyword-only


def test_bad_settings_and_inputs(digits, digits_target):
    with pytest.raises(InputError, match="norm"):
        SaliencyFingerprint(norm="l1")
    with pytest.raises(InputError, match="outside"):
        SaliencyFingerprint(pattern=((9, 9),)).pattern_mask((4, 4))
    with pytest.raises(InputError, match="expects 3x32x32"):
        SaliencyFingerprint(n=2).generate(digits_target, torch.rand(4, 3, 16, 16), torch.zeros(4, dtype=torch.long))
    with pytest.raises(InputError, match="out of range"):
        SaliencyFingerprint(n=2).generate(digits_target, digits.train.images[:4], torch.full((4,), 12))
    with pytest.raises(InputError, match="NaN"):
        SaliencyFingerprint(n=2).generate(digits_target, torch.full((4, 3, 32, 32), float("nan")), torch.zeros(4, dtype=torch.long))
    with pytest.raises(InputError, match="needed"):
        SaliencyFingerprint(n=500).generate(digits_target, digits.train.images[:20], digits.train.labels[:20])
