"""One registry of family knowledge: adding a family is one adapter, and every layer of the package picks it up.

The throwaway adapter below explains `ViTMSNForImageClassification`, a class the package ships no adapter for. It
is declared here, in the test, as a user would declare it in their own code: a `FamilySpec` and a readout. Once
registered, the model is explained (with the maps of an equal ViT, checked against the reference on raw values),
carded, exported, served by the pipeline and the CLI, and listed, with no edit anywhere else in the package.
"""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoImageProcessor, ViTMSNConfig, ViTMSNForImageClassification, pipeline

import transformers_legrad
from transformers_legrad import FamilyAdapter, FamilySpec, LeGradExplainer, cards, cli
from transformers_legrad.adapters import IMAGE_CLASSIFICATION, HubCheckpoint, ViTClassifierAdapter, registry
from transformers_legrad.evaluation.baselines import make_explainer
from transformers_legrad.export import export_pipeline

from reference import reference_grid_maps
from tiny_models import CLASSIFIER, random_image


class ViTMSNAdapter(FamilyAdapter):
    """`ViTMSNForImageClassification`: `classifier(layernorm(tokens)[:, 0])`; LeGrad reads `mean(tokens)`."""

    spec = FamilySpec(
        name="vit_msn",
        display_name="ViT-MSN",
        model_classes=("ViTMSNForImageClassification",),
        base_task=IMAGE_CLASSIFICATION,
        model_types=("vit_msn",),
        blocks="vit.layers",
        score_definition="A class's score at block l is the ViT-MSN logit of `layernorm(mean of all tokens)`.",
        checkpoints=(HubCheckpoint("facebook/vit-msn-small", "apache-2.0", native_resolution=224, patch_size=16),),
    )

    def readout_is_token_mean(self, score: str) -> bool:
        return True

    def image_features(self, pixels):
        return self.model(**pixels.model_kwargs).logits.float()

    def layer_features(self, tokens, pixels, score):
        return self.model.classifier(self.model.vit.layernorm(tokens.mean(dim=1))).float()


@pytest.fixture
def registered():
    """The throwaway adapter registered for one test, and the registry (and pipeline task) as before after it."""
    transformers_legrad.register_adapter(ViTMSNAdapter)
    try:
        yield ViTMSNAdapter
    finally:
        registry.unregister(ViTMSNAdapter)
        transformers_legrad.register_pipeline()


@pytest.fixture(scope="module")
def msn_and_vit(tmp_path_factory):
    """A tiny ViT-MSN saved with its processor, and a ViT classifier with the very same weights."""
    from tiny_models import make_vit

    vit = make_vit()
    model = ViTMSNForImageClassification(ViTMSNConfig(**CLASSIFIER)).eval()
    missing, unexpected = model.load_state_dict(vit.model.state_dict(), strict=False)
    assert not unexpected and not missing, (missing, unexpected)
    folder = tmp_path_factory.mktemp("vit-msn")
    model.save_pretrained(folder)
    vit.processor.save_pretrained(folder)
    return model, AutoImageProcessor.from_pretrained(folder), folder, vit


def test_an_unregistered_family_is_refused_and_names_the_way_to_add_it(msn_and_vit):
    model = msn_and_vit[0]
    with pytest.raises(TypeError, match="does not support ViTMSNForImageClassification.*register_adapter"):
        LeGradExplainer(model)
    assert "ViTMSNForImageClassification" not in registry.supported_model_classes()


def test_a_registered_family_is_explained_exactly(registered, msn_and_vit):
    model, processor, _, vit = msn_and_vit
    images = [random_image(0), random_image(1)]
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    targets = torch.tensor([[1, 3], [0, 4]])
    out = LeGradExplainer(model, processor, layers="all").explain(pixel_values=pixels, targets=targets)
    reference = reference_grid_maps(vit.model, {"pixel_values": pixels}, targets=targets, layers=[0, 1, 2, 3])
    scale = reference.abs().max().item()
    torch.testing.assert_close(out.grid_maps, reference, rtol=1e-3, atol=1e-3 * scale)
    same_weights_vit = LeGradExplainer(vit.model, layers="all").explain(pixel_values=pixels, targets=targets)
    torch.testing.assert_close(out.grid_maps, same_weights_vit.grid_maps, rtol=1e-3, atol=1e-3 * scale)
    assert out.labels == [["dog", "fish"], ["cat", "frog"]]
    baseline = make_explainer("rollout", model, processor).explain(images=images[0])
    assert baseline.grid_maps.shape == (1, 1, 6, 6) and torch.isfinite(baseline.grid_maps).all()


