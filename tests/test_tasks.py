import math

import pytest
import torch

from modelprint.errors import InputError
from modelprint.tasks import Classification, Regression, Similarity, task_from_config


def test_classification_scores_by_hand():
    logits = torch.tensor([[1.0, 2.0, 0.0], [0.0, 0.0, 0.0]])
    labels = torch.tensor([1, 2])
    task = Classification()
    z = math.exp(1) + math.exp(2) + 1
    torch.testing.assert_close(task.score(logits, labels), torch.tensor([math.exp(2) / z, 1 / 3]))
    torch.testing.assert_close(task.score(logits, labels, logit=True), torch.tensor([2.0, 0.0]))
    torch.testing.assert_close(task.score_deployed(task.deployed(logits), labels), task.score(logits, labels))


def test_classification_keep_losses():
    task = Classification()
    original = torch.tensor([[2.0, 0.0]])
    label = torch.tensor([0])
    ce = task.keep_loss(torch.tensor([[0.0, 0.0]]), original, label, mode="label")
    torch.testing.assert_close(ce, torch.tensor([math.log(2)]))
    assert task.keep_loss(original, original, label, mode="output").abs().item() < 1e-7  # KL to itself
    p = torch.softmax(original, 1)[0]
    kl = task.keep_loss(torch.tensor([[0.0, 0.0]]), original, label, mode="output")
    expected = float((p * (p.log() - math.log(0.5))).sum())
    assert kl.item() == pytest.approx(expected, rel=1e-5)
    assert task.kept(torch.tensor([[0.0, 1.0], [1.0, 0.0]]), original, torch.tensor([0, 0])).tolist() == [False, True]


def test_classification_label_checks():
    with pytest.raises(InputError, match="out of range"):
        Classification().check_labels(torch.tensor([0, 10]), 10)
    with pytest.raises(InputError, match="integer"):
        Classification().check_labels(torch.tensor([0.5]), 10)


def test_regression_by_hand():
    task = Regression(tolerance=0.5)
    out = torch.tensor([[3.0], [10.0]])
    original = torch.tensor([[3.4], [9.0]])
    cond = torch.zeros(2)
    torch.testing.assert_close(task.score(out, cond), torch.tensor([3.0, 10.0]))
    torch.testing.assert_close(task.keep_loss(out, original, cond), torch.tensor([0.16, 1.0]))
    assert task.kept(out, original, cond).tolist() == [True, False]
    with pytest.raises(InputError, match="tolerance"):
        Regression().kept(out, original, cond)


def test_similarity_l2_and_cosine_by_hand():
    emb = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    pair = torch.tensor([[0.0, 0.0], [0.0, 1.0]])
    l2 = Similarity(metric="l2")
    cond = l2.condition_from(torch.zeros(2), pair)
    torch.testing.assert_close(l2.score(emb, cond), torch.tensor([5.0, math.sqrt(2)]))
    cos = Similarity(metric="cosine")
    torch.testing.assert_close(cos.score(torch.tensor([[1.0, 1.0]]), torch.tensor([[1.0, 0.0]])), torch.tensor([1 / math.sqrt(2)]))
    moved = torch.tensor([[3.0, 4.5], [1.0, 0.0]])
    torch.testing.assert_close(l2.keep_loss(moved, emb, cond), torch.tensor([(math.sqrt(3**2 + 4.5**2) - 5.0) ** 2, 0.0]), atol=1e-6, rtol=0)
    assert l2.needs_pairs
    with pytest.raises(InputError):
        l2.condition_from(torch.zeros(2), None)
    with pytest.raises(InputError):
        Similarity(metric="manhattan")


def test_task_config_round_trip():
    for task in (Classification(), Regression(tolerance=1.0), Similarity(metric="cosine")):
        assert task_from_config(task.to_config()) == task
    with pytest.raises(InputError):
        task_from_config({"name": "detection"})
