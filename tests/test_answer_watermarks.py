"""CSP and USP, the watermarks in the API's answers, and the API thief: each perturbation keeps every top-1 and sums
to 1 (and is computed by hand), each exact p-value is checked by hand and is uniform under its null, a wrong key
scores at chance within its binomial bound, the marked answers reach a student only through the API, the
extraction sends exactly its budget (counted at the server), is seeded, resumable and recorded, and `serve
--watermark` answers the marked distribution with the unmarked top-1 labels, verifying over the network as in
process."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from modelprint.access import BlackBox, WhiteBox
from modelprint.answers import KeyedSignal, LearnedSignal
from modelprint.errors import InputError, IntegrityError, QueryBudgetExceeded
from modelprint.metrics import binomial_threshold
from modelprint.models import load_model, save_model, without_answers
from modelprint.serving.server import ServedModel, ServerThread, create_app
from modelprint.tasks import Classification
from modelprint.train import predict
from modelprint.watermarks import WatermarkKey, watermark_named
from modelprint.watermarks.csp import RANDOMISATIONS, phase_randomisation_p_value
from modelprint.watermarks.usp import sign_flip_p_value
from modelprint.zoo import Extract
from modelprint.zoo.build import build_zoo
from modelprint.zoo.spec import SuspectSpec, ZooSpec


def _signal(classes: int, shape: tuple[int, int, int], amplitude: float, margin: float, seed: int, kind: str = "keyed_signal") -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    if kind == "learned_signal":
        module = LearnedSignal(classes=classes, shape=shape, amplitude=amplitude, margin=margin, grid=1)
        module.load_state_dict({"centre": torch.zeros(shape[0]), "spread": torch.ones(shape[0]), "weight": 3 * torch.randn(classes, shape[0], generator=g),
                                "bias": torch.randn(classes, generator=g), "sign": (2 * torch.randint(0, 2, (classes,), generator=g) - 1).float()})
        return module
    module = KeyedSignal(classes=classes, shape=shape, amplitude=amplitude, margin=margin)
    directions = torch.randn(classes, *shape, generator=g)
    module.load_state_dict({"directions": directions / directions.flatten(1).norm(dim=1)[:, None, None, None], "centre": torch.zeros(classes),
                            "spread": torch.ones(classes), "frequency": torch.rand(classes, generator=g) + 0.1,
                            "phase": 2 * math.pi * torch.rand(classes, generator=g)})
    return module


def test_the_perturbation_by_hand_on_a_three_class_distribution():
    module = _signal(3, (1, 1, 1), amplitude=0.2, margin=0.5, seed=0)
    module.directions.fill_(1.0)  # u_j(x) = the pixel's value
    module.frequency.copy_(torch.tensor([1.0, 0.25, 0.5]))
    module.phase.zero_()
    image = torch.full((1, 1, 1, 1), 1.0)  # angles 2 pi f: cos = 1, 0, -1 -> added 0.2, 0.1, 0.0 before the caps
    p = torch.tensor([[0.7, 0.2, 0.1]])
    q = torch.softmax(module(image, p.log()), dim=1)
    added = torch.tensor([0.0, min(0.1, 0.5 * (0.7 - 0.2)), 0.0])  # the top-1 gets nothing; class 1 is under its cap
    assert torch.allclose(q, (p + added) / (1 + added.sum()), atol=1e-6)
    tight = torch.tensor([[0.45, 0.44, 0.11]])  # class 1 is capped at half its gap: 0.005
    q = torch.softmax(module(image, tight.log()), dim=1)
    assert torch.allclose(q, (tight + torch.tensor([0.0, 0.005, 0.0])) / 1.005, atol=1e-6) and q.argmax() == 0


@settings(max_examples=200, deadline=None)
@given(logits=st.lists(st.lists(st.floats(-30, 30), min_size=4, max_size=4), min_size=1, max_size=6),
       ties=st.booleans(), amplitude=st.floats(0, 5), margin=st.floats(0.01, 0.99), seed=st.integers(0, 2**16),
       kind=st.sampled_from(["keyed_signal", "learned_signal"]))
def test_every_top1_is_kept_and_every_answer_sums_to_one(logits, ties, amplitude, margin, seed, kind):
    raw = torch.tensor(logits)
    if ties:
        raw[:, 2] = raw.max(dim=1).values  # a class tied with the top-1
    module = _signal(4, (1, 2, 2), amplitude, margin, seed, kind)
    images = torch.rand((len(raw), 1, 2, 2), generator=torch.Generator().manual_seed(seed))
    q = torch.softmax(module(images, raw), dim=1)
    assert torch.equal(q.argmax(dim=1), torch.softmax(raw, dim=1).argmax(dim=1))
    assert torch.allclose(q.sum(dim=1), torch.ones(len(raw)), atol=1e-5) and bool(torch.isfinite(q).all())


def test_the_randomisation_p_value_by_hand_and_uniform_under_the_null():
    one = torch.tensor([1.0])  # one class: P(cos U >= cos d) = |d| / pi
    for d in (0.0, 0.5, math.pi / 2, 2.5):
        sd = (d / math.pi * (1 - d / math.pi) / RANDOMISATIONS) ** 0.5
        assert abs(phase_randomisation_p_value(one, math.cos(d)) - d / math.pi) <= 4 * sd + 5 / RANDOMISATIONS  # (ties counted: 1e-9)
    assert phase_randomisation_p_value(torch.zeros(3), 0.0) == 1.0  # no information: no evidence
    g = torch.Generator().manual_seed(0)
    strength = torch.rand(10, generator=g)
    p = [phase_randomisation_p_value(strength, float((strength * torch.cos(2 * math.pi * torch.rand(10, generator=g))).sum()), draws=2000)
         for _ in range(400)]
    assert sum(v <= 0.05 for v in p) < binomial_threshold(400, 0.05, 1e-4) and sum(v <= 0.5 for v in p) > 150


def test_the_learned_perturbation_by_hand_on_a_three_class_distribution():
    module = LearnedSignal(classes=3, shape=(1, 2, 2), amplitude=0.2, margin=0.5, grid=1)  # one feature: the mean pixel
    module.load_state_dict({"centre": torch.tensor([0.5]), "spread": torch.tensor([0.25]), "weight": torch.tensor([[1.0], [0.5], [-2.0]]),
                            "bias": torch.tensor([0.0, 0.0, 0.1]), "sign": torch.tensor([1.0, 1.0, -1.0])})
    image = torch.tensor([[[[1.0, 0.0], [1.0, 1.0]]]])  # mean 0.75: feature (0.75 - 0.5) / 0.25 = 1
    t = torch.tanh(torch.tensor([1.0, 0.5, -2.0 + 0.1]))
    assert torch.allclose(module.pattern(image), t[None])
    p = torch.tensor([[0.35, 0.55, 0.1]])  # class 1 is the top-1
    added = torch.tensor([0.5 * (0.55 - 0.35), 0.0, 0.2 * (1 - t[2]) / 2])  # class 0's 0.2 (1 + t_0) / 2 = 0.176 is capped at 0.1
    assert 0.2 * (1 + t[0]) / 2 > 0.1 and 0.2 * (1 - t[2]) / 2 < 0.5 * (0.55 - 0.1)
    q = torch.softmax(module(image, p.log()), dim=1)
    assert torch.allclose(q, (p + added) / (1 + added.sum()), atol=1e-6) and q.argmax() == 1


def test_the_sign_test_by_hand_and_uniform_under_the_null():
    values = torch.tensor([1.0, 2.0])  # sums over the four sign vectors: -3, -1, 1, 3
    assert [sign_flip_p_value(values, s) for s in (3.0, 1.0, -1.0, -3.0)] == [0.25, 0.5, 0.75, 1.0]
    assert sign_flip_p_value(torch.zeros(3), 0.0) == 1.0  # no information: no evidence
    many = torch.ones(20)  # beyond the enumeration: drawn, P(sum of 20 signs >= 20) = 2^-20, floor 1 / (draws + 1)
    assert sign_flip_p_value(many, 20.0) == pytest.approx(1 / 100_001)
    g = torch.Generator().manual_seed(0)
    p = []
    for _ in range(400):
        values = torch.rand(10, generator=g)
        p.append(sign_flip_p_value(values, float(((2 * torch.randint(0, 2, (10,), generator=g) - 1) * values).sum())))
    assert sum(v <= 0.05 for v in p) < binomial_threshold(400, 0.05, 1e-4) and sum(v <= 0.5 for v in p) > 150


#: The smallest p-value each scheme's exact test gives (a 10-class host): CSP's randomisation draws, USP's 2^10 signs.
FLOORS = {"csp": 1 / (RANDOMISATIONS + 1), "usp": 2.0 ** -10}
ANSWER_SETTINGS = {"csp": {"kind": "keyed_signal", "amplitude": 0.1, "margin": 0.5},
                   "usp": {"kind": "learned_signal", "amplitude": 0.1, "margin": 0.5, "grid": 4}}


@pytest.fixture(scope="module", params=["csp", "usp"])
def marked(request, digits, digits_target):
    scheme = watermark_named(request.param, seed=3, inputs=500)  # digits hold 360 test images: every one
    model, key = scheme.embed(digits_target, digits.train, held_out=digits.test)
    return scheme, model, key


def test_the_marked_model_keeps_the_weights_and_every_label_and_verifies(marked, digits, digits_target):
    scheme, model, key = marked
    assert torch.equal(predict(model, digits.test.images).argmax(dim=1), predict(digits_target, digits.test.images).argmax(dim=1))
    plain = without_answers(model)
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), digits_target.state_dict().values()))
    result = scheme.verify(WhiteBox(model), key)
    assert result.matching_score > 0.99 and result.p_value == FLOORS[scheme.name] and result.queries == len(key.samples) == 360
    assert scheme.verify(WhiteBox(plain), key).p_value > 0.05  # the weights alone carry no mark


@pytest.mark.slow(20)
def test_a_wrong_key_scores_at_chance_within_its_binomial_bound(marked, digits_target):
    scheme, model, key = marked
    box = WhiteBox(model)
    trials, alpha = 200, 0.05
    results = [scheme.verify(box, scheme.forge(key, seed)) for seed in range(1000, 1000 + trials)]
    declared = sum(r.p_value <= alpha for r in results)
    # A sound test declares a key of the wrong owner with probability alpha: at most binomial_threshold(...) - 1
    # of 200 keys but with probability 1e-4.
    assert declared < binomial_threshold(trials, alpha, 1e-4), declared
    assert abs(sum(r.matching_score for r in results) / trials - 0.5) < 4 * (1 / 8) ** 0.5 / trials ** 0.5  # score var <= 1/8 per key


@pytest.mark.slow(60)
def test_only_the_api_thief_inherits_the_mark_and_sends_exactly_its_budget_counted_at_the_server(marked, digits):
    scheme, model, key = marked
    served = ServedModel("api", model, Classification(), tuple(key.samples.shape[1:]), [])
    thief = Extract(budget=1000, epochs=8, augment="crop")
    with ServerThread(create_app(served)) as server:
        api = BlackBox.http(server.url, "api", budget=1000, batch_size=50)
        student = thief.steal(api, digits.train.images[:1000], model, seed=5)
        assert served.inference_count == 1000 == api.sent
        with pytest.raises(QueryBudgetExceeded):
            api.predict(digits.train.images[1000:1001])
        assert served.inference_count == 1000  # nothing more was sent
    assert student.spec.answers is None and scheme.verify(WhiteBox(student), key).p_value <= 0.05
    in_process = thief.apply(model, digits.train, seed=5)
    assert in_process.spec.info["queries"] == 1000 and scheme.verify(WhiteBox(in_process), key).p_value <= 0.05
    from modelprint.zoo import FineTune

    assert FineTune(epochs=0).apply(model, digits.train).spec.answers is None  # a thief of the weights gets no answers


@pytest.mark.slow(40)
def test_the_extraction_is_seeded_resumable_and_recorded_in_the_manifest(marked, tmp_path):
    scheme, model, key = marked
    path = save_model(model, tmp_path / "marked.safetensors")
    assert torch.equal(load_model(path)(key.samples[:8]), model(key.samples[:8]))  # the post-processor travels with the weights
    spec = ZooSpec((SuspectSpec("thief", "positive", "extract", {"budget": 300, "epochs": 1, "labels": "hard"}, 7),))
    first = build_zoo(spec, path, "digits", tmp_path / "zoo", executor="inprocess", progress=False)["suspects"][0]
    again = build_zoo(spec, path, "digits", tmp_path / "zoo", executor="inprocess", progress=False)["suspects"][0]
    other = build_zoo(spec, path, "digits", tmp_path / "zoo2", executor="inprocess", progress=False)["suspects"][0]
    assert again["reused"] and other["sha256"] == first["sha256"] == again["sha256"]
    assert first["transform"] == "extract" and first["params"]["budget"] == 300 and first["params"]["labels"] == "hard" and first["seed"] == 7
    assert load_model(first["path"]).spec.info["queries"] == 300


def test_serve_with_a_watermark_answers_the_marked_distribution_with_the_host_labels(marked, digits, digits_target, tmp_path, capsys, monkeypatch):
    from conftest import run_cli

    scheme, model, key = marked
    host_path, key_path = save_model(digits_target, tmp_path / "host.safetensors"), tmp_path / "key.safetensors"
    key.save(key_path)
    captured = {}
    monkeypatch.setattr("modelprint.serving.server.serve", lambda served, **kwargs: captured.setdefault("served", served))
    code, _, err = run_cli(["serve", "--model", str(host_path), "--watermark", str(key_path)], capsys)
    assert code == 0, err
    images = digits.test.images
    with ServerThread(create_app(captured["served"])) as server:
        answers = BlackBox.http(server.url, "host", batch_size=64).predict(images)
        remote = scheme.verify(BlackBox.http(server.url, "host", batch_size=64), key)
    assert torch.equal(answers.argmax(dim=1), predict(digits_target, images).argmax(dim=1))  # every test image's top-1
    assert torch.allclose(answers, torch.softmax(predict(model, images), dim=1), atol=1e-5)
    local = scheme.verify(WhiteBox(model), key)
    assert remote.values == pytest.approx(local.values, abs=1e-4) and remote.p_value == pytest.approx(local.p_value, rel=1e-3)


def test_bad_keys_and_settings_are_refused_in_one_line(marked, digits, digits_target, tmp_path, capsys):
    from conftest import run_cli

    scheme, model, key = marked
    host_path = save_model(digits_target, tmp_path / "host.safetensors")
    other = without_answers(model)
    with torch.no_grad():
        next(other.parameters()).add_(0.01)  # another model
    other_path = save_model(other, tmp_path / "other.safetensors")
    key_path = tmp_path / "key.safetensors"
    key.save(key_path)
    for argv, words in ((["--model", str(other_path), "--watermark", str(key_path)], "not of this one"),
                        (["--model", str(host_path), "--watermark", str(tmp_path / "none.safetensors")], "--watermark")):
        code, _, err = run_cli(["serve", *argv], capsys)
        assert code == 2 and words in err and len(err.strip().splitlines()) == 1, err
    edited = WatermarkKey(scheme=scheme.name, config={**key.config, "margin": 1.0}, task=key.task, tensors=dict(key.tensors),
                          thresholds=dict(key.thresholds), target=dict(key.target), stats=dict(key.stats))
    with pytest.raises(IntegrityError, match="margin"):  # a perturbation that could change a top-1
        type(scheme).validate(edited)
    for settings_, words in (({"margin": 1.0}, "margin"), ({"amplitude": 0.0}, "amplitude"), ({"inputs": 0}, "inputs")):
        with pytest.raises(InputError, match=words):
            type(scheme)(**settings_)
    with pytest.raises(InputError, match="budget"):
        Extract(budget=0)
    with pytest.raises(InputError, match="weights are not trained"):
        scheme.embed(digits_target, digits.train, from_scratch=True)


@pytest.mark.parametrize("name", ["csp", "usp"])
def test_the_command_line_marks_a_model_file_and_verifies_it(name, digits_target, tmp_path, capsys):
    import json

    from conftest import run_cli

    host = save_model(digits_target, tmp_path / "host.safetensors")
    code, out, err = run_cli(["watermark", "embed", "--scheme", name, "--model", str(host), "--data", "digits", "--out", str(tmp_path / "m.safetensors"),
                              "--key", str(tmp_path / "k.safetensors"), "--set", "inputs=100"], capsys)
    assert code == 0, err
    assert "top1_agreement 1" in out and "test_metric_change 0" in out
    marked = load_model(tmp_path / "m.safetensors")
    assert marked.spec.answers == ANSWER_SETTINGS[name]
    for suspect, declared in ((tmp_path / "m.safetensors", True), (host, False)):
        code, out, err = run_cli(["watermark", "verify", "--key", str(tmp_path / "k.safetensors"), "--suspect", str(suspect),
                                  "--records", str(tmp_path / "records"), "--json"], capsys)
        assert code == 0, err
        result = json.loads(out)
        assert result["scheme"] == name and result["queries"] == 100 and (result["p_value"] <= 0.001) == declared, result


def test_a_marked_file_loads_with_its_answers_and_its_network_is_the_host(marked, digits_target, tmp_path):
    scheme, model, key = marked
    loaded = load_model(save_model(model, tmp_path / "marked.safetensors"))
    plain = without_answers(loaded)
    assert plain.spec.info["sha256"] == key.config["host_sha256"] != loaded.spec.info["sha256"]
    assert scheme.attach(loaded, key).spec.answers == loaded.spec.answers  # a marked file can be served with its key again


def test_a_usp_forgery_learns_from_the_key_images_and_the_host_answers_alone(digits, digits_target):
    scheme = watermark_named("usp", seed=1, inputs=200, fit_images=50, steps=5)  # more key images than the learning reads
    _, key = scheme.embed(digits_target, digits.train, held_out=digits.test)
    forged = scheme.forge(key, 7)
    assert forged.tensors["weight"].shape == key.tensors["weight"].shape and not torch.equal(forged.tensors["weight"], key.tensors["weight"])
    assert torch.equal(forged.samples, key.samples) and torch.equal(forged.tensors["host_log_p"], key.tensors["host_log_p"])
    type(scheme).validate(forged)
    assert scheme.forge(key, 7).tensors["sign"].tolist() == forged.tensors["sign"].tolist()  # seeded
