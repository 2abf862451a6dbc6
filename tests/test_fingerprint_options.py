"""The optional terms of saliency-fingerprint generation (references, surrogates, occlusion) and the black-box
score variants: each acts in the direction it claims, on a small digits target and small helper models."""

import math
from dataclasses import replace

import pytest
import torch

from modelprint.access import WhiteBox
from modelprint.errors import InputError
from modelprint.fingerprints.saliency import OWNER_TASK_SETTINGS
from modelprint.protocol import EvaluationConfig
from modelprint.fingerprints import FingerprintSet, SaliencyFingerprint, scheme_for
from modelprint.fingerprints.saliency import OWNER_MODELS
from modelprint.models import build_model
from modelprint.tasks import Classification, Regression
from modelprint.train import TrainConfig, train_supervised

N = 10


@pytest.fixture(scope="module")
def reference(digits):
    """An independently trained model (another seed) standing for the owner's reference."""
    torch.manual_seed(7)
    model = build_model("resnet18", num_outputs=10, width=8)
    train_supervised(model, digits.train, TrainConfig(epochs=3, seed=7, augment="crop"), progress=False)
    return model.eval()


def _generate(scheme, target, digits, **helpers):
    return scheme.generate(target, digits.train.images[:150], digits.train.labels[:150], **helpers)


def _mean_white_box(model, fingerprints) -> float:
    return float(torch.tensor(scheme_for(fingerprints).verify(WhiteBox(model), fingerprints).values).mean())


def test_reference_penalty_lowers_the_references_saliency_on_the_pattern(digits, digits_target, reference):
    plain = _generate(SaliencyFingerprint(n=N, steps=10, seed=1), digits_target, digits)
    penalised = _generate(SaliencyFingerprint(n=N, steps=10, seed=1, beta=3.0), digits_target, digits, references=[reference])
    assert _mean_white_box(reference, penalised) < _mean_white_box(reference, plain) - 0.05
    assert penalised.config["reference_sha256"] and penalised.stats["reference_models"] == 1
    with torch.no_grad():
        assert torch.equal(digits_target(penalised.samples).argmax(dim=1), penalised.labels)  # labels still kept


def test_occlusion_term_raises_the_targets_black_box_value(digits, digits_target):
    plain = _generate(SaliencyFingerprint(n=N, steps=10, seed=1, bb_score="log"), digits_target, digits)
    occluded = _generate(SaliencyFingerprint(n=N, steps=10, seed=1, bb_score="log", occlusion=3.0), digits_target, digits)
    assert occluded.stats["target_bb_change_fingerprints"] > plain.stats["target_bb_change_fingerprints"]


def test_surrogate_reward_raises_the_surrogates_saliency_on_the_pattern(digits, digits_target, reference):
    # Any model can play the surrogate here: the reward must pull its saliency onto P.
    plain = _generate(SaliencyFingerprint(n=N, steps=10, seed=1), digits_target, digits)
    rewarded = _generate(SaliencyFingerprint(n=N, steps=10, seed=1, gamma=3.0), digits_target, digits, surrogates=[reference])
    assert _mean_white_box(reference, rewarded) > _mean_white_box(reference, plain) + 0.05


def test_black_box_score_variants_and_their_queries(digits, digits_target):
    diff = _generate(SaliencyFingerprint(n=N, steps=5, seed=1, bb_score="diff", bb_threshold="midpoint"), digits_target, digits)
    box = WhiteBox(digits_target).black_box(Classification())
    result = scheme_for(diff).verify(box, diff)
    assert result.queries == 4 * N and box.queries == 4 * N
    # "diff" subtracts the original's change: on the originals themselves every value is exactly zero.
    originals = replace(diff, tensors={**diff.tensors, "samples": diff.tensors["originals"]})
    assert torch.allclose(torch.tensor(scheme_for(diff).verify(WhiteBox(digits_target), originals, mode="black-box").values), torch.zeros(N))
    log = _generate(SaliencyFingerprint(n=N, steps=5, seed=1, bb_score="log"), digits_target, digits)
    assert scheme_for(log).verify(WhiteBox(digits_target).black_box(Classification()), log).queries == 2 * N


