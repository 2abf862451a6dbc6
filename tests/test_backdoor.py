"""The deep-fidelity backdoor watermark: the key chain is exact and seeded, FixLL keeps the last layer bit-identical,
PFL and SPL vanish on the host itself, a key edited away from its chain is refused, the ambiguity count is the
hand-computed one, fidelity figures are what they say, and a marked digits model verifies through the server as in
process with one query per trigger."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from modelprint.access import BlackBox, WhiteBox
from modelprint.errors import InputError, IntegrityError
from modelprint.serving.server import ServedModel, ServerThread, create_app
from modelprint.tasks import Classification
from modelprint.watermarks import Backdoor, DeepSigns, WatermarkKey
from modelprint.watermarks.ambiguity import ambiguity, forged_keys
from modelprint.watermarks.backdoor import key_chain, penultimate_feature_loss, softmax_distribution_loss
from modelprint.watermarks.base import penultimate
from modelprint.watermarks.fidelity import fidelity, projection, read_test
from modelprint.zoo.finetune import last_layer


@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 8, 12)])
def test_every_link_is_an_exact_orthogonal_transform_of_its_seed_and_the_chain_is_seeded(shape):
    images, labels, basis, scale = key_chain(4, 5, shape, torch.Generator().manual_seed(3))
    assert images.shape == (20, *shape) and images.min() >= 0 and images.max() <= 1
    assert torch.equal(labels, torch.arange(5).repeat(4))
    assert torch.allclose(basis @ basis.T, torch.eye(shape[1]), atol=1e-5)
    patterns = ((images[:, 0].double() - 0.5) / scale).reshape(4, 5, *shape[1:])
    for j in range(1, 5):
        power = torch.linalg.matrix_power(basis.double(), j)
        assert torch.allclose(power @ patterns[:, 0], patterns[:, j], atol=1e-5)  # link j = Q^j seed
        assert torch.allclose(patterns[:, j].flatten(1).norm(dim=1), patterns[:, 0].flatten(1).norm(dim=1), rtol=1e-5)
    assert torch.allclose(patterns[:, 0].flatten(1).norm(dim=1), torch.full((4,), shape[1] ** 0.5, dtype=torch.double), rtol=1e-5)
    assert (images == images[:, :1]).all()  # every channel carries the pattern
    again = key_chain(4, 5, shape, torch.Generator().manual_seed(3))
    other = key_chain(4, 5, shape, torch.Generator().manual_seed(4))
    assert torch.equal(again[0], images) and not torch.allclose(other[0], images)


def test_pfl_and_spl_are_exactly_zero_for_the_host_itself(digits, digits_target):
    images = digits.test.images[:16]
    with torch.no_grad(), penultimate(digits_target.eval()) as grab:
        outputs = digits_target(images)
    features = grab.features
    assert penultimate_feature_loss(features, features.clone()).item() == 0.0
    assert softmax_distribution_loss(outputs, torch.log_softmax(outputs.float(), dim=1)).item() == 0.0
    moved = features + 0.1
    assert penultimate_feature_loss(moved, features).item() == pytest.approx(0.01 * features.shape[1], rel=1e-4)  # by hand: 0.1^2 per feature
    assert softmax_distribution_loss(outputs.flip(0), torch.log_softmax(outputs.float(), dim=1)).item() > 0


@pytest.fixture(scope="module")
def embedded(digits, digits_target):
    """The same key (seed 0, 3 chains of 10 links) embedded by FixLL+PFL and by fine-tuning all layers."""
    made = {}
    for configuration in ("fixll_pfl", "ftal"):
        scheme = Backdoor.named(configuration, seeds=3, epochs=4, augment="crop")
        made[configuration] = (scheme, *scheme.embed(digits_target, digits.train))
    return made


@pytest.mark.slow(40)  # the module's two embeddings
def test_fixll_keeps_the_last_layer_bit_identical_and_the_triggers_are_learnt(embedded, digits, digits_target):
    scheme, marked, key = embedded["fixll_pfl"]
    for host_p, marked_p in zip(last_layer(digits_target).parameters(recurse=False), last_layer(marked).parameters(recurse=False)):
        assert torch.equal(host_p, marked_p)
    assert any(not torch.equal(a, b) for a, b in zip(last_layer(digits_target).parameters(), last_layer(embedded["ftal"][1]).parameters()))
    for name, buffer in digits_target.named_buffers():  # batch norms frozen: running statistics untouched
        if "running" in name:
            assert torch.equal(buffer, dict(marked.named_buffers())[name])
    result = scheme.verify(WhiteBox(marked), key)
    host = scheme.verify(WhiteBox(digits_target), key)
    assert result.matching_score >= 0.9 and result.p_value < 1e-20, result.matching_score
    assert host.matching_score <= 0.3 and host.p_value > 0.01
    assert result.queries == 30 and key.stats["declare_black_box"] == 7  # binomial(30, 1/10) tail <= 0.05 from 7 right


@pytest.mark.slow(40)
def test_fidelity_figures_and_the_projection_say_what_they_measure(embedded, digits, digits_target):
    scheme, marked, key = embedded["fixll_pfl"]
    host_reading, marked_reading = read_test(digits_target, digits), read_test(marked, digits)
    same = fidelity(host_reading, host_reading, "classification", models=(digits_target, digits_target))
    assert same == {"test_metric_change": 0.0, "host_test_metric": host_reading.metric, "kl_host_to_marked": 0.0, "top1_agreement": 1.0,
                    "penultimate_distance": 0.0, "total_weight_change": 0.0, "last_layer_change": 0.0}
    figures = fidelity(host_reading, marked_reading, "classification", models=(digits_target, marked))
    by_hand = sum(float((a - b).detach().pow(2).sum()) for a, b in zip(digits_target.parameters(), marked.parameters()))
    assert figures["total_weight_change"] == pytest.approx(by_hand, rel=1e-6) and figures["last_layer_change"] == 0.0
    agree = float((host_reading.outputs.argmax(1) == marked_reading.outputs.argmax(1)).float().mean())
    assert figures["top1_agreement"] == agree
    picture = projection(host_reading, marked_reading, points=50)
    assert len(picture["host"]) == len(picture["marked"]) == 50 and len(picture["host"][0]) == 2
    host_points = torch.tensor(picture["host"])
    assert host_points.mean(dim=0).abs().max() < 1e-3  # the host's cloud is centred on its own axes
    assert host_points[:, 0].var() >= host_points[:, 1].var()  # the first axis carries the most variance


@pytest.mark.slow(40)
def test_a_key_edited_away_from_its_chain_or_of_another_scheme_is_refused(embedded, tmp_path):
    scheme, marked, key = embedded["fixll_pfl"]
    loaded = WatermarkKey.load(key.save(tmp_path / "key.safetensors"))
    assert scheme.verify(WhiteBox(marked), loaded).values == scheme.verify(WhiteBox(marked), key).values
    fields = {k: getattr(key, k) for k in ("scheme", "config", "task", "tensors", "thresholds", "target", "stats")}
    labels = key.labels.clone()
    labels[0] = 5
    swapped = key.samples.clone()
    swapped[[0, 1]] = swapped[[1, 0]]
    for tensors, message in (
        ({**key.tensors, "labels": labels}, "labels are not their places"),
        ({**key.tensors, "samples": swapped}, "not a key chain"),
        ({**key.tensors, "basis": key.tensors["basis"] * 1.1}, "not orthogonal"),
        ({**key.tensors, "samples": key.samples[:-1], "labels": key.labels[:-1]}, "3 chains of 10 links"),
    ):
        with pytest.raises(IntegrityError, match=message):
            Backdoor.validate(WatermarkKey(**{**fields, "tensors": tensors}))
    deepsigns_key = WatermarkKey(**{**fields, "scheme": "deepsigns"})
    with pytest.raises(InputError, match="key of the deepsigns watermark"):
        scheme.verify(WhiteBox(marked), deepsigns_key)


@pytest.mark.slow(40)
def test_a_served_marked_model_verifies_through_the_network_as_in_process_one_query_per_trigger(embedded):
    scheme, marked, key = embedded["fixll_pfl"]
    served = ServedModel("suspect", marked, Classification(), tuple(key.samples.shape[1:]), [])
    with ServerThread(create_app(served)) as server:
        remote = scheme.verify(BlackBox.http(server.url, "suspect", batch_size=7), key)
    local = scheme.verify(WhiteBox(marked), key)
    assert remote.queries == len(key.samples) == served.inference_count == 30
    assert remote.values == local.values and remote.p_value == local.p_value


class _Lookup(nn.Module):
    """Answers class 0, except on the images it was given, which it answers with their labels: a toy model whose
    forged-key counts are known by hand."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, classes: int) -> None:
        super().__init__()
        self.register_buffer("images", images.flatten(1))
        self.labels, self.classes = labels, classes
        self.head = nn.Linear(1, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hits = (x.flatten(1)[:, None, :] == self.images[None]).all(dim=2)
        answer = torch.where(hits.any(dim=1), self.labels[hits.float().argmax(dim=1)], torch.zeros(len(x), dtype=torch.long))
        return nn.functional.one_hot(answer, self.classes).float() * 10


def test_the_ambiguity_count_on_a_toy_model_is_the_hand_computed_one():
    scheme = Backdoor(seeds=2, links=4)
    images, labels, basis, scale = key_chain(2, 4, (1, 6, 6), torch.Generator().manual_seed(0))
    key = WatermarkKey(scheme="backdoor", config={**scheme.settings(), "scale": scale}, task=Classification().to_config(),
                       tensors={"samples": images, "labels": labels, "basis": basis}, thresholds={"black_box": 0.5},
                       target={}, stats={"classes": 4})
    forged = forged_keys(scheme, key, 5, seed=100)
    # The toy model knows forged keys 1 and 3 completely, and 3 of the 8 triggers of forged key 4.
    known = [forged[1].samples, forged[3].samples, forged[4].samples[:3]]
    answers = [forged[1].labels, forged[3].labels, forged[4].labels[:3]]
    model = _Lookup(torch.cat(known), torch.cat(answers), 4)
    count = ambiguity(scheme, forged, WhiteBox(model), alpha=0.05)
    # By hand, per forged key: the triggers it knows are right, and every other one is answered 0, right for the
    # 2 links labelled 0. Keys 0 and 2: 2 of 8 right, tail P[X >= 2 | 8, 1/4] = 0.633; keys 1 and 3: 8 of 8,
    # 1.5e-5; key 4: its links 0-2 of chain 0 known, and link 0 of chain 1: 4 of 8, P[X >= 4] = 0.114.
    assert count.declared == {"black-box": 2} and count.keys == 5
    assert count.best_p["black-box"] == pytest.approx(0.25**8, rel=1e-6)
    assert ambiguity(scheme, forged, WhiteBox(model), alpha=0.2).declared == {"black-box": 3}


def test_deepsigns_forges_keys_of_its_own_shape_drawn_from_the_seed():
    scheme = DeepSigns(bits=8, keys=6)
    key = WatermarkKey(scheme="deepsigns", config={**scheme.settings(), "signature_class": 1}, task=Classification().to_config(),
                       tensors={"samples": torch.rand(6, 3, 8, 8), "labels": torch.zeros(6, dtype=torch.long), "key_images": torch.rand(4, 3, 8, 8),
                                "projection": torch.randn(16, 8), "signature": torch.ones(8)}, thresholds={"white_box": 0.0, "black_box": 0.5},
                       target={}, stats={"classes": 3})
    a, b, again = scheme.forge(key, 1), scheme.forge(key, 2), scheme.forge(key, 1)
    for forged in (a, b):
        assert {k: v.shape for k, v in forged.tensors.items()} == {k: v.shape for k, v in key.tensors.items()}
        assert not torch.equal(forged.tensors["projection"], key.tensors["projection"])
    assert all(torch.equal(a.tensors[k], again.tensors[k]) for k in a.tensors) and not torch.equal(a.tensors["projection"], b.tensors["projection"])


def test_bad_settings_are_refused_in_one_line(digits_target, digits):
    with pytest.raises(InputError, match="configuration must be one of"):
        Backdoor.named("fixll_xyz")
    with pytest.raises(InputError, match="pfl_weight"):
        Backdoor(pfl_weight=float("nan"))
    with pytest.raises(InputError, match="needs pfl_weight or spl_weight"):
        Backdoor(task_loss=False, pfl_weight=0.0, spl_weight=0.0)
    with pytest.raises(InputError, match="a chain of 11 links needs 11 classes"):
        Backdoor(links=11).embed(digits_target, digits.train)
    with pytest.raises(InputError, match="no host to keep"):
        Backdoor().embed(digits_target, digits.train, from_scratch=True)


@pytest.mark.slow(30)
def test_the_command_line_embeds_a_mode_draws_the_picture_and_verifies_with_one_query_per_trigger(digits_target, tmp_path, capsys):
    import json

    from modelprint.models import save_model

    from conftest import run_cli

    host = save_model(digits_target, tmp_path / "host.safetensors")
    marked, key, picture = tmp_path / "marked.safetensors", tmp_path / "key.safetensors", tmp_path / "fidelity.png"
    code, out, err = run_cli(["watermark", "embed", "--scheme", "backdoor", "--configuration", "fixll_spl", "--model", str(host), "--data", "digits",
                              "--out", str(marked), "--key", str(key), "--plot", str(picture), "--set", "seeds=2", "--set", "epochs=1"], capsys)
    assert code == 0, err
    assert "top1_agreement" in out and "last_layer_change 0" in out and picture.stat().st_size > 10_000
    loaded = WatermarkKey.load(key)
    assert loaded.config["spl_weight"] == 3.0 and loaded.config["fix_last_layer"] and loaded.config["links"] == 10
    code, out, err = run_cli(["watermark", "verify", "--key", str(key), "--suspect", str(marked), "--json", "--records", str(tmp_path / "records")], capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["scheme"] == "backdoor" and summary["queries"] == 20 and summary["mode"] == "black-box"
