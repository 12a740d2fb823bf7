"""Hub-ready model cards: how to explain a supported checkpoint with LeGrad, one Markdown file per model.

    >>> from transformers_legrad.cards import CARD_MODELS, render_card, write_cards
    >>> card = render_card("openai/clip-vit-base-patch16")     # YAML front matter + sections, as a string
    >>> render_card("me/my-clip-finetune", config=model.config, license="mit")   # a checkpoint not in the table
    >>> write_cards("model_cards/")                              # every CARD_MODELS entry + template.md

`python -m transformers_legrad.cards model_cards/` regenerates the repository's `model_cards/` folder.

A card is rendered by `huggingface_hub.ModelCard.from_template` (`render_model_card`, the one renderer, also of
the bundled demo models' cards): the front matter is a checked `ModelCardData` (`card_metadata`) that follows Hub
conventions (`library_name`, `pipeline_tag` = the base model's task, `license` = the base model's as published on
the Hub, `base_model`, tags), the body is the Jinja template `model_card_template.md` shipped next to this module,
whose sections say what the maps show, how to get them (pipeline, Python API, CLI), how to read them and where
they stop. Everything that depends on the checkpoint comes from its `CardModel` row; everything that depends on how
the model is loaded (score, processor geometry, pipeline arguments) comes from the spec of its family's adapter
(`transformers_legrad.adapters`), found by its transformers class.
"""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2.meta
from huggingface_hub import ModelCard, ModelCardData

from .adapters import IMAGE_CLASSIFICATION, ZERO_SHOT, FamilySpec, HubCheckpoint, registry  # noqa: F401  (ZERO_SHOT: public)
from .adapters.base import TASK_LOADERS

CLASSIFICATION = IMAGE_CLASSIFICATION
BASE_TASKS = tuple(TASK_LOADERS)  # ZERO_SHOT, CLASSIFICATION
TEMPLATE_NAME = "model_card_template.md"
UNKNOWN_LICENSE = "unknown"  # the Hub's identifier for "license not known"

EXAMPLE_IMAGE = "cats.jpg"
EXAMPLE_PROMPTS = ("a cat", "a remote control")
EXAMPLE_CLASS = "tabby, tabby cat"  # ImageNet-1k class 281, as named in the ViT/DeiT checkpoints' id2label
EXAMPLE_REFERENCE = "cat_reference.jpg"  # backbones: a reference image whose embedding is the direction
EXAMPLE_THRESHOLD = 0.2  # detectors: explain every box whose detection score is above it
EXAMPLE_VIDEO = "clip_frames/"  # video classifiers: a folder of frames (a GIF works too)
EXAMPLE_AUDIO = "clip.wav"  # audio classifiers
EXAMPLE_CLASS_IDS = (0, 1)  # video and audio cards: class ids (their names are in `model.config.id2label`)
#: What a card calls the input of a model of each modality, and the file its usage examples explain.
INPUT_NOUNS = {"image": "image", "video": "video", "audio": "audio clip"}
EXAMPLE_INPUTS = {"image": EXAMPLE_IMAGE, "video": EXAMPLE_VIDEO, "audio": EXAMPLE_AUDIO}


class _Registered(Mapping):
    """A read-only, always current view of the adapters' registry (an adapter registered later shows up), rebuilt
    only when the registry changes."""

    def __init__(self, read: Callable[[], dict[str, Any]]) -> None:
        self._read = read
        self._cached: tuple[int, dict[str, Any]] | None = None

    def _current(self) -> dict[str, Any]:
        revision = registry.revision()
        if self._cached is None or self._cached[0] != revision:
            self._cached = (revision, self._read())
        return self._cached[1]

    def __getitem__(self, key: str) -> Any:
        return self._current()[key]

    def __iter__(self):
        return iter(self._current())

    def __len__(self) -> int:
        return len(self._current())


#: How each class a card can be written for is explained: its family's spec (base task, processor class, score
#: definition, reading notes), by class name.
ARCHITECTURES: Mapping[str, FamilySpec] = _Registered(registry.served_classes)
#: Each family's spec by its Hub tag (display name, main class).
FAMILIES: Mapping[str, FamilySpec] = _Registered(registry.families)


