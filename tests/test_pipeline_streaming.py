"""The `legrad-explanation` pipeline as a native transformers pipeline: batching, workers and streaming inputs."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import torch
from datasets import Dataset
from transformers import pipeline
from transformers.pipelines import base as pipelines_base
from transformers.pipelines.pt_utils import KeyDataset

import transformers_legrad  # noqa: F401  (registers the task)

from tiny_models import random_image

LABELS = ["a photo of a cat", "a red circle", "a blue dog"]
# Different aspect ratios: SigLIP 2 gives each its own patch grid, padded to the same patch count.
SIZES = [(80, 40), (40, 80), (50, 50), (64, 48), (36, 60)]


def count_explain_calls(pipe, monkeypatch) -> list[int]:
    """Record the batch size of every `explain` call the pipeline makes."""
    calls = []
    explain = pipe.explainer.explain

    def counted(*args, **kwargs):
        calls.append(kwargs["pixel_values"].shape[0])
        return explain(*args, **kwargs)

    monkeypatch.setattr(pipe.explainer, "explain", counted)
    return calls


def image_dataset(count: int) -> Dataset:
    return Dataset.from_dict({"image": [random_image(20 + i, SIZES[i % len(SIZES)]) for i in range(count)]})


def assert_same_results(actual, expected):
    assert len(actual) == len(expected)
    for image_results, image_expected in zip(actual, expected, strict=True):
        assert [entry["label"] for entry in image_results] == [entry["label"] for entry in image_expected]
        for a, b in zip(image_results, image_expected, strict=True):
            assert abs(a["score"] - b["score"]) < 1e-5
            assert a["heatmap"].size == b["heatmap"].size
            if "map" in b:
                torch.testing.assert_close(a["map"], b["map"], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "family, call",
    [("clip", {"candidate_labels": LABELS}), ("siglip2", {"candidate_labels": LABELS}), ("vit", {"top_k": 2})],
)
def test_batches_give_the_maps_of_single_images_with_one_explain_call_each(family, call, request, monkeypatch):
    tiny = request.getfixturevalue(family)
    pipe = pipeline("legrad-explanation", model=tiny.path)
    images = [random_image(30 + i, size) for i, size in enumerate(SIZES[:3])]
    calls = count_explain_calls(pipe, monkeypatch)
    batched = pipe(images, batch_size=2, return_tensors=True, **call)
    assert calls == [2, 1]
    one_by_one = pipe(images, batch_size=1, return_tensors=True, **call)
    assert calls == [2, 1, 1, 1, 1]
    assert all(isinstance(results, list) and isinstance(results[0], dict) for results in batched)
    assert [results[0]["map"].shape for results in batched] == [(h, w) for w, h in SIZES[:3]]
    assert_same_results(batched, one_by_one)


@pytest.mark.parametrize("family, call", [("clip", {"candidate_labels": LABELS}), ("vit", {"top_k": 2})])
def test_key_dataset_streams_one_image_at_a_time(family, call, request, monkeypatch):
    tiny = request.getfixturevalue(family)
    pipe = pipeline("legrad-explanation", model=tiny.path)
    dataset = image_dataset(5)
    expected = pipe([row["image"] for row in dataset], return_tensors=True, **call)
    calls = count_explain_calls(pipe, monkeypatch)
    stream = pipe(KeyDataset(dataset, "image"), batch_size=2, return_tensors=True, **call)
    assert isinstance(stream, Iterator) and calls == []  # nothing explained before the first item is asked for
    results, calls_so_far = [], []
    for image_results in stream:
        assert isinstance(image_results, list) and isinstance(image_results[0], dict)
        results.append(image_results)
        calls_so_far.append(len(calls))
    assert calls == [2, 2, 1] and calls_so_far == [1, 1, 2, 2, 3]  # one batch explained at a time
    assert_same_results(results, expected)


def test_generator_input_streams(siglip2, monkeypatch):
    pipe = pipeline("legrad-explanation", model=siglip2.path)
    images = [random_image(40 + i, size) for i, size in enumerate(SIZES)]
    expected = pipe(images, candidate_labels=LABELS[:2], return_tensors=True)
    taken = []

    def pictures():
        for image in images:
            taken.append(image)
            yield image

    calls = count_explain_calls(pipe, monkeypatch)
    results, taken_so_far = [], []
    for image_results in pipe(pictures(), candidate_labels=LABELS[:2], batch_size=2, return_tensors=True):
        results.append(image_results)
        taken_so_far.append(len(taken))
    assert taken_so_far == [2, 2, 4, 4, 5] and calls == [2, 2, 1]  # the generator is read one batch at a time
    assert_same_results(results, expected)


def test_num_workers_preprocess_in_dataloader_workers(clip, monkeypatch):
    pipe = pipeline("legrad-explanation", model=clip.path)
    dataset = image_dataset(4)
    expected = pipe([row["image"] for row in dataset], candidate_labels=LABELS[:2], return_tensors=True)
    loaders = []

    class RecordingDataLoader(torch.utils.data.DataLoader):
        def __init__(self, *args, **kwargs):
            loaders.append(kwargs["num_workers"])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(pipelines_base, "DataLoader", RecordingDataLoader)
    preprocess, forward = pipe.preprocess, pipe._forward
    workers = []

    def preprocess_with_pid(image, **kwargs):
        return {**preprocess(image, **kwargs), "pid": os.getpid()}

    def forward_recording_pid(model_inputs, **kwargs):
        pid = model_inputs.pop("pid")
        workers.extend(pid if isinstance(pid, list) else [pid])
        return forward(model_inputs, **kwargs)

    monkeypatch.setattr(pipe, "preprocess", preprocess_with_pid)
    monkeypatch.setattr(pipe, "_forward", forward_recording_pid)
    results = list(
        pipe(
            KeyDataset(dataset, "image"), candidate_labels=LABELS[:2], batch_size=2, num_workers=2, return_tensors=True
        )
    )
    assert loaders == [2]
    assert len(workers) == 4 and os.getpid() not in workers
    assert_same_results(results, expected)


def test_aliases_and_sequences(clip):
    pipe = pipeline("legrad-explanation", model=clip.path)
    image, other = random_image(50), random_image(51, (40, 60))
    single = pipe(image, candidate_labels=LABELS[:2], return_tensors=True)
    assert_same_results([pipe(image=image, candidate_labels=LABELS[:2], return_tensors=True)], [single])
    assert_same_results([pipe(images=image, candidate_labels=LABELS[:2], return_tensors=True)], [single])
    as_tuple = pipe((image, other), LABELS[:2], return_tensors=True)
    assert_same_results(as_tuple, pipe([image, other], candidate_labels=LABELS[:2], return_tensors=True))
    assert_same_results(as_tuple[:1], [single])
    assert pipe([], candidate_labels=LABELS[:2]) == []
