"""One registry of family knowledge: adding a family is one adapter, and every layer of the package picks it up.

The throwaway adapter below explains `TinyViTClassifier`, a `PreTrainedModel` of this test module (ViT blocks and a
head of its own), registered with transformers' Auto classes as a user's own model would be. It is declared here,
in the test, as a user would declare it in their own code: a `FamilySpec` and a readout. Once registered, the
model is explained (with the maps of a ViT classifier with the same weights, checked against the reference on raw
values), carded, exported, served by the pipeline and the CLI, and listed, with no edit anywhere in the package.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModelForImageClassification,
    PretrainedConfig,
    PreTrainedModel,
    ViTConfig,
    ViTModel,
    pipeline,
)
from transformers.modeling_outputs import ImageClassifierOutput

import transformers_legrad
from transformers_legrad import FamilyAdapter, FamilySpec, LeGradExplainer, cards, cli
from transformers_legrad.adapters import IMAGE_CLASSIFICATION, HubCheckpoint, ViTClassifierAdapter, registry
from transformers_legrad.evaluation.baselines import make_explainer
from transformers_legrad.export import export_pipeline

from reference import reference_grid_maps
from tiny_models import CLASSIFIER, random_image


# --- a model of the user's own, and its adapter -----------------------------------------------------------------
class TinyViTConfig(PretrainedConfig):
    model_type = "legrad_test_tiny_vit"

    def __init__(self, vit: dict | None = None, **kwargs):
        super().__init__(**kwargs)
        self.vit = dict(vit or {})  # the ViTConfig arguments of its blocks


class TinyViTClassifier(PreTrainedModel):
    """ViT blocks under another name (`encoder_stack`) and a head of its own (`head`) on the CLS token."""

    config_class = TinyViTConfig
    main_input_name = "pixel_values"

    def __init__(self, config: TinyViTConfig) -> None:
        super().__init__(config)
        self.encoder_stack = ViTModel(ViTConfig(**config.vit), add_pooling_layer=False)
        self.head = nn.Linear(self.encoder_stack.config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, pixel_values, interpolate_pos_encoding=None, **kwargs):
        tokens = self.encoder_stack(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding).last_hidden_state
        return ImageClassifierOutput(logits=self.head(tokens[:, 0]))


AutoConfig.register(TinyViTConfig.model_type, TinyViTConfig)
AutoModelForImageClassification.register(TinyViTConfig, TinyViTClassifier)


class TinyViTAdapter(FamilyAdapter):
    """`TinyViTClassifier`: LeGrad reads `head(layernorm(mean of all tokens))`."""

    spec = FamilySpec(
        name="tiny_vit",
        display_name="Tiny ViT",
        model_classes=(TinyViTClassifier,),  # a class, not a name: it lives outside transformers
        base_task=IMAGE_CLASSIFICATION,
        model_types=(TinyViTConfig.model_type,),
        vision_config="encoder_stack.config",
        blocks="encoder_stack.layers",
        score_definition="A class's score at block l is the Tiny ViT logit of `layernorm(mean of all tokens)`.",
        checkpoints=(HubCheckpoint("me/tiny-vit", "apache-2.0", native_resolution=48, patch_size=8),),
    )

    def readout_is_token_mean(self, score: str) -> bool:
        return True

    def image_features(self, pixels):
        return self.model(**pixels.model_kwargs).logits.float()

    def layer_features(self, tokens, pixels, score):
        return self.model.head(self.model.encoder_stack.layernorm(tokens.mean(dim=1))).float()


@pytest.fixture
def registered():
    """The throwaway adapter registered for one test, and the registry (and pipeline task) as before after it."""
    transformers_legrad.register_adapter(TinyViTAdapter)
    try:
        yield TinyViTAdapter
    finally:
        registry.unregister(TinyViTAdapter)
        transformers_legrad.register_pipeline()


@pytest.fixture(scope="module")
def tiny_and_vit(tmp_path_factory):
    """A TinyViTClassifier saved with its processor, and a ViT classifier with the very same weights."""
    from tiny_models import make_vit

    vit = make_vit()
    labels = {key: CLASSIFIER[key] for key in ("id2label", "label2id")}
    vision = {key: value for key, value in CLASSIFIER.items() if key not in ("id2label", "label2id", "num_labels")}
    model = TinyViTClassifier(TinyViTConfig(vit=vision, num_labels=CLASSIFIER["num_labels"], **labels)).eval()
    renamed = {
        key.replace("vit.", "encoder_stack.", 1).replace("classifier.", "head.", 1): value
        for key, value in vit.model.state_dict().items()
    }
    missing, unexpected = model.load_state_dict(renamed, strict=False)
    assert not unexpected and not missing, (missing, unexpected)
    folder = tmp_path_factory.mktemp("tiny-vit")
    model.save_pretrained(folder)
    vit.processor.save_pretrained(folder)
    return model, AutoImageProcessor.from_pretrained(folder), folder, vit


def test_an_unregistered_family_is_refused_and_names_the_way_to_add_it(tiny_and_vit):
    model = tiny_and_vit[0]
    with pytest.raises(TypeError, match="does not support TinyViTClassifier.*register_adapter"):
        LeGradExplainer(model)
    assert "TinyViTClassifier" not in registry.supported_model_classes()


def test_a_registered_family_is_explained_exactly(registered, tiny_and_vit):
    model, processor, _, vit = tiny_and_vit
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


def test_a_registered_family_is_listed_carded_served_and_exported(registered, tiny_and_vit, tmp_path, capsys):
    model, _, folder, _ = tiny_and_vit
    assert "TinyViTClassifier" in registry.supported_model_classes()
    assert cards.FAMILIES["tiny_vit"].display_name == "Tiny ViT"
    assert cards.ARCHITECTURES["TinyViTClassifier"].base_task == IMAGE_CLASSIFICATION

    card = cards.render_card("me/tiny-vit-finetune", config=model.config)
    assert "pipeline_tag: image-classification" in card and "- tiny_vit" in card
    assert "Tiny ViT" in card and "TinyViTClassifier.from_pretrained" in card
    assert "the Tiny ViT logit of `layernorm(mean of all tokens)`" in card
    assert cards.CARD_MODELS["me/tiny-vit"].model_class == "TinyViTClassifier"
    written = cards.write_cards(tmp_path / "cards")
    assert "me__tiny-vit.md" in {path.name for path in written}
    assert "Tiny ViT" in (tmp_path / "cards" / "me__tiny-vit.md").read_text()

    explain = pipeline("legrad-explanation", model=str(folder))
    assert type(explain.model) is TinyViTClassifier
    results = explain(random_image(2, (60, 40)), top_k=2)
    assert [len(results), results[0]["heatmap"].size] == [2, (60, 40)]

    exported = export_pipeline(explain, tmp_path / "exported", model_id="me/tiny-vit-finetune")
    assert "Tiny ViT" in (exported / "README.md").read_text()
    assert json.loads((exported / "config.json").read_text())["model_type"] == TinyViTConfig.model_type
    reloaded = pipeline("legrad-explanation", model=str(exported))  # the exported folder serves the family again
    assert type(reloaded.model) is TinyViTClassifier and len(reloaded(random_image(5), top_k=1)) == 1

    out = tmp_path / "cli"
    image = tmp_path / "image.png"
    random_image(3).save(image)
    assert cli.main(["explain", str(image), "--model", str(folder), "--top-k", "2", "--out", str(out)]) == 0
    records = json.loads((out / "results.json").read_text())
    assert len(records) == 2 and {record["label"] for record in records} <= set(model.config.id2label.values())
    capsys.readouterr()


def test_unregistering_removes_the_family_again(tiny_and_vit):
    transformers_legrad.register_adapter(TinyViTAdapter)
    registry.unregister(TinyViTAdapter)
    with pytest.raises(TypeError, match="does not support"):
        LeGradExplainer(tiny_and_vit[0])


def test_a_class_named_like_a_supported_one_outside_transformers_is_not_taken_for_it():
    class ViTForImageClassification(TinyViTClassifier):  # same name as transformers' class, another model
        pass

    assert registry.adapter_class_for(ViTForImageClassification) is None


# --- what the registry refuses ------------------------------------------------------------------------------------
def test_a_spec_that_does_not_match_the_model_names_the_path(registered, tiny_and_vit):
    class Misplaced(TinyViTAdapter):
        spec = FamilySpec(**{**TinyViTAdapter.spec.__dict__, "value": "attention.value"})

    with pytest.raises(TypeError, match=r"`value` \(block 0\) is 'attention.value'.*no 'value' there.*v_proj"):
        Misplaced(tiny_and_vit[0])

    class NoBlocks(TinyViTAdapter):
        spec = FamilySpec(**{**TinyViTAdapter.spec.__dict__, "blocks": "encoder_stack.encoder.layers"})

    with pytest.raises(TypeError, match=r"`blocks` is 'encoder_stack.encoder.layers'.*no 'encoder' there \(it has: "):
        NoBlocks(tiny_and_vit[0])

    class WrongValue(TinyViTAdapter):
        spec = FamilySpec(**{**TinyViTAdapter.spec.__dict__, "value": "mlp.fc1"})

    with pytest.raises(TypeError, match=r"value projection `mlp.fc1` gives 64 features, which is not 4 heads"):
        WrongValue(tiny_and_vit[0])


def test_blocks_that_never_run_are_named(registered, tiny_and_vit):
    import copy

    model = copy.deepcopy(tiny_and_vit[0])
    model.spare_layers = copy.deepcopy(model.encoder_stack.layers)  # looks like blocks, never called

    class Unused(TinyViTAdapter):
        spec = FamilySpec(**{**TinyViTAdapter.spec.__dict__, "blocks": "spare_layers"})

    registry.register(Unused, replace=True)
    try:
        with pytest.raises(RuntimeError, match=r"did not run.*FamilySpec's `blocks` path 'spare_layers'"):
            LeGradExplainer(model).explain(pixel_values=torch.zeros(1, 3, 48, 48))
    finally:
        registry.unregister(Unused)


def test_a_class_belongs_to_one_adapter(registered):
    class Second(TinyViTAdapter):
        pass

    with pytest.raises(ValueError, match="already explained by TinyViTAdapter.*replace=True"):
        registry.register(Second)
    with pytest.raises(ValueError, match="already explained by ViTClassifierAdapter"):

        class AnotherViT(TinyViTAdapter):
            spec = FamilySpec(**{**TinyViTAdapter.spec.__dict__, "model_classes": ("ViTForImageClassification",)})

        registry.register(AnotherViT)
    assert registry.adapter_class_for(TinyViTClassifier) is TinyViTAdapter


def test_an_adapter_must_declare_a_spec_and_write_its_readout():
    class NoSpec(FamilyAdapter):
        pass

    with pytest.raises(TypeError, match="has no `spec`"):
        registry.register(NoSpec)

    class NoReadout(FamilyAdapter):
        spec = TinyViTAdapter.spec

    with pytest.raises(TypeError, match="image_features, layer_features must be defined"):
        registry.register(NoReadout)

    class WrongKind(TinyViTAdapter):
        spec = FamilySpec(**{**TinyViTAdapter.spec.__dict__, "base_task": "zero-shot-image-classification"})

    with pytest.raises(TypeError, match="derive it from DualEncoderAdapter"):
        registry.register(WrongKind)

    class AudioWithoutAudioInputs(TinyViTAdapter):
        spec = FamilySpec(**{**TinyViTAdapter.spec.__dict__, "base_task": "audio-classification"})

    with pytest.raises(TypeError, match="derive it from adapters.audio.AudioClassifierAdapter"):
        registry.register(AudioWithoutAudioInputs)

    class DetectorThatIsNot(TinyViTAdapter):
        spec = FamilySpec(**{**TinyViTAdapter.spec.__dict__, "base_task": "zero-shot-object-detection"})

    with pytest.raises(TypeError, match="`is_detector` \\(False\\) disagree"):
        registry.register(DetectorThatIsNot)
    with pytest.raises(TypeError, match="FamilyAdapter subclass"):
        registry.register(TinyViTClassifier)
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
        FamilySpec(**{**TinyViTAdapter.spec.__dict__, **change})


def test_the_package_families_come_from_their_specs():
    assert "me/tiny-vit" not in cards.CARD_MODELS and "openai/clip-vit-base-patch16" in cards.CARD_MODELS
    dual_encoders = {"altclip", "chinese_clip", "clip", "metaclip_2", "siglip", "siglip2"}
    classifiers = {"beit", "data2vec-vision", "deit", "dinov2", "dinov2_with_registers", "vit", "vit_msn"}
    backbones = {"clip_vision", "dinov2_backbone", "dinov2_with_registers_backbone", "dinov3_vit", "siglip_vision"}
    assert dual_encoders | classifiers | backbones | {"vit_backbone"} <= set(cards.FAMILIES)
    assert cards.FAMILIES["deit"].main_class == "DeiTForImageClassification"
    assert "CLIPVisionModelWithProjection" not in cards.ARCHITECTURES  # no text tower: no pipeline, no card
    assert registry.auto_classes()[:2] == ("AutoModelForZeroShotImageClassification", "AutoModelForImageClassification")
    assert "AutoModelForVideoClassification" in registry.auto_classes()
    assert registry.auto_classes()[-1] == "AutoModel"  # it loads nearly any checkpoint: tried last
    assert "AutoModelForZeroShotObjectDetection" in registry.auto_classes()
    assert registry.default_class("siglip2") == "Siglip2Model" and registry.default_class("vit") is None
    assert registry.adapter_class_for(TinyViTClassifier) is None
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


def test_replace_takes_over_only_the_shared_classes_and_unregistering_gives_them_back():
    from transformers import CLIPModel, CLIPVisionModelWithProjection

    from transformers_legrad.adapters import CLIPAdapter

    class VisionOnly(CLIPAdapter):
        spec = FamilySpec(
            **{
                **CLIPAdapter.spec.__dict__,
                "name": "clip_vision_only",
                "model_classes": ("CLIPVisionModelWithProjection",),
                "pipeline_classes": None,
                "default_class": None,
                "checkpoints": (),
            }
        )

    registry.register(VisionOnly, replace=True)
    try:
        assert registry.adapter_class_for(CLIPVisionModelWithProjection) is VisionOnly
        assert registry.adapter_class_for(CLIPModel) is CLIPAdapter
        assert "openai/clip-vit-base-patch16" in cards.CARD_MODELS
    finally:
        registry.unregister(VisionOnly)
    assert registry.adapter_class_for(CLIPVisionModelWithProjection) is CLIPAdapter


def test_a_checkpoint_of_another_class_is_refused_when_declared():
    with pytest.raises(ValueError, match="checkpoints' model_class` names 'Bar'"):
        FamilySpec(
            **{**TinyViTAdapter.spec.__dict__, "checkpoints": (HubCheckpoint("me/x", "mit", 48, 8, model_class="Bar"),)}
        )


def test_a_grid_of_more_than_three_token_axes_is_a_clear_error():
    from transformers_legrad import maps

    with pytest.raises(ValueError, match="grids of 4 token axes cannot be upsampled"):
        maps.heatmaps_from_grids(torch.zeros(1, 1, 2, 2, 2, 2), [(2, 2, 2, 2)], [(4, 4, 4, 4)])