@dataclass(frozen=True)
class CardModel(HubCheckpoint):
    """One row of CARD_MODELS: a `HubCheckpoint` (see its fields) whose `family` and `model_class` are resolved.

    `family` is a FAMILIES key, also the card's family tag; `model_class` the transformers class that loads the
    checkpoint (an ARCHITECTURES key), whose spec gives `base_task` and the card's prose.
    """

    @property
    def base_task(self) -> str:
        """The base model's pipeline task (its class's family's)."""
        return self.architecture.base_task

    @property
    def architecture(self) -> FamilySpec:
        return ARCHITECTURES[self.model_class]

    @property
    def parameter_class(self) -> str | None:
        """The Hub-style size bucket of the whole checkpoint: "<100M", "100M-1B" or "1B-10B"."""
        if self.parameters_millions is None:
            return None
        for bound, name in ((100, "<100M"), (1_000, "100M-1B"), (10_000, "1B-10B")):
            if self.parameters_millions < bound:
                return name
        return ">10B"

    @property
    def explain_size_argument(self) -> str:
        """`, image_size=N` when the suggested size differs from the native one, else ""."""
        if self.image_size is None or self.image_size == self.native_resolution:
            return ""
        return f", image_size={self.image_size}"

    @property
    def modality(self) -> str:
        """What the model takes: "image", "video" or "audio" (its family's `FamilySpec.modality`)."""
        return self.architecture.modality

    @property
    def example_call(self) -> str:
        """The pipeline call a card shows, on a pipeline bound to `explain`."""
        if self.modality != "image":
            return f'explain("{EXAMPLE_INPUTS[self.modality]}", top_k=3)'
        if self.architecture.is_backbone:
            return f'explain("{EXAMPLE_IMAGE}", reference_images=["{EXAMPLE_REFERENCE}"]{self.explain_size_argument})'
        if self.architecture.is_dual_encoder or self.architecture.is_detector:
            labels = ", ".join(f'"{prompt}"' for prompt in EXAMPLE_PROMPTS)
            threshold = f", threshold={EXAMPLE_THRESHOLD}" if self.architecture.is_detector else ""
            return f'explain("{EXAMPLE_IMAGE}", candidate_labels=[{labels}]{threshold}{self.explain_size_argument})'
        return f'explain("{EXAMPLE_IMAGE}", top_k=3{self.explain_size_argument})'


def _card_models() -> dict[str, CardModel]:
    """Every registered family's `HubCheckpoint`s as card rows, in registration order."""
    rows: dict[str, CardModel] = {}
    for adapter in registry.registered_adapters():
        spec = adapter.spec
        for checkpoint in spec.checkpoints:
            resolved = {
                "family": checkpoint.family or spec.name,
                "model_class": checkpoint.model_class or spec.main_class,
            }
            rows.setdefault(checkpoint.model_id, CardModel(**{**asdict(checkpoint), **resolved}))
    return rows


#: The Hub checkpoints that get a generated card (the `checkpoints` of each family's spec), by id.
CARD_MODELS: Mapping[str, CardModel] = _Registered(_card_models)


# --- rendering ---------------------------------------------------------------------------------------------------
# The license identifiers the Hub accepts in a card's `license:` field, as listed on
# https://huggingface.co/docs/hub/repositories-licenses ("unknown" and "other" included).
HUB_LICENSES = frozenset(
    """
    apache-2.0 mit openrail bigscience-openrail-m creativeml-openrail-m bigscience-bloom-rail-1.0 bigcode-openrail-m
    afl-3.0 artistic-2.0 bsl-1.0 bsd bsd-2-clause bsd-3-clause bsd-3-clause-clear c-uda cc cc0-1.0 cc-by-2.0
    cc-by-2.5 cc-by-3.0 cc-by-4.0 cc-by-sa-3.0 cc-by-sa-4.0 cc-by-nc-2.0 cc-by-nc-3.0 cc-by-nc-4.0 cc-by-nd-4.0
    cc-by-nc-nd-3.0 cc-by-nc-nd-4.0 cc-by-nc-sa-2.0 cc-by-nc-sa-3.0 cc-by-nc-sa-4.0 cdla-sharing-1.0
    cdla-permissive-1.0 cdla-permissive-2.0 wtfpl ecl-2.0 epl-1.0 epl-2.0 etalab-2.0 eupl-1.1 agpl-3.0 gfdl gpl
    gpl-2.0 gpl-3.0 lgpl lgpl-2.1 lgpl-3.0 isc lppl-1.3c ms-pl mpl-2.0 odc-by odbl openrail++ osl-3.0 postgresql
    ofl-1.1 ncsa unlicense zlib pddl lgpl-lr deepfloyd-if-license llama2 gemma unknown other
    """.split()
)
LIBRARY_NAME = "transformers"  # the checkpoints load with transformers; the Hub's widgets and snippets key on it
CARD_TAGS = ("legrad", "explainability", "saliency", "vision-transformer")  # a LeGrad card's tags, then its family


