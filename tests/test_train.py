"""Short training of a candidate: result fields, determinism, budgets, the report hook."""

from __future__ import annotations

import math

import pytest
import torch

from scalesearch.bases import get_base
from scalesearch.data import open_dataset
from scalesearch.models import build
from scalesearch.scaling import scale
from scalesearch.train import TrainConfig, TrainConfigError, TrainResult, planned_steps, train_candidate

RESOLUTION = 32


@pytest.fixture(scope="module")
def dataset():
    return open_dataset("synthetic", train_subset=96, val_subset=36)


def tiny_model(num_classes: int, seed: int = 0) -> torch.nn.Module:
    spec = scale(get_base("resnet18"), d=0.5, w=0.25).replace(num_classes=num_classes, resolution=RESOLUTION)
    torch.manual_seed(seed)
    return build(spec)


def train(dataset, report=None, **config) -> TrainResult:
    config = {"batch_size": 32, "threads": 1, **config}
    return train_candidate(tiny_model(dataset.num_classes), dataset, RESOLUTION, TrainConfig(**config),
                           report=report)


def test_one_epoch_gives_sane_result(dataset):
    result = train(dataset, epochs=1)
    assert 0.0 <= result.top1 <= 1.0
    assert math.isfinite(result.loss) and math.isfinite(result.train_loss)
    assert result.images_seen == 96 and result.epochs == 1.0
    assert result.seconds > 0 and result.images_per_second > 0
    assert set(result.as_dict()) == {"top1", "loss", "train_loss", "seconds", "images_per_second",
                                     "images_seen", "epochs"}


def test_same_seed_is_repeatable_and_leaves_caller_rng_alone(dataset):
    model = tiny_model(dataset.num_classes)
    state = torch.get_rng_state()
    first = train_candidate(model, dataset, RESOLUTION, TrainConfig(batch_size=32, threads=1, seed=4))
    assert torch.equal(torch.get_rng_state(), state)
    second = train(dataset, epochs=1, seed=4)
    assert (first.top1, first.loss, first.train_loss) == (second.top1, second.loss, second.train_loss)
    other = train(dataset, epochs=1, seed=5)
    assert (other.loss, other.train_loss) != (first.loss, first.train_loss)


def test_report_is_called_after_each_evaluation(dataset):
    calls = []
    train(dataset, epochs=2, report=lambda step, top1: calls.append((step, top1)))
    assert [step for step, _ in calls] == [3, 6]
    assert all(0.0 <= top1 <= 1.0 for _, top1 in calls)
    calls.clear()
    train(dataset, epochs=2, eval_every=0, report=lambda step, top1: calls.append(step))
    assert calls == [6]


def test_exception_from_report_stops_training_and_propagates(dataset):
    class Pruned(Exception):
        pass

    calls = []

    def prune(step, top1):
        calls.append(step)
        raise Pruned

    with pytest.raises(Pruned):
        train(dataset, epochs=3, report=prune)
    assert calls == [3]


def test_budgets_round_down_to_whole_batches(dataset):
    assert train(dataset, images=80).images_seen == 64  # 2 batches of 32, not 3
    half = train(dataset, epochs=0.5)
    assert half.images_seen == 32 and half.epochs == pytest.approx(1 / 3)
    assert planned_steps(TrainConfig(epochs=2.5, batch_size=32), 96) == (7, 32)
    assert planned_steps(TrainConfig(images=10, batch_size=32), 96) == (1, 32)  # at least a step
    assert planned_steps(TrainConfig(batch_size=500), 96) == (1, 96)  # the batch shrinks to the split


def test_threads_are_restored(dataset):
    before = torch.get_num_threads()
    train(dataset, images=32, threads=1)
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("field, value", [("epochs", 0), ("images", -1), ("batch_size", 0), ("lr", 0.0),
                                          ("weight_decay", -1e-4), ("warmup", 1.0), ("eval_every", -1),
                                          ("threads", 0), ("label_smoothing", 1.0)])
def test_bad_config_names_the_field(field, value):
    with pytest.raises(TrainConfigError, match=f"'{field}'"):
        TrainConfig(**{field: value})