def test_helper_settings_fail_early(digits, digits_target, reference):
    with pytest.raises(InputError, match="reference models"):
        _generate(SaliencyFingerprint(n=N, beta=1.0), digits_target, digits)
    with pytest.raises(InputError, match="surrogate models"):
        _generate(SaliencyFingerprint(n=N, gamma=1.0), digits_target, digits)
    with pytest.raises(InputError, match="ignored"):
        _generate(SaliencyFingerprint(n=N), digits_target, digits, references=[reference])
    with pytest.raises(InputError, match="bb_score"):
        SaliencyFingerprint(bb_score="squared")
    with pytest.raises(InputError, match="log"):
        SaliencyFingerprint(n=N, bb_score="log")._check_helpers(Regression(), (), (), ())
    with pytest.raises(InputError, match="reference models"):
        EvaluationConfig(scheme={"beta": 1.0})
    with pytest.raises(InputError, match="would not use them"):
        EvaluationConfig(references=2)
    with pytest.raises(InputError, match="calibration models"):
        _generate(SaliencyFingerprint(n=N, wb_threshold="calibration"), digits_target, digits)
    with pytest.raises(InputError, match="ignored"):
        _generate(SaliencyFingerprint(n=N), digits_target, digits, calibration=[reference])
    with pytest.raises(InputError, match="go together"):
        EvaluationConfig(scheme={"bb_threshold": "calibration"})


def test_an_evaluation_without_a_named_configuration_takes_its_presets():
    paper = EvaluationConfig(preset="paper")
    assert paper.scheme == {"preset": "owner"} and paper.owner_counts() == OWNER_MODELS
    assert paper.fingerprint_scheme(2) == SaliencyFingerprint.named("owner", n=100, seed=2)
    quick = EvaluationConfig(preset="quick")
    assert quick.scheme == {"preset": "default"} and set(quick.owner_counts().values()) == {0}
    fewer = EvaluationConfig(preset="paper", references=2, calibration=1)
    assert fewer.owner_counts() == {"references": 2, "surrogates": OWNER_MODELS["surrogates"], "calibration": 1}
    regression = EvaluationConfig(preset="paper", task="regression", data="digits")
    assert regression.scheme == {"preset": "owner", **OWNER_TASK_SETTINGS["regression"]}  # recorded in the report
    assert regression.fingerprint_scheme(0) == SaliencyFingerprint.named("owner", n=100, seed=0, **OWNER_TASK_SETTINGS["regression"])
    assert regression.fingerprint_scheme(0).bb_score == "abs"  # "log" needs a probability
    named = EvaluationConfig(preset="paper", task="similarity", data="digits", scheme={"preset": "owner", "bb_score": "diff", "bb_threshold": "midpoint"})
    assert named.fingerprint_scheme(0).bb_score == "diff"  # a setting the run names wins over the task's
    with pytest.raises(InputError, match="needs surrogate models"):
        EvaluationConfig(scheme={"preset": "owner"}, surrogates=0)
    with pytest.raises(InputError, match="configuration must be one of"):
        EvaluationConfig(scheme={"preset": "best"})


def test_calibration_thresholds_lie_midway_between_target_and_calibration_models(digits, digits_target, reference):
    scheme = SaliencyFingerprint(n=N, steps=5, seed=1, wb_threshold="calibration", bb_threshold="calibration")
    calibrated = _generate(scheme, digits_target, digits, calibration=[reference])
    target_wb, null_wb = _mean_white_box(digits_target, calibrated), _mean_white_box(reference, calibrated)
    assert calibrated.thresholds["white_box"] == pytest.approx((target_wb + null_wb) / 2, abs=1e-6)
    bb = [torch.tensor(scheme.verify(WhiteBox(m), calibrated, mode="black-box").values).mean() for m in (digits_target, reference)]
    assert calibrated.thresholds["black_box"] == pytest.approx(float(sum(bb) / 2), abs=1e-6)
    assert calibrated.stats["calibration_wb_value_fingerprints"] == pytest.approx(null_wb, abs=1e-6)
    assert calibrated.config["calibration_sha256"] and calibrated.stats["calibration_models"] == 1
    # The same samples as without calibration (it is never part of the objective); only the thresholds differ.
    plain = _generate(replace(scheme, wb_threshold="target", bb_threshold="originals"), digits_target, digits)
    assert torch.equal(plain.samples, calibrated.samples)


def test_settings_parse_from_the_command_line():
    parsed = SaliencyFingerprint.parse_settings(["beta=1", "cam_logit=false", "pattern=[[0,0],[0,1]]", "layer=net.layer3", "t_wb=null"])
    assert parsed == {"beta": 1, "cam_logit": False, "pattern": [[0, 0], [0, 1]], "layer": "net.layer3", "t_wb": None}
    assert SaliencyFingerprint(**parsed).pattern == ((0, 0), (0, 1))
    with pytest.raises(InputError, match="SETTING=VALUE"):
        SaliencyFingerprint.parse_settings(["nonsense=1"])