def template_text(name: str = TEMPLATE_NAME) -> str:
    """The raw Jinja text of a card template shipped with the package (default `model_card_template.md`)."""
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def card_metadata(
    *, pipeline_tag: str, license: str, tags: Sequence[str], base_model: str | None = None
) -> ModelCardData:
    """A card's YAML front matter, checked before anything is rendered.

    Args:
        pipeline_tag: the model's Hub task, one of BASE_TASKS.
        license: a Hub license identifier (HUB_LICENSES), such as "mit".
        tags: the card's Hub tags, non-empty strings without spaces.
        base_model: the Hub id of the model the card's checkpoint is (or derives from); None: none.

    Returns:
        The `ModelCardData` (with `library_name: transformers`) that `render_model_card` writes as front matter.

    Raises:
        ValueError: a license, task, tag or base model the Hub would not read as such.
    """
    if license not in HUB_LICENSES:
        raise ValueError(
            f"`license` must be a Hub license identifier such as 'mit', got {license!r}: see "
            "https://huggingface.co/docs/hub/repositories-licenses for the list ('other' for one that is not in it)."
        )
    if pipeline_tag not in BASE_TASKS:
        raise ValueError(f"`pipeline_tag` must be one of {', '.join(BASE_TASKS)}, got {pipeline_tag!r}.")
    if isinstance(tags, str) or not all(isinstance(tag, str) and tag and not _has_space(tag) for tag in tags):
        raise ValueError(f"`tags` must be a list of single-word strings such as ['legrad', 'clip'], got {tags!r}.")
    if base_model is not None:
        _check_hub_id(base_model)
    return ModelCardData(
        base_model=base_model, library_name=LIBRARY_NAME, license=license, pipeline_tag=pipeline_tag, tags=list(tags)
    )


def _has_space(text: str) -> bool:
    return any(character.isspace() for character in text)


def render_model_card(metadata: ModelCardData, template_name: str = TEMPLATE_NAME, **fields: Any) -> str:
    """Render a card: `metadata` as its front matter, the package's Jinja template `template_name` as its body.

    The one renderer of this package's cards (the LeGrad cards of `render_card` and the bundled demo models'),
    through `huggingface_hub.ModelCard.from_template`: the template puts `{{ card_data }}` (the metadata as YAML)
    between its `---` lines and may use the metadata's keys (`license`, `base_model`, ...) and `fields`.

    Args:
        metadata: the front matter, from `card_metadata`.
        template_name: a template file shipped next to this module.
        **fields: the template's other variables; they win over metadata keys of the same name.

    Returns:
        The card, Markdown with YAML front matter, ending with a newline.

    Raises:
        ValueError: a variable of the template that neither `fields` nor `metadata` gives, or a template whose
            front matter does not read back as `metadata`.
    """
    source = template_text(template_name)
    needed = jinja2.meta.find_undeclared_variables(jinja2.Environment().parse(source))
    missing = sorted(needed - {"card_data", *metadata.to_dict(), *fields})
    if missing:
        raise ValueError(f"{template_name} uses {', '.join(missing)}, which the card was not given; pass them.")
    card = ModelCard.from_template(metadata, template_str=source, **fields)
    if card.data.to_dict() != metadata.to_dict():
        raise ValueError(
            f"the front matter of {template_name} does not read back as the card's metadata: it must start with "
            "`---`, `{{ card_data }}` and `---` lines."
        )
    text = str(card)
    return text if text.endswith("\n") else text + "\n"  # Jinja drops the template's final newline


def render_card(
    model_id: str,
    *,
    family: str | None = None,
    base_task: str | None = None,
    license: str | None = None,
    extra: Mapping[str, str] | None = None,
    config: Any = None,
) -> str:
    """Render the Hub model card (Markdown with YAML front matter) for explaining `model_id` with LeGrad.

    Args:
        model_id: a CARD_MODELS id, or any other Hub id (e.g. of a fine-tune), which then needs `config` or
            `family`. The CARD_MODELS row wins over `config` for the ids it lists.
        family: a FAMILIES key; overrides the table's, or names the family of an unknown id.
        base_task: `zero-shot-image-classification` or `image-classification`; must be the task of the model's
            class (it cannot turn a dual encoder into a classifier), checked when given.
        license: the base model's Hub license identifier (HUB_LICENSES); default the table's, or "unknown" for
            other ids.
        extra: more template fields, or overrides of the computed ones (e.g. {"grid_description": "..."}); the
            front matter is not a field: it always says what `model_id`, `family`, `base_task` and `license` say.
        config: a transformers `PretrainedConfig` (or its `to_dict()`) of an unknown checkpoint: family, class,
            native resolution and patch size are read from it.

    Raises:
        ValueError: an id that is not a Hub id (e.g. a local path), an unknown id without `config` or `family`,
            an unknown family, a config this package cannot explain, a `base_task` that does not match the
            model class, or a license that is not a Hub license identifier.
    """
    entry = _card_model(model_id, family=family, base_task=base_task, license=license, config=config)
    metadata = card_metadata(
        pipeline_tag=entry.base_task,
        license=entry.license,
        tags=[*CARD_TAGS, entry.family],
        base_model=entry.model_id,
    )
    return render_model_card(metadata, TEMPLATE_NAME, **{**_fields(entry), **(extra or {})})