def test_a_registered_family_is_listed_carded_served_and_exported(registered, msn_and_vit, tmp_path, capsys):
    model, _, folder, _ = msn_and_vit
    assert "ViTMSNForImageClassification" in registry.supported_model_classes()
    assert cards.FAMILIES["vit_msn"].display_name == "ViT-MSN"
    assert cards.ARCHITECTURES["ViTMSNForImageClassification"].base_task == IMAGE_CLASSIFICATION

    card = cards.render_card("me/tiny-vit-msn", config=model.config)
    assert "pipeline_tag: image-classification" in card and "- vit_msn" in card
    assert "ViT-MSN" in card and "ViTMSNForImageClassification.from_pretrained" in card
    assert "the ViT-MSN logit of `layernorm(mean of all tokens)`" in card

    explain = pipeline("legrad-explanation", model=str(folder))
    assert type(explain.model) is ViTMSNForImageClassification
    results = explain(random_image(2, (60, 40)), top_k=2)
    assert [len(results), results[0]["heatmap"].size] == [2, (60, 40)]

    assert cards.CARD_MODELS["facebook/vit-msn-small"].model_class == "ViTMSNForImageClassification"
    written = cards.write_cards(tmp_path / "cards")
    assert "facebook__vit-msn-small.md" in {path.name for path in written}
    assert "ViT-MSN" in (tmp_path / "cards" / "facebook__vit-msn-small.md").read_text()

    exported = export_pipeline(explain, tmp_path / "exported", model_id="me/tiny-vit-msn")
    assert "ViT-MSN" in (exported / "README.md").read_text()
    config = json.loads((exported / "config.json").read_text())
    assert "AutoModelForImageClassification" in config["custom_pipelines"]["legrad-explanation-hub"]["pt"]

    out = tmp_path / "cli"
    image = tmp_path / "image.png"
    random_image(3).save(image)
    assert cli.main(["explain", str(image), "--model", str(folder), "--top-k", "2", "--out", str(out)]) == 0
    records = json.loads((out / "results.json").read_text())
    assert len(records) == 2 and {record["label"] for record in records} <= set(model.config.id2label.values())
    capsys.readouterr()


def test_unregistering_removes_the_family_again(msn_and_vit):
    transformers_legrad.register_adapter(ViTMSNAdapter)
    registry.unregister(ViTMSNAdapter)
    with pytest.raises(TypeError, match="does not support"):
        LeGradExplainer(msn_and_vit[0])


# --- what the registry refuses ------------------------------------------------------------------------------------
def test_a_spec_that_does_not_match_the_model_names_the_path(registered, msn_and_vit):
    class Misplaced(ViTMSNAdapter):
        spec = FamilySpec(**{**ViTMSNAdapter.spec.__dict__, "value": "attention.value"})

    with pytest.raises(TypeError, match=r"`value` \(block 0\) is 'attention.value'.*no 'value' there.*v_proj"):
        Misplaced(msn_and_vit[0])

    class NoBlocks(ViTMSNAdapter):
        spec = FamilySpec(**{**ViTMSNAdapter.spec.__dict__, "blocks": "vit.encoder.layers"})

    with pytest.raises(TypeError, match=r"`blocks` is 'vit.encoder.layers'.*has no 'encoder' there \(it has: "):
        NoBlocks(msn_and_vit[0])