def test_per_sample_thresholds_are_stored_and_used(digits, digits_target, reference, tmp_path):
    scheme = SaliencyFingerprint(n=N, steps=5, seed=1, wb_threshold="per_sample", bb_threshold="per_sample")
    fingerprints = _generate(scheme, digits_target, digits, calibration=[reference])
    target_values = torch.tensor(scheme.verify(WhiteBox(digits_target), fingerprints).values)
    null_values = torch.tensor(scheme.verify(WhiteBox(reference), fingerprints).values)
    per_sample = fingerprints.tensors["t_white_box"]
    assert torch.allclose(per_sample, (target_values + null_values) / 2, atol=1e-6)
    assert fingerprints.thresholds["white_box"] == pytest.approx(float(per_sample.mean()), abs=1e-6)
    assert fingerprints.tensors["t_black_box"].shape == (N,)
    # A suspect's score counts the samples where it reaches that sample's own threshold, after a save/load too.
    fingerprints.save(tmp_path / "fp.safetensors")
    loaded = type(fingerprints).load(tmp_path / "fp.safetensors")
    result = scheme_for(loaded).verify(WhiteBox(reference), loaded)
    assert result.matching_score == pytest.approx(float((null_values >= per_sample).float().mean()))
    assert scheme_for(loaded).verify(WhiteBox(digits_target), loaded).matching_score == pytest.approx(float((target_values >= per_sample).float().mean()))


def test_thresholds_anchored_on_surrogates_lie_midway_between_surrogates_and_calibration_models(digits, digits_target, reference):
    torch.manual_seed(7)
    surrogate = build_model("resnet18", num_outputs=10, width=8).eval()  # any model stands in for a distilled copy here
    scheme = SaliencyFingerprint(n=N, steps=5, seed=1, wb_threshold="per_sample", bb_threshold="calibration", threshold_anchor="surrogates")
    fingerprints = _generate(scheme, digits_target, digits, surrogates=[surrogate], calibration=[reference])
    surrogate_wb = torch.tensor(scheme.verify(WhiteBox(surrogate), fingerprints).values)
    null_wb = torch.tensor(scheme.verify(WhiteBox(reference), fingerprints).values)
    assert torch.allclose(fingerprints.tensors["t_white_box"], (surrogate_wb + null_wb) / 2, atol=1e-6)
    surrogate_bb = torch.tensor(scheme.verify(WhiteBox(surrogate), fingerprints, mode="black-box").values)
    null_bb = torch.tensor(scheme.verify(WhiteBox(reference), fingerprints, mode="black-box").values)
    assert fingerprints.thresholds["black_box"] == pytest.approx(float(((surrogate_bb + null_bb) / 2).mean()), abs=1e-6)
    with pytest.raises(InputError, match="needs surrogate models"):
        _generate(scheme, digits_target, digits, calibration=[reference])
    with pytest.raises(InputError, match="moves a 'calibration' or 'per_sample' threshold"):
        SaliencyFingerprint(threshold_anchor="surrogates")


def test_black_box_settings_make_a_second_group_that_only_black_box_verification_reads(digits, digits_target, reference, tmp_path):
    white_scheme = SaliencyFingerprint(n=N, steps=5, seed=1)
    black_scheme = replace(white_scheme, beta=1.0, bb_score="log")  # only the black-box group uses the reference
    white = _generate(white_scheme, digits_target, digits)
    black = _generate(black_scheme, digits_target, digits, references=[reference])
    scheme = replace(white_scheme, black_box_settings={"beta": 1.0, "bb_score": "log"})
    joined = _generate(scheme, digits_target, digits, references=[reference])
    assert torch.equal(joined.samples, torch.cat([white.samples, black.samples]))  # each group as made alone
    assert joined.tensors["mode"].tolist() == [1] * N + [2] * N
    assert joined.thresholds == {"white_box": white.thresholds["white_box"], "black_box": black.thresholds["black_box"]}
    path = joined.save(tmp_path / "joined.safetensors")
    loaded = FingerprintSet.load(path)
    verifier = scheme_for(loaded)
    assert verifier.black_box_settings == (("bb_score", "log"), ("beta", 1.0))  # stored with the set
    for mode, group in (("white-box", white), ("black-box", black)):
        result = verifier.verify(WhiteBox(reference), loaded, mode=mode)
        alone = scheme_for(group).verify(WhiteBox(reference), group, mode=mode)
        assert result.n_samples == N and result.values == alone.values and result.threshold == alone.threshold
    assert verifier.verify(WhiteBox(reference), loaded, mode="black-box").queries == 2 * N
    with pytest.raises(InputError, match="cannot replace n"):
        SaliencyFingerprint(black_box_settings={"n": 5})
    with pytest.raises(InputError, match="black_box_settings: .*'gama'"):
        SaliencyFingerprint(black_box_settings={"gama": 1.0})
    with pytest.raises(InputError, match="beta=1 needs reference models"):
        _generate(scheme, digits_target, digits)