def write_cards(out_dir: str | Path) -> list[Path]:
    """Write `<out_dir>/<org>__<name>.md` for every CARD_MODELS entry and `<out_dir>/template.md`.

    Returns:
        The written paths, the cards in CARD_MODELS order, then the template.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for model_id in CARD_MODELS:
        path = out / card_filename(model_id)
        path.write_text(render_card(model_id), encoding="utf-8", newline="\n")
        written.append(path)
    path = out / "template.md"
    path.write_text(template_text(), encoding="utf-8", newline="\n")
    written.append(path)
    return written


def card_filename(model_id: str) -> str:
    """`org/name` -> `org__name.md`."""
    return model_id.replace("/", "__") + ".md"


# --- what goes into a card ---------------------------------------------------------------------------------------
def _check_hub_id(model_id) -> None:
    """A card's `base_model` and links need a Hub id (`org/name` or `name`), not a local path."""
    from huggingface_hub.utils import validate_repo_id

    if not isinstance(model_id, str):
        raise ValueError(f"`model_id` must be a Hub model id such as 'org/name', got {model_id!r}.")
    try:
        validate_repo_id(model_id)
    except ValueError:
        raise ValueError(
            f"{model_id!r} is not a Hub model id ('org/name'): a card's `base_model` and links need one. For a "
            "local checkpoint, pass the id it is (or will be) published under, with its `config=`."
        ) from None


def _card_model(model_id, *, family, base_task, license, config) -> CardModel:
    if family is not None and family not in FAMILIES:
        raise ValueError(f"`family` must be one of {', '.join(FAMILIES)}, got {family!r}.")
    _check_hub_id(model_id)
    if model_id in CARD_MODELS:  # the table wins over a config: it holds what a config cannot (license, sizes)
        entry = CARD_MODELS[model_id]
        if family is not None and family != entry.family:
            entry = replace(entry, family=family)
    elif config is not None:
        entry = _card_model_from_config(model_id, config, family)
    elif family is not None:
        entry = CardModel(model_id, UNKNOWN_LICENSE, None, None, family=family, model_class=FAMILIES[family].main_class)
    else:
        raise ValueError(
            f"no card data for {model_id!r}: it is not one of CARD_MODELS ({', '.join(CARD_MODELS)}). Pass its "
            "transformers config (`render_card(model_id, config=model.config)`) or its family "
            f"(`family=` one of {', '.join(FAMILIES)})."
        )
    if license is not None:
        if not isinstance(license, str) or not license.strip():
            raise ValueError(f"`license` must be a Hub license identifier such as 'mit', got {license!r}.")
        entry = replace(entry, license=license)
    if base_task is not None:
        if base_task not in BASE_TASKS:
            raise ValueError(f"`base_task` must be one of {', '.join(BASE_TASKS)}, got {base_task!r}.")
        if base_task != entry.base_task:
            raise ValueError(
                f"{model_id!r} loads as {entry.model_class}, whose task is {entry.base_task!r}, not {base_task!r}."
            )
    return entry


def _card_model_from_config(model_id: str, config, family: str | None) -> CardModel:
    values = config if isinstance(config, Mapping) else config.to_dict()
    model_type = values.get("model_type")
    spec = registry.family_of_model_type(model_type)
    if spec is None:
        model_types = [model_type for spec in FAMILIES.values() for model_type in spec.model_types]
        raise ValueError(
            f"cannot make a LeGrad card from a {model_type!r} config: supported model types are "
            f"{', '.join(model_types)} (checkpoints that load as {', '.join(ARCHITECTURES)})."
        )
    family = family or spec.name
    architectures = [name for name in values.get("architectures") or () if name in ARCHITECTURES]
    model_class = architectures[0] if architectures else registry.default_class(model_type)
    if model_class is None:
        raise ValueError(
            f"the {model_type!r} config of {model_id!r} lists architectures {values.get('architectures')}, none of "
            f"them a class LeGrad explains ({', '.join(ARCHITECTURES)})."
        )
    vision = values.get("vision_config") or values
    native = vision.get("image_size") if ARCHITECTURES[model_class].native_resolution else None
    patch = vision.get("patch_size")
    image_size = None
    if native is not None and ARCHITECTURES[model_class].is_dual_encoder and native <= 256:
        image_size = 2 * native  # the authors' demo setting for 224-pixel models
    return CardModel(
        model_id, UNKNOWN_LICENSE, native, patch, image_size=image_size, family=family, model_class=model_class
    )