def test_a_class_belongs_to_one_adapter(registered):
    class Second(ViTMSNAdapter):
        pass

    with pytest.raises(ValueError, match="already explained by ViTMSNAdapter.*replace=True"):
        registry.register(Second)
    with pytest.raises(ValueError, match="already explained by ViTClassifierAdapter"):

        class AnotherViT(ViTMSNAdapter):
            spec = FamilySpec(**{**ViTMSNAdapter.spec.__dict__, "model_classes": ("ViTForImageClassification",)})

        registry.register(AnotherViT)
    assert registry.adapter_class_for(ViTMSNForImageClassification) is ViTMSNAdapter


def test_an_adapter_must_declare_a_spec_and_write_its_readout():
    class NoSpec(FamilyAdapter):
        pass

    with pytest.raises(TypeError, match="has no `spec`"):
        registry.register(NoSpec)

    class NoReadout(FamilyAdapter):
        spec = ViTMSNAdapter.spec

    with pytest.raises(TypeError, match="image_features, layer_features must be defined"):
        registry.register(NoReadout)

    class WrongKind(ViTMSNAdapter):
        spec = FamilySpec(**{**ViTMSNAdapter.spec.__dict__, "base_task": "zero-shot-image-classification"})

    with pytest.raises(TypeError, match="derive it from DualEncoderAdapter"):
        registry.register(WrongKind)
    with pytest.raises(TypeError, match="FamilyAdapter subclass"):
        registry.register(ViTMSNForImageClassification)
    assert registry.registered_adapters() == transformers_legrad.adapters.ADAPTERS


@pytest.mark.parametrize(
    "change, message",
    [
        ({"base_task": "depth-estimation"}, "`base_task` must be one of"),
        ({"model_classes": ()}, "`model_classes` must name at least one class"),
        ({"prefix_tokens": -1}, "`prefix_tokens` must be an int >= 0"),
        ({"default_class": "CLIPModel"}, "`default_class` names 'CLIPModel', which is not one of its"),
    ],
)
def test_a_malformed_spec_is_refused_when_declared(change, message):
    with pytest.raises(ValueError, match=message):
        FamilySpec(**{**ViTMSNAdapter.spec.__dict__, **change})


def test_the_package_families_come_from_their_specs():
    assert "facebook/vit-msn-small" not in cards.CARD_MODELS and "openai/clip-vit-base-patch16" in cards.CARD_MODELS
    assert sorted(cards.FAMILIES) == [
        "clip",
        "clip_vision",
        "deit",
        "dinov2",
        "dinov2_backbone",
        "dinov2_with_registers_backbone",
        "dinov3_vit",
        "siglip",
        "siglip2",
        "siglip_vision",
        "vit",
        "vit_backbone",
    ]
    assert cards.FAMILIES["deit"].main_class == "DeiTForImageClassification"
    assert "CLIPVisionModelWithProjection" not in cards.ARCHITECTURES  # no text tower: no pipeline, no card
    assert registry.auto_classes() == (
        "AutoModelForZeroShotImageClassification",
        "AutoModelForImageClassification",
        "AutoModel",
    )
    assert registry.default_class("siglip2") == "Siglip2Model" and registry.default_class("vit") is None
    assert registry.adapter_class_for(ViTMSNForImageClassification) is None
    assert ViTClassifierAdapter.spec.blocks == "vit.layers"


def test_every_adapter_file_registers_the_adapters_it_declares():
    """Adding a family is adding its adapter file: each file's adapters with a spec of their own are registered."""
    import importlib
    import inspect
    import pkgutil

    from transformers_legrad import adapters

    modules = pkgutil.iter_modules(adapters.__path__)
    files = [module.name for module in modules if module.name not in ("base", "registry")]
    assert {"classifiers", "clip", "siglip"} <= set(files)
    for name in files:
        module = importlib.import_module(f"transformers_legrad.adapters.{name}")
        declared = [
            obj
            for obj in vars(module).values()
            if inspect.isclass(obj) and obj.__module__ == module.__name__ and "spec" in vars(obj)
        ]
        assert declared, f"adapters/{name}.py declares no adapter"
        unregistered = [obj.__name__ for obj in declared if obj not in registry.registered_adapters()]
        assert not unregistered, f"adapters/{name}.py declares {unregistered} without @register"