def test_pool_selection_keeps_the_samples_with_the_largest_conferrability_margin(digits, digits_target, reference):
    torch.manual_seed(7)
    surrogate = build_model("resnet18", num_outputs=10, width=8).eval()
    pooled = SaliencyFingerprint(n=2 * N, steps=5, seed=1)  # the whole pool, without selection
    everything = _generate(pooled, digits_target, digits)
    scheme = SaliencyFingerprint(n=N, steps=5, seed=1, pool=2)
    kept = _generate(scheme, digits_target, digits, references=[reference], surrogates=[surrogate])
    assert len(kept.samples) == N and kept.stats["selection_wb_margin_kept"] >= kept.stats["selection_wb_margin_pool"]
    margin = torch.tensor(pooled.verify(WhiteBox(surrogate), everything).values) - torch.tensor(pooled.verify(WhiteBox(reference), everything).values)
    expected = margin.topk(N).indices.sort().values
    assert torch.equal(kept.samples, everything.samples[expected])  # the same optimisation, the top-N margins kept
    both = _generate(replace(scheme, select="both"), digits_target, digits, references=[reference], surrogates=[surrogate])
    ranks = []
    for mode in ("white-box", "black-box"):
        values = [torch.tensor(pooled.verify(WhiteBox(m), everything, mode=mode).values) for m in (surrogate, reference)]
        ranks.append((values[0] - values[1]).argsort().argsort().float())
    assert torch.equal(both.samples, everything.samples[((ranks[0] + ranks[1]) / 2).topk(N).indices.sort().values])
    # Anchored on the target and the surrogates: per sample, the smaller of their values is the pirated side.
    anchored = _generate(replace(scheme, select_anchor="target_and_surrogates"), digits_target, digits, references=[reference], surrogates=[surrogate])
    values = [torch.tensor(pooled.verify(WhiteBox(m), everything).values) for m in (digits_target, surrogate, reference)]
    weakest = torch.minimum(values[0], values[1]) - values[2]
    assert torch.equal(anchored.samples, everything.samples[weakest.topk(N).indices.sort().values])
    # Anchored on the worst surrogate: per sample, the smallest surrogate value is the pirated side.
    other = build_model("resnet18", num_outputs=10, width=8).eval()
    worst = _generate(replace(scheme, select_anchor="worst_surrogate"), digits_target, digits, references=[reference], surrogates=[surrogate, other])
    values = [torch.tensor(pooled.verify(WhiteBox(m), everything).values) for m in (surrogate, other)]
    weakest = torch.minimum(values[0], values[1]) - torch.tensor(pooled.verify(WhiteBox(reference), everything).values)
    assert torch.equal(worst.samples, everything.samples[weakest.topk(N).indices.sort().values])
    with pytest.raises(InputError, match="select_anchor='target_and_surrogates' ranks a pool"):
        _generate(replace(scheme, select_anchor="target_and_surrogates"), digits_target, digits, references=[reference])
    assert repr(SaliencyFingerprint(xi=9, pool=5)) == repr(SaliencyFingerprint(xi=9.0, pool=5.0))  # how a run recognises its set
    with pytest.raises(InputError, match="select_anchor must be one of"):
        SaliencyFingerprint(select_anchor="references")
    # A pool larger than the candidates shrinks to them (a small face set has fewer images than 5N).
    few = scheme.generate(digits_target, digits.train.images[:15], digits.train.labels[:15], references=[reference])
    assert len(few.samples) == N and N <= few.stats["pool_size"] <= 15
    with pytest.raises(InputError, match="only 5 candidate images"):
        scheme.generate(digits_target, digits.train.images[:5], digits.train.labels[:5], references=[reference])
    with pytest.raises(InputError, match="pool=2 selects by conferrability"):
        _generate(scheme, digits_target, digits, surrogates=[surrogate])
    with pytest.raises(InputError, match="pool must be >= 1"):
        SaliencyFingerprint(pool=0.5)