def _fields(entry: CardModel) -> dict[str, str]:
    architecture = entry.architecture
    return {
        "model_id": entry.model_id,
        "input_noun": INPUT_NOUNS[entry.modality],
        "upsampling": _upsampling(entry),
        "result_description": _result_description(entry),
        "token": "tubelet" if entry.modality == "video" else "patch",
        "upsampling_mode": _upsampling_mode(entry),
        "install": _install(entry),
        "model_table": _model_table(entry),
        "subject": _subject(architecture),
        "score_definition": _wrap(architecture.score_definition),
        "pipeline_example": _pipeline_example(entry),
        "python_example": _python_example(entry),
        "python_notes": "\n\n".join(_wrap(note) for note in _python_notes(entry)),
        "cli_example": _cli_example(entry),
        "reading_notes": "\n".join(_wrap(note, bullet=True) for note in architecture.reading_notes),
        "method_note": _wrap(_method_note(entry), bullet=True),
        "scope_note": _wrap(_scope_note(entry), bullet=True),
        "grid_description": _grid_description(entry),
    }


def _subject(architecture: FamilySpec) -> str:
    """What one map explains, in the card's prose."""
    if architecture.is_detector:
        return "detection"
    return "direction" if architecture.is_backbone else "prompt" if architecture.is_dual_encoder else "class"


def _upsampling(entry: CardModel) -> str:
    """How a map goes from its token grid to the input, as the card's sentence says it."""
    return {
        "image": "upsampled bilinearly to the processed image",
        "video": "upsampled trilinearly (along frames, height and width) to the processed frames",
        "audio": "interpolated linearly between the patch centres onto the spectrogram (mel bins x time frames)",
    }[entry.modality]


def _upsampling_mode(entry: CardModel) -> str:
    """How a map goes from its token grid to the input, in the Limitations' few words."""
    return {
        "image": "upsampled bilinearly",
        "video": "upsampled trilinearly",
        "audio": "interpolated linearly between the patch centres",
    }[entry.modality]


def _install(entry: CardModel) -> str:
    """The install line: audio examples read audio files, with soundfile (the `audio` extra)."""
    return (
        'pip install "transformers-legrad[audio]"' if entry.modality == "audio" else "pip install transformers-legrad"
    )


def _result_description(entry: CardModel) -> str:
    """The pipeline section's paragraph on what one result holds."""
    registers = "`import transformers_legrad` registers the `legrad-explanation` task."
    if entry.modality == "image" and entry.architecture.is_detector:
        return _wrap(
            f'{registers} Each result is a dict `{{"label", "score", "box", "heatmap", "overlay"}}` (`box`: '
            '`{"xmin", "ymin", "xmax", "ymax"}` in the original image\'s pixels; `heatmap`: PIL "L" image at the '
            "original size; `overlay`: PIL RGB, the box drawn on it), sorted by score, highest first; "
            '`return_tensors=True` adds `"map"`, a float32 [height, width] array in [0, 1].'
        )
    if entry.modality == "image":
        return (
            f"{registers} Each result is a dict\n"
            '`{"label", "score", "heatmap", "overlay"}` (`heatmap`: PIL "L" image at the original size; `overlay`: '
            'PIL RGB),\nsorted by score, highest first; `return_tensors=True` adds `"map"`, a float32 [height, width] '
            "array in [0, 1]."
        )
    return _wrap(f"{registers} {_media_result_description(entry)}")


def _media_result_description(entry: CardModel) -> str:
    if entry.modality == "video":
        return (
            'Each result is a dict `{"label", "score", "frames", "strip"}` (`frames`: one PIL RGB overlay per frame '
            "the model saw, at the original size; `strip`: those frames in a row with the label and score), sorted "
            'by score, highest first; `return_tensors=True` adds `"map"`, a float32 [frames, height, width] array in '
            "[0, 1]. The clip is a folder of frames, a GIF, a list of frames or a [frames, H, W, C] array, sampled to "
            "the model's `config.num_frames` as transformers' `video-classification` pipeline does."
        )
    if entry.modality == "audio":
        return (
            'Each result is a dict `{"label", "score", "overlay", "relevance_over_time", "times"}` (`overlay`: the '
            "spectrogram with the map over it and the relevance-over-time curve under it, PIL RGB; "
            "`relevance_over_time`: the map's mean over mel bins at each spectrogram frame; `times`: each frame's "
            'time in seconds), sorted by score, highest first; `return_tensors=True` adds `"map"`, a float32 [mel '
            "bins, time frames] array in [0, 1]. All of them cover the clip's own frames, not the feature "
            "extractor's padding after them. The clip is an audio file, a 1-D waveform at the feature "
            'extractor\'s rate or `{"raw": waveform, "sampling_rate": rate}` (resampled), as transformers\' '
            "`audio-classification` pipeline takes it."
        )
    raise ValueError(f"no result description for {entry.modality!r} inputs")


def _wrap(text: str, bullet: bool = False) -> str:
    """Prose wrapped like the template (at 116 columns); bullets get a hanging indent."""
    return textwrap.fill(
        text, width=116, subsequent_indent="  " if bullet else "", break_long_words=False, break_on_hyphens=False
    )


