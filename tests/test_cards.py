"""Model cards: front matter the Hub reads, checked-in cards equal to what `write_cards` renders now, usage that runs.

The usage check is literal: each card's Python blocks and its `legrad explain` command are run as written, with the
Hub id swapped for a tiny local model of the same class (no network), on a non-square `cats.jpg`.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

import pytest
import soundfile
import transformers
import yaml
from huggingface_hub import ModelCard, metadata_load
from transformers import BertConfig, ViTConfig, ViTForImageClassification, ViTImageProcessorPil

from transformers_legrad import SUPPORTED_MODEL_CLASSES, cards, cli
from transformers_legrad.adapters import ZERO_SHOT_DETECTION, adapter_for
from transformers_legrad.cards import (
    ARCHITECTURES,
    CARD_MODELS,
    CLASSIFICATION,
    FAMILIES,
    HUB_LICENSES,
    ZERO_SHOT,
    card_filename,
    card_metadata,
    render_card,
    render_model_card,
    template_text,
    write_cards,
)

import tiny_aimv2
import tiny_audio
import tiny_blip
import tiny_classifiers
import tiny_clip_layout
import tiny_models
import tiny_owl
import tiny_video

ROOT = Path(__file__).resolve().parents[1]
CARDS_DIR = ROOT / "model_cards"
REGENERATE = "regenerate them with `python -m transformers_legrad.cards model_cards/`"
BASE_TAGS = ["legrad", "explainability", "saliency", "vision-transformer"]
TIMM_MISSING = "timm (and torchvision) is not installed: the timm card's tiny model runs in the parity environment"


def _card_text(model_id: str) -> str:
    path = CARDS_DIR / card_filename(model_id)
    assert path.is_file(), f"{path} is missing; {REGENERATE}"
    return path.read_text(encoding="utf-8")


def _front_matter(text: str) -> dict:
    match = re.match(r"---\n(.*?)\n---\n", text, flags=re.S)
    assert match, "no YAML front matter at the top of the card"
    return yaml.safe_load(match.group(1))


# --- the table ---------------------------------------------------------------------------------------------------
def test_table_rows_are_complete():
    for model_id, entry in CARD_MODELS.items():
        assert entry.model_id == model_id
        assert entry.family in FAMILIES
        assert entry.model_class in SUPPORTED_MODEL_CLASSES
        assert ARCHITECTURES[entry.model_class].base_task == entry.base_task
        assert entry.license in HUB_LICENSES and entry.license != "unknown"
        if entry.modality == "audio":  # a spectrogram, not pixels: its input and patch grid in words
            assert entry.input_grid and entry.native_resolution is None and entry.image_size is None
        else:
            assert entry.native_resolution and entry.patch_size and entry.image_size
            assert entry.image_size % entry.patch_size == 0 or entry.image_size == entry.native_resolution
        assert entry.parameter_class in ("<100M", "100M-1B", "1B-10B")


@pytest.mark.parametrize("model_class", sorted({entry.model_class for entry in CARD_MODELS.values()}))
def test_each_table_class_loads_as_a_supported_class_of_its_task(model_class, tiny_by_class):
    """A checkpoint of the row's class loads with that transformers class, LeGrad explains it, and a card made from
    its config alone names the same class and task as the table."""
    if model_class not in tiny_by_class:
        pytest.skip(TIMM_MISSING)
    model = getattr(transformers, model_class).from_pretrained(tiny_by_class[model_class].path)
    assert type(model).__name__ == model_class
    adapter = adapter_for(model)
    from_config = cards._card_model_from_config("me/model", model.config, None)
    assert from_config.model_class == model_class
    for entry in (entry for entry in CARD_MODELS.values() if entry.model_class == model_class):
        assert adapter.is_dual_encoder == (entry.base_task == ZERO_SHOT)
        assert from_config.base_task == entry.base_task


# --- front matter ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model_id", list(CARD_MODELS))
def test_front_matter_parses_with_the_hub_conventions(model_id):
    entry = CARD_MODELS[model_id]
    text = _card_text(model_id)
    card = ModelCard(text)
    data = card.data.to_dict()
    assert data == {
        "base_model": model_id,
        "library_name": "transformers",
        "license": entry.license,
        "pipeline_tag": entry.base_task,
        "tags": [*BASE_TAGS, entry.family],
    }
    assert metadata_load(CARDS_DIR / card_filename(model_id)) == data  # huggingface_hub's file reader agrees
    assert _front_matter(text) == data  # plain YAML reads the same metadata
    assert card.text.lstrip().startswith(f"# LeGrad explanations for {model_id}")


@pytest.mark.parametrize("path", sorted(CARDS_DIR.glob("demo-*.md")), ids=lambda path: path.name)
def test_demo_cards_front_matter_is_hub_metadata(path):
    data = ModelCard.load(path).data.to_dict()
    assert data["library_name"] == "transformers" and data["license"] == "apache-2.0"
    assert data["pipeline_tag"] in (ZERO_SHOT, CLASSIFICATION)
    assert data["tags"] == ["legrad", "explainability", "demo"] and "base_model" not in data


# --- the checked-in folder cannot go stale -----------------------------------------------------------------------
def test_checked_in_cards_equal_what_write_cards_renders_now(tmp_path):
    written = write_cards(tmp_path)
    expected = {path.name: path.read_text(encoding="utf-8") for path in written}
    assert set(expected) == {*(card_filename(model_id) for model_id in CARD_MODELS), "template.md"}
    # demo-*.md are the bundled demo models' cards, written by scripts/train_demo_models.py (tests/test_demo_models.py)
    cards = [path for path in CARDS_DIR.glob("*.md") if not path.name.startswith("demo-")]
    checked_in = {path.name: path.read_text(encoding="utf-8") for path in cards}
    assert set(checked_in) == set(expected), f"model_cards/ holds other files than write_cards writes; {REGENERATE}"
    stale = sorted(name for name in expected if checked_in[name] != expected[name])
    assert not stale, f"stale model cards {stale}; {REGENERATE}"


def test_template_file_is_the_raw_template():
    raw = template_text()
    assert (CARDS_DIR / "template.md").read_text(encoding="utf-8") == raw
    assert raw.startswith("---\n{{ card_data }}\n---\n")  # the front matter is the card's ModelCardData
    assert "{{ model_id }}" in raw and "{{ license }}" in raw and "${" not in raw


def test_module_entry_point_writes_the_folder(tmp_path, capsys):
    assert cards.main([str(tmp_path / "out")]) == 0
    names = sorted(path.name for path in (tmp_path / "out").iterdir())
    assert names == sorted([*(card_filename(model_id) for model_id in CARD_MODELS), "template.md"])
    assert "template.md" in capsys.readouterr().out


# --- what a card says ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model_id", list(CARD_MODELS))
def test_card_names_the_base_task_and_this_package_usage(model_id):
    entry = CARD_MODELS[model_id]
    text = _card_text(model_id)
    modality = ARCHITECTURES[entry.model_class].modality
    install = 'pip install "transformers-legrad[audio]"' if modality == "audio" else "pip install transformers-legrad\n"
    assert install in text  # the audio examples read a WAV file with soundfile, the audio extra
    assert ("suggested `image_size`" in text) == (modality == "image" and entry.image_size is not None)
    assert ("upsampled bilinearly" in text) == (modality == "image")  # AST's maps sit at its patch centres
    assert f'pipeline("legrad-explanation", model="{model_id}")' in text
    assert f"results = {entry.example_call}" in text
    assert f'{entry.model_class}.from_pretrained("{model_id}"' in text
    assert "LeGradExplainer(model, processor)" in text
    assert f"--model {model_id}" in text
    assert f"| base task | `{entry.base_task}` |" in text
    assert "WHERE, not HOW MUCH" in text
    assert "arXiv" in text and "2404.03214" in text and "Bousselham" in text and "ICCV" in text
    if entry.base_task == ZERO_SHOT:
        assert "candidate_labels=[" in text and "explainer.explain(images=image, text=[" in text
    elif ARCHITECTURES[entry.model_class].is_backbone:
        assert "reference_images=[" in text and "directions=probe" in text and "candidate_labels" not in text
    elif entry.base_task == ZERO_SHOT_DETECTION:
        assert "candidate_labels=[" in text and "threshold=" in text and 'result["box"]' in text
        assert "out.boxes" in text and "--threshold" in text and "top_k=3" not in text
        assert re.search(r'\{"label", "score",\s+"box", "heatmap", "overlay"\}', text)  # the results' box
    else:
        assert "top_k=3" in text and "targets=[" in text and "candidate_labels" not in text
    is_siglip = entry.model_class in ("SiglipModel", "Siglip2Model")
    assert ('"a photo of a"' in text) == is_siglip  # the null-prompt correction is explained for SigLIP only
    assert ("center-crops a square" in text) == (entry.model_class == "CLIPModel")
    if entry.image_size != entry.native_resolution:
        assert f"image_size={entry.image_size}" in text and f"--image-size {entry.image_size}" in text


# --- the usage runs against this package -------------------------------------------------------------------------
def _tiny_vit_imagenet_labels() -> tiny_models.Tiny:
    """A tiny ViT classifier with 1000 classes, class 281 named as in google/vit-base-patch16-224."""
    id2label = {i: f"class {i}" for i in range(1000)}
    id2label[281], id2label[285] = "tabby, tabby cat", "Egyptian cat"
    label2id = {name: i for i, name in id2label.items()}
    config = ViTConfig(**tiny_models.VISION, num_labels=1000, id2label=id2label, label2id=label2id)
    model = tiny_models._build(ViTForImageClassification, config, seed=0)
    size = {"height": tiny_models.IMAGE_SIZE, "width": tiny_models.IMAGE_SIZE}
    return tiny_models._round_trip(
        model,
        ViTImageProcessorPil(size=size),
        "vit-imagenet",
        auto_model=ViTForImageClassification,
        auto_processor=ViTImageProcessorPil,
    )


@pytest.fixture(scope="module")
def tiny_by_class(request):
    """Tiny local checkpoints standing in for the Hub ones, by the class that loads them."""
    return {
        "CLIPModel": request.getfixturevalue("clip"),
        "SiglipModel": request.getfixturevalue("siglip"),
        "ViTForImageClassification": _tiny_vit_imagenet_labels(),
        "MetaClip2Model": tiny_clip_layout.make_metaclip2(),
        "AltCLIPModel": tiny_clip_layout.make_altclip(),
        "ChineseCLIPModel": tiny_clip_layout.make_chinese_clip(),
        "Aimv2Model": tiny_aimv2.make_aimv2(),
        "BeitForImageClassification": tiny_classifiers.make_beit(**tiny_classifiers.imagenet_like_labels()),
        "Data2VecVisionForImageClassification": tiny_classifiers.make_data2vec_vision(
            **tiny_classifiers.imagenet_like_labels()
        ),
        **_tiny_timm(),
        "BlipForImageTextRetrieval": tiny_blip.make_blip(),
        "Owlv2ForObjectDetection": tiny_owl.make_owlv2(),
        "VideoMAEForVideoClassification": tiny_video.make_videomae(),
        "VivitForVideoClassification": tiny_video.make_vivit(),
        "ASTForAudioClassification": tiny_audio.make_ast(),
    }


def _tiny_timm() -> dict:
    if importlib.util.find_spec("timm") is None:
        return {}
    import tiny_timm

    return {"TimmWrapperModel": tiny_timm.make_timm("siglip")}


_ALREADY_RAN: set[str] = set()  # cards that differ only by id run the same code on the same tiny model


def _usage_blocks(text: str) -> tuple[list[str], str]:
    python_blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    commands = re.findall(r"```bash\n(legrad explain .*?)```", text, flags=re.S)
    assert len(python_blocks) == 2 and len(commands) == 1
    return python_blocks, commands[0].replace("\\\n", " ")


@pytest.mark.parametrize("model_id", list(CARD_MODELS))
def test_card_usage_runs_as_written_on_a_tiny_model(model_id, tiny_by_class, tmp_path, monkeypatch):
    entry = CARD_MODELS[model_id]
    if entry.model_class not in tiny_by_class:
        pytest.skip(TIMM_MISSING)
    tiny = tiny_by_class[entry.model_class]
    python_blocks, command = _usage_blocks(_card_text(model_id))
    python_blocks = [block.replace(f'"{model_id}"', f'"{tiny.path}"') for block in python_blocks]
    command = command.replace(f"--model {model_id}", f"--model {tiny.path}")
    key = "\n".join([*python_blocks, command])
    if key in _ALREADY_RAN:
        pytest.skip("same usage code as a card already run")
    monkeypatch.chdir(tmp_path)
    tiny_models.random_image(0, (64, 40)).save("cats.jpg")  # not square: CLIP's center crop cuts its sides
    tiny_models.random_image(1).save(cards.EXAMPLE_REFERENCE)  # a backbone's direction
    Path(cards.EXAMPLE_VIDEO).mkdir()  # a video classifier's clip: 6 frames, sampled to the model's 4
    for index, frame in enumerate(tiny_video.random_clip(2, frames=6)):
        frame.save(Path(cards.EXAMPLE_VIDEO) / f"frame{index}.png")
    wave = tiny_audio.tone_burst(tiny_audio.samples_for_frames(80), start=0.2, duration=0.2, seed=0)
    soundfile.write(cards.EXAMPLE_AUDIO, wave, tiny_audio.SAMPLING_RATE)  # an audio classifier's clip

    namespaces = []
    for index, block in enumerate(python_blocks):
        namespaces.append({"__name__": f"card_block_{index}"})
        exec(compile(block, f"<{card_filename(model_id)} python block {index}>", "exec"), namespaces[-1])
    overlays = sorted(Path(".").glob("legrad_*.png"))  # the pipeline block saves one picture per result
    out = namespaces[-1]["out"]
    if entry.base_task == ZERO_SHOT_DETECTION:  # one result per box above the threshold, one map per (box, query)
        assert len(overlays) == len(namespaces[0]["results"]) > 0
        assert out.heatmaps.shape[1] == out.boxes.shape[1] >= 1
    else:
        backbone = ARCHITECTURES[entry.model_class].is_backbone
        expected = len(cards.EXAMPLE_PROMPTS) if entry.base_task == ZERO_SHOT else 1 if backbone else 3
        assert len(overlays) == expected  # prompts, one reference, or the top 3 classes (video: strips; audio: figures)
        assert out.heatmaps.shape[:2] == (1, 2)  # two prompts, or two target classes
    if entry.modality == "video":
        assert len(sorted(Path(".").glob("legrad_*.gif"))) == 3  # and an animated GIF per class

    arguments = shlex.split(command)
    assert arguments[0] == "legrad"
    assert cli.main(arguments[1:]) == 0
    assert (tmp_path / "legrad_maps" / "results.json").is_file()
    _ALREADY_RAN.add(key)


# --- other checkpoints ---------------------------------------------------------------------------------------------
def test_unknown_id_without_config_or_family_raises():
    with pytest.raises(ValueError, match="not one of CARD_MODELS.*config="):
        render_card("someone/my-clip-finetune")


def test_local_path_is_not_a_hub_id():
    with pytest.raises(ValueError, match="not a Hub model id"):
        render_card("/tmp/checkpoints/my-clip", family="clip")


def test_unknown_id_takes_family_and_task_from_its_config(clip, vit, siglip2):
    text = render_card("me/clip-finetune", config=clip.model.config, license="mit")
    data = ModelCard(text).data.to_dict()
    assert data["pipeline_tag"] == ZERO_SHOT and data["license"] == "mit" and data["base_model"] == "me/clip-finetune"
    assert data["tags"] == [*BASE_TAGS, "clip"]
    size = 2 * tiny_models.IMAGE_SIZE  # twice a small native size, like 448 for 224
    assert 'pipeline("legrad-explanation", model="me/clip-finetune")' in text and f"image_size={size}" in text

    text = render_card("me/vit-finetune", config=vit.model.config.to_dict())  # a plain dict works too
    data = ModelCard(text).data.to_dict()
    assert data["pipeline_tag"] == CLASSIFICATION and data["license"] == "unknown"
    assert data["tags"][-1] == "vit" and "ViTForImageClassification.from_pretrained" in text

    text = render_card("me/siglip2-naflex", config=siglip2.model.config)
    assert ModelCard(text).data.to_dict()["tags"][-1] == "siglip2"
    assert "Siglip2Model.from_pretrained" in text and "image_size=" not in text  # NaFlex picks its own grid


def test_known_id_keeps_its_table_row_when_a_config_is_given(clip):
    model_id = "openai/clip-vit-base-patch16"
    assert render_card(model_id, config=clip.model.config) == render_card(model_id)


def test_unknown_id_with_a_family_renders_that_family():
    data = ModelCard(render_card("me/siglip-finetune", family="siglip", license="apache-2.0")).data.to_dict()
    assert data["pipeline_tag"] == ZERO_SHOT and data["tags"][-1] == "siglip" and data["license"] == "apache-2.0"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(config=BertConfig()), "cannot make a LeGrad card from a 'bert' config"),
        (
            dict(config={"model_type": "vit", "architectures": ["ViTForMaskedImageModeling"]}),
            "none of them a class LeGrad explains",
        ),
        (dict(family="resnet"), "`family` must be one of"),
        (dict(family="clip", base_task="image-classification"), "whose task is"),
        (dict(family="clip", base_task="object-detection"), "`base_task` must be one of"),
        (dict(family="clip", license=""), "`license` must be"),
        (dict(family="clip", license="MIT"), "`license` must be a Hub license identifier such as 'mit', got 'MIT'"),
        (dict(family="clip", license="Apache 2.0"), "repositories-licenses"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        render_card("me/model", **kwargs)


def test_known_id_takes_a_license_override():
    data = ModelCard(render_card("google/vit-base-patch16-224", license="cc-by-4.0")).data.to_dict()
    assert data["license"] == "cc-by-4.0"


# --- the renderer: front matter checked, every template variable given ---------------------------------------------
@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(license="Apache-2.0"), "`license` must be a Hub license identifier"),
        (dict(license=None), "`license` must be a Hub license identifier"),
        (dict(pipeline_tag="object-detection"), "`pipeline_tag` must be one of"),
        (dict(tags="legrad"), "`tags` must be a list of single-word strings"),
        (dict(tags=["legrad", "vision transformer"]), "`tags` must be a list of single-word strings"),
        (dict(tags=["legrad", 3]), "`tags` must be a list of single-word strings"),
        (dict(base_model="./my-model/"), "not a Hub model id"),
    ],
)
def test_card_metadata_rejects_what_the_hub_would_not_read(kwargs, message):
    arguments = {"pipeline_tag": ZERO_SHOT, "license": "mit", "tags": ["legrad"], **kwargs}
    with pytest.raises(ValueError, match=re.escape(message)):
        card_metadata(**arguments)


def test_card_metadata_is_model_card_data():
    metadata = card_metadata(
        pipeline_tag=CLASSIFICATION, license="apache-2.0", tags=("legrad", "vit"), base_model="a/b"
    )
    assert metadata.to_dict() == {
        "base_model": "a/b",
        "library_name": "transformers",
        "license": "apache-2.0",
        "pipeline_tag": CLASSIFICATION,
        "tags": ["legrad", "vit"],
    }


def test_renderer_names_a_missing_template_variable():
    fields = cards._fields(CARD_MODELS["openai/clip-vit-base-patch16"])
    del fields["cli_example"], fields["subject"]
    metadata = card_metadata(pipeline_tag=ZERO_SHOT, license="mit", tags=["legrad"])
    with pytest.raises(ValueError, match="model_card_template.md uses cli_example, subject, which the card was not"):
        render_model_card(metadata, **fields)


def test_renderer_rejects_a_template_without_the_metadata_block(monkeypatch):
    metadata = card_metadata(pipeline_tag=ZERO_SHOT, license="mit", tags=["legrad"])
    monkeypatch.setattr(cards, "template_text", lambda name: "---\nlicense: other\n---\n# {{ title }}\n")
    with pytest.raises(ValueError, match=re.escape("must start with `---`, `{{ card_data }}` and `---` lines")):
        render_model_card(metadata, "broken.md", title="x")
    monkeypatch.setattr(cards, "template_text", lambda name: "---\n{{ card_data }}\n---\n# {{ title }}\n")
    assert render_model_card(metadata, "ok.md", title="x").endswith("---\n# x\n")


def test_extra_fields_override_the_computed_ones():
    text = render_card("google/siglip-base-patch16-224", extra={"grid_description": "a custom grid"})
    assert "patch grid (a custom grid)" in text