def test_the_record_of_a_two_group_set_has_the_thresholds_of_the_rows_its_mode_read(digits, digits_target, reference, tmp_path):
    """A set with one group per mode and per-sample thresholds: each mode's record holds exactly its N values and
    the N thresholds they were compared with (before, 2N thresholds with NaN in the other group's rows)."""
    import json
    import math

    from modelprint.evidence.record import verification_record, write_record

    scheme = SaliencyFingerprint(n=N, steps=3, seed=1, wb_threshold="per_sample", bb_threshold="per_sample",
                                 black_box_settings={"bb_score": "log"})
    joined = _generate(scheme, digits_target, digits, calibration=[reference])
    stored = {mode: joined.tensors[f"t_{mode}"] for mode in ("white_box", "black_box")}
    for mode, rows in (("white-box", slice(0, N)), ("black-box", slice(N, 2 * N))):
        result = scheme_for(joined).verify(WhiteBox(reference), joined, mode=mode)
        record = verification_record(result, joined, suspect={"kind": "test"})
        values, thresholds = record["values"], record["thresholds"]["values"]
        assert len(values) == len(thresholds) == N and record["thresholds"]["rule"] == "per_sample"
        assert thresholds == pytest.approx(stored[mode.replace("-", "_")][rows].tolist())
        assert not any(math.isnan(t) for t in thresholds)
        assert record["matching_score"] == pytest.approx(sum(v >= t for v, t in zip(values, thresholds)) / N)
        json.loads(write_record(record, tmp_path / f"{mode}.json").read_text(), parse_constant=lambda c: pytest.fail(c))


def test_an_l2_budget_per_value_resolves_to_the_radius_of_the_image_size():
    """``xi_rms`` is the root-mean-square change per value: radius xi_rms * sqrt(C * H * W). The regression and
    similarity owner settings give back the radii they were measured with (12 on 64x64x3, 6 on 32x32x3)."""
    scheme = SaliencyFingerprint(norm="l2", xi_rms=0.1)
    assert scheme.radius(torch.zeros(2, 1, 32, 32)).xi == pytest.approx(0.1 * 32)  # sqrt(1024) = 32
    assert scheme.radius(torch.zeros(2, 1, 32, 32)).xi_rms is None
    rms = OWNER_TASK_SETTINGS["regression"]["xi_rms"]
    owner = SaliencyFingerprint.named("owner", xi_rms=rms)
    assert owner.radius(torch.zeros(1, 3, 64, 64)).xi == pytest.approx(12.0, abs=1e-9)
    assert owner.radius(torch.zeros(1, 3, 32, 32)).xi == pytest.approx(6.0, abs=1e-9)
    assert SaliencyFingerprint(norm="l2").radius(torch.zeros(1, 3, 8, 8)).xi == 0.1  # without xi_rms: xi itself
    with pytest.raises(InputError, match="set norm='l2'"):
        SaliencyFingerprint(xi_rms=0.1)


def test_generation_with_a_budget_per_value_stays_inside_its_radius(digits, digits_target):
    images = digits.train.images[:60]
    scheme = SaliencyFingerprint(n=4, steps=3, norm="l2", xi_rms=0.05)
    fingerprints = _generate(scheme, digits_target, digits)
    radius = 0.05 * math.sqrt(images[0].numel())
    change = (fingerprints.samples - fingerprints.tensors["originals"]).flatten(1).norm(dim=1)
    assert fingerprints.config["xi"] == pytest.approx(radius) and fingerprints.config["xi_rms"] is None
    assert 0.45 * radius <= float(change.max()) <= radius + 1e-5  # the random start alone lies at half the radius


def test_each_task_has_a_default_configuration():
    """``generate`` without a configuration makes the scheme's choice for the task: the helper-free default for
    classification, the owner's configuration (which reads helper models) for regression and similarity."""
    assert SaliencyFingerprint.default_configuration("classification") == "default"
    assert SaliencyFingerprint.default_configuration("regression") == "owner"
    assert SaliencyFingerprint.default_configuration("similarity") == "owner"
    assert SaliencyFingerprint.configured("owner", "regression").reads() == ("references", "surrogates", "calibration")