def _scope_note(entry: CardModel) -> str:
    if entry.architecture.is_detector:
        return (
            "- The maps explain the image tower (LeGrad differentiates the vision transformer's attention) for one "
            "box's class logit; they say which regions made that box match its query, not why the box has its "
            "extent (the box head is not explained). Each explained box costs one backward per explained block, so "
            "a low `threshold` on a large image means many maps."
        )
    if entry.architecture.is_backbone:
        return (
            "- The maps explain LeGrad's per-block cosine with the direction (the final norm on the mean of all "
            "tokens), not the model's own pooling (such as the CLS token); "
            '`LeGradExplainer(model, processor, score="model")` uses the model\'s own pooling at every block instead. '
            "A direction must live in the model's pooled feature space (its final, normalized CLS or pooled feature)."
        )
    if entry.architecture.is_dual_encoder and not _has_text_side(entry.architecture):
        return "- The maps explain the image tower (LeGrad differentiates the vision transformer's attention)."
    if entry.architecture.is_dual_encoder:
        return (
            "- The maps explain the image tower (LeGrad differentiates the vision transformer's attention). Which "
            "words of a prompt matched is a separate, opt-in output: `explain(..., text_relevance=True)` runs LeGrad "
            "on the text tower, with the image as the direction (`out.word_relevance`; pipeline and CLI: "
            "`text_relevance=True` / `--text-relevance`)."
        )
    return (
        "- The maps explain LeGrad's per-block class score (the mean of all tokens through the final norm and the "
        "head), not the model's own pooling (such as the CLS token); "
        '`LeGradExplainer(model, processor, score="model")` uses the model\'s own pooling at every block instead.'
    )


def _has_text_side(spec: FamilySpec) -> bool:
    """Whether the family's adapter explains its text tower too (`text_layout`, `explain(..., text_relevance=True)`)."""
    return any(getattr(a, "text_layout", None) is not None for a in registry.registered_adapters() if a.spec is spec)


def _method_note(entry: CardModel) -> str:
    if entry.architecture.is_detector:
        return (
            "- How faithfully the maps reflect the model's reasoning is a property of the LeGrad method; see the paper "
            "for its evaluation. The paper and the authors' code explain image-text models; for detectors this "
            "package applies the same recipe to one box's class logit, with no released reference to compare to."
        )
    if entry.architecture.is_backbone:
        return (
            "- How faithfully the maps reflect the model's reasoning is a property of the LeGrad method; see the paper "
            "for its evaluation. The paper and the authors' code explain image-text models; for backbones this "
            "package applies the same recipe to the pooled feature, with no released reference to compare to."
        )
    if entry.architecture.is_dual_encoder:
        return (
            "- How faithfully the maps reflect the model's reasoning is a property of the LeGrad method; see the "
            "paper for its evaluation. This package computes the maps of the authors' released code (checked "
            "against it in its tests); it does not make them more faithful."
        )
    return (
        "- How faithfully the maps reflect the model's reasoning is a property of the LeGrad method; see the paper "
        "for its evaluation. The paper and the authors' code explain image-text models; for classifiers this "
        "package applies the same recipe to the classification head, with no released reference to compare to."
    )


def _millions(value: float) -> str:
    return f"~{value / 1000:.1f}B" if value >= 1000 else f"~{value:.0f}M"


def _model_table(entry: CardModel) -> str:
    rows = [
        ("base model", f"[`{entry.model_id}`](https://huggingface.co/{entry.model_id})"),
        ("family", FAMILIES[entry.family].display_name),
        ("transformers class", f"`{entry.model_class}`"),
        ("base task", f"`{entry.base_task}`"),
        ("license (base model)", f"`{entry.license}`"),
    ]
    if entry.native_resolution is not None:
        rows.append(("native resolution", f"{entry.native_resolution} x {entry.native_resolution} pixels"))
    if entry.patch_size is not None and entry.modality != "audio":
        rows.append(("patch size", f"{entry.patch_size} x {entry.patch_size} pixels"))
    if entry.input_grid is not None:
        rows.append(("input and map grid", entry.input_grid))
    if entry.parameters_millions is not None:
        rows.append(("parameters", f"{_millions(entry.parameters_millions)} ({entry.parameter_class})"))
    if entry.image_tower_parameters_millions is not None:
        rows.append(("image tower (what LeGrad explains)", f"{_millions(entry.image_tower_parameters_millions)}"))
    if entry.image_size is not None and entry.modality == "image":  # video and audio models refuse `image_size`
        rows.append(("suggested `image_size`", f"{entry.image_size} ({_grid_description(entry)})"))
    return "\n".join(f"| {name} | {value} |" for name, value in rows)


def _grid_description(entry: CardModel) -> str:
    if entry.input_grid is not None:
        return entry.input_grid.split("; ")[-1]  # the token grid part
    size = entry.image_size or entry.native_resolution
    if size is None or entry.patch_size is None:
        return "one cell per patch"
    cells = size // entry.patch_size
    return f"{cells} x {cells} patches at {size} x {size} pixels"


def _pipeline_example(entry: CardModel) -> str:
    detector = entry.architecture.is_detector
    lines = [
        'import transformers_legrad  # registers the "legrad-explanation" task',
        "from transformers import pipeline",
        "",
        f'explain = pipeline("legrad-explanation", model="{entry.model_id}")',
        f"results = {entry.example_call}",
        "for rank, result in enumerate(results):",
        '    print(result["label"], round(result["score"], 3)' + (', result["box"])' if detector else ")"),
    ]
    if entry.modality == "video":
        lines += [
            '    result["strip"].save(f"legrad_{rank}.png")  # the frames with their maps, in a row',
            '    save_gif(f"legrad_{rank}.gif", result["frames"])  # the same, animated',
        ]
        lines.insert(2, "from transformers_legrad.visualize_media import save_gif")
    elif entry.modality == "audio":
        lines += [
            '    result["overlay"].save(f"legrad_{rank}.png")  # the spectrogram with the map and the curve',
            '    curve, times = result["relevance_over_time"], result["times"]',
            '    print("most relevant at", round(times[curve.index(max(curve))], 2), "s")',
        ]
    else:
        lines.append('    result["overlay"].save(f"legrad_{rank}.png")')
    return "\n".join(lines)


def _python_example(entry: CardModel) -> str:
    if entry.modality != "image":
        return _media_python_example(entry)
    architecture = entry.architecture
    processor = architecture.processor_class
    size = entry.explain_size_argument
    load_kwargs = f", dtype=torch.{entry.dtype}" if entry.dtype else ""
    lines = [
        "import torch",
        "from PIL import Image",
        f"from transformers import {processor}, {entry.model_class}",
        "from transformers_legrad import LeGradExplainer",
        "",
        'device = "cuda" if torch.cuda.is_available() else "cpu"',
        f'model = {entry.model_class}.from_pretrained("{entry.model_id}"{load_kwargs}).to(device)',
        f'processor = {processor}.from_pretrained("{entry.model_id}")',
        "explainer = LeGradExplainer(model, processor)  # explains the last 2 blocks, the authors' default",
        "",
        f'image = Image.open("{EXAMPLE_IMAGE}")',
    ]
    if architecture.is_backbone:
        lines += [
            f'reference = Image.open("{EXAMPLE_REFERENCE}")',
            f"out = explainer.explain(images=image, reference_images=[reference]{size})  # where it shows reference",
            "probe = torch.randn(2, explainer.adapter.embedding_dim)  # e.g. a linear probe's rows, a class mean",
            f'out = explainer.explain(images=image, directions=probe, labels=["a", "b"]{size})',
            "out.heatmaps  # float32 [images, directions, height, width] in [0, 1], one map per direction",
            "out.scores    # float32 [images, directions]: cosine of the pooled embedding with each direction",
        ]
    elif architecture.is_detector:
        prompts = ", ".join(f'"{prompt}"' for prompt in EXAMPLE_PROMPTS)
        lines += [
            f"out = explainer.explain(images=image, text=[{prompts}]{size})  # each query's best box",
            f"out = explainer.explain(images=image, text=[{prompts}], threshold={EXAMPLE_THRESHOLD}{size})",
            "out.heatmaps  # float32 [images, maps, height, width] in [0, 1], one map per (box, query) above it",
            "out.boxes     # float32 [images, maps, 4]: (xmin, ymin, xmax, ymax) in the processed image's pixels",
            "out.labels_for(0), out.probabilities  # each map's query; detection scores (sigmoid of the logits)",
        ]
    elif architecture.is_dual_encoder:
        prompts = ", ".join(f'"{prompt}"' for prompt in EXAMPLE_PROMPTS)
        lines += [
            f"out = explainer.explain(images=image, text=[{prompts}]{size})",
            "out.heatmaps  # float32 [images, prompts, height, width] in [0, 1], one map per prompt",
            f"out.scores    # float32 [images, prompts]: {architecture.scores_name}",
        ]
    else:
        lines += [
            f"out = explainer.explain(images=image{size})  # the top-1 class",
            f'out = explainer.explain(images=image, targets=["{EXAMPLE_CLASS}", 285]{size})  # a name, an id',
            "out.heatmaps  # float32 [images, classes, height, width] in [0, 1], one map per class",
            "out.labels, out.target_ids, out.scores  # class names, class ids, logits",
        ]
    return "\n".join(lines)


def _media_python_example(entry: CardModel) -> str:
    """The Python block of a video or audio classifier: read the input with `media`, explain the top class and
    two class ids."""
    processor = entry.architecture.processor_class
    targets = ", ".join(str(class_id) for class_id in EXAMPLE_CLASS_IDS)
    if entry.modality == "video":
        reader = "load_video, sample_frames"
        read = [f'frames = sample_frames(load_video("{EXAMPLE_VIDEO}"), model.config.num_frames)']
        given, shape = "videos=frames", "[videos, classes, frames, height, width]"
    else:
        reader = "load_audio"
        read = [f'waveform, rate = load_audio("{EXAMPLE_AUDIO}", target_rate=processor.sampling_rate)']
        given, shape = "audio=waveform, sampling_rate=rate", "[clips, classes, mel bins, time frames]"
    lines = [
        "import torch",
        f"from transformers import {processor}, {entry.model_class}",
        "from transformers_legrad import LeGradExplainer",
        f"from transformers_legrad.media import {reader}",
        "",
        'device = "cuda" if torch.cuda.is_available() else "cpu"',
        f'model = {entry.model_class}.from_pretrained("{entry.model_id}").to(device)',
        f'processor = {processor}.from_pretrained("{entry.model_id}")',
        "explainer = LeGradExplainer(model, processor)  # explains the last 2 blocks, the authors' default",
        "",
        *read,
        f"out = explainer.explain({given})  # the top-1 class",
        f"out = explainer.explain({given}, targets=[{targets}])  # class ids (names: model.config.id2label)",
        f"out.heatmaps  # float32 {shape} in [0, 1], one map per class",
        "out.labels, out.target_ids, out.scores  # class names, class ids, logits",
    ]
    if entry.modality == "audio":
        lines.append("out.relevance_over_time(), out.frame_times  # [clips, classes, time frames], seconds")
    return "\n".join(lines)


def _python_notes(entry: CardModel) -> list[str]:
    notes = [
        '`layers=` (constructor or call) picks the explained blocks: an int n for the last n, `"all"`, or block '
        "indices; `return_layer_maps=True` adds each block's map in `out.layer_maps`. `out.grid_maps` holds the "
        "raw summed maps on the patch grid."
    ]
    if entry.architecture.is_detector:
        notes.append(
            "A detector's pipeline results are those of `zero-shot-object-detection` (`threshold` default 0.1, "
            '`top_k`), each with a `"box"` `{"xmin", "ymin", "xmax", "ymax"}` in the original image\'s pixels, and '
            "the box drawn on its overlay. With `threshold=`, images of one batch may have different numbers of "
            'boxes: the shorter ones are padded with maps of box index -1 (`out.box_indices`), label "" and zeros.'
        )
    if entry.explain_size_argument:
        notes.append(
            f"`image_size={entry.image_size}` explains at {entry.image_size} x {entry.image_size} instead of the "
            f"native {entry.native_resolution} (position embeddings are interpolated), the setting of the LeGrad "
            "authors' demo: finer maps, and the scores are computed at that size too. Drop it for the native size."
        )
    elif entry.image_size is not None and entry.image_size_note:
        notes.append(
            f"The suggested size is the native {entry.image_size} x {entry.image_size}: {entry.image_size_note}."
        )
    if entry.dtype:
        notes.append(
            f"`dtype=torch.{entry.dtype}` halves the memory of this {_millions(entry.parameters_millions or 0)} "
            "parameter checkpoint; half-precision maps agree with float32 ones (the package's tests ask for a "
            "correlation of at least 0.99)."
        )
    return notes


def _cli_example(entry: CardModel) -> str:
    if entry.modality != "image":
        video = " --video" if entry.modality == "video" else ""
        command = f"legrad explain {EXAMPLE_INPUTS[entry.modality]}{video}"
        return " \\\n    ".join([command, f"--model {entry.model_id}", "--top-k 3", "--out legrad_maps/"])
    if entry.architecture.is_backbone:
        what = f"--reference {EXAMPLE_REFERENCE}"
    elif entry.architecture.is_dual_encoder or entry.architecture.is_detector:
        what = " ".join(f'--prompt "{prompt}"' for prompt in EXAMPLE_PROMPTS)
        if entry.architecture.is_detector:
            what += f" --threshold {EXAMPLE_THRESHOLD}"
    else:
        what = "--top-k 3"
    options = [f"--model {entry.model_id}", what]
    if entry.explain_size_argument:
        options.append(f"--image-size {entry.image_size}")
    if entry.dtype:
        options.append(f"--dtype {entry.dtype}")
    return " \\\n    ".join([f"legrad explain {EXAMPLE_IMAGE}", *options, "--out legrad_maps/"])


# --- python -m transformers_legrad.cards OUT_DIR -----------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m transformers_legrad.cards", description="Write the LeGrad model cards of CARD_MODELS."
    )
    parser.add_argument("out_dir", nargs="?", default="model_cards", help="folder to write (default: model_cards)")
    args = parser.parse_args(argv)
    for path in write_cards(args.out_dir):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
