"""The seam between the LeGrad engine and a model family.

An adapter is the one place that knows a family. What is declarative (its classes, tasks, display name, where its
blocks, attention projections, MLP output and prefix tokens live, and the prose of its card) is a `FamilySpec`,
the adapter's `spec`; what is computed (its readout) is methods. Everything the engine asks of a family is on
`FamilyAdapter`:

- `blocks` and `attention_projections(block)`: the vision blocks, and for each the modules whose output is the
  attention's values V and whose input is the attention context A @ V (heads concatenated).
- `prepare_pixels(...)`: validate model-ready pixel tensors and describe the patch grid they give.
- `image_features(...)`: the trunk forward, giving the final image readout (normalized embedding or logits).
- `layer_features(tokens, pixels)`: LeGrad's per-layer readout from one block's output tokens.
- `pooling_head_attention(tokens, pixels)`: for families whose score is explained through an attention-pooling
  head (SigLIP), that head recomputed by hand so its attention context is a differentiable handle.

A readout is a vector per image: the L2-normalized image embedding of a dual encoder, or the logits of a
classifier. Each prompt or class is a direction in that space (a text embedding, a one-hot row), so every family's
score is `<readout, direction>`.

Cards, export, the pipeline, the demo, the baselines and the CLI read family knowledge from the specs through
`adapters.registry`; none keeps a list of its own.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn


def execution_device(module: nn.Module, model: nn.Module) -> torch.device:
    """The device `module` computes on: its weights' device or, for weights that accelerate offloaded to CPU/disk
    (kept on `meta` until the module runs), the execution device of the accelerate hooks that load them."""
    weight = next(module.parameters(), None)
    if weight is not None and weight.device.type != "meta":
        return weight.device
    for candidate in (*module.modules(), *model.modules()):
        device = getattr(getattr(candidate, "_hf_hook", None), "execution_device", None)
        if device is not None:
            return torch.device(device)
    return torch.device("cpu")


ZERO_SHOT = "zero-shot-image-classification"
IMAGE_CLASSIFICATION = "image-classification"
FEATURE_EXTRACTION = "image-feature-extraction"
ZERO_SHOT_DETECTION = "zero-shot-object-detection"
VIDEO_CLASSIFICATION = "video-classification"
AUDIO_CLASSIFICATION = "audio-classification"
#: The transformers Auto class and processor class that load a checkpoint of each base task.
TASK_LOADERS: dict[str, tuple[str, str]] = {
    ZERO_SHOT: ("AutoModelForZeroShotImageClassification", "AutoProcessor"),
    IMAGE_CLASSIFICATION: ("AutoModelForImageClassification", "AutoImageProcessor"),
    ZERO_SHOT_DETECTION: ("AutoModelForZeroShotObjectDetection", "AutoProcessor"),
    VIDEO_CLASSIFICATION: ("AutoModelForVideoClassification", "AutoImageProcessor"),
    AUDIO_CLASSIFICATION: ("AutoModelForAudioClassification", "AutoFeatureExtractor"),
    FEATURE_EXTRACTION: ("AutoModel", "AutoImageProcessor"),  # last: AutoModel loads nearly any checkpoint
}
#: What a base task's model takes as input; every task not named here takes images.
TASK_MODALITIES: dict[str, str] = {VIDEO_CLASSIFICATION: "video", AUDIO_CLASSIFICATION: "audio"}


@dataclass(frozen=True)
class HubCheckpoint:
    """A published checkpoint of a family that gets a model card (`transformers_legrad.cards.CARD_MODELS`).

    Attributes:
        model_id: the Hub id.
        license: the base model's license identifier as published on the Hub.
        native_resolution: the square input size the model was trained at, in pixels; None if not fixed/known.
        patch_size: pixels per patch side; None if unknown.
        parameters_millions: approximate parameter count of the whole checkpoint (all towers), in millions.
        image_tower_parameters_millions: approximate parameters of the image tower (what LeGrad differentiates).
        image_size: suggested processed size to explain at (position embeddings are interpolated); None: native.
        dtype: suggested torch dtype to load with (e.g. "bfloat16" for the largest models); None: the default.
        image_size_note: why `image_size` is what it is, when that is not the usual "twice a 224 model's size".
        model_class: the class that loads it; None: the family's main class.
        family: the card's family tag; None: the family's own (a fixed-resolution SigLIP 2 checkpoint is a SigLIP
            model tagged "siglip2").
        input_grid: for an input that is not one square image (a video's tubelets, a spectrogram's patches), what
            the model takes and the token grid the maps lie on, in words; None: the patch grid of the image.
    """

    model_id: str
    license: str
    native_resolution: int | None
    patch_size: int | None
    parameters_millions: float | None = None
    image_tower_parameters_millions: float | None = None
    image_size: int | None = None
    dtype: str | None = None
    image_size_note: str | None = None
    model_class: str | None = None
    family: str | None = None
    input_grid: str | None = None


@dataclass(frozen=True)
class FamilySpec:
    """What the package knows about a model family, declared once (`FamilyAdapter.spec`).

    Attribute paths are dotted, like `model.get_submodule` takes them: `blocks` from the model, the others from one
    block.

    Attributes:
        name: the family's key and Hub tag ("clip", "vit"); several adapters may share one (DeiT with or without
            its teacher head).
        display_name: how prose names the family ("CLIP", "SigLIP 2").
        model_classes: the classes the adapter explains: names of transformers classes (matched in the class's
            MRO, for classes defined in `transformers`), or the classes themselves (any module, e.g. your own).
        base_task: the base model's pipeline task, `ZERO_SHOT` (prompts), `IMAGE_CLASSIFICATION` (classes) or
            `FEATURE_EXTRACTION` (backbones, explained along given directions).
        model_types: the `config.model_type`s of the family's checkpoints.
        pipeline_classes: the classes the task's Auto class loads, which the pipeline, cards and export serve;
            default: every name in `model_classes`.
        default_class: the class a checkpoint whose config names no architecture loads as (dual encoders have
            one; a classifier's head must be named); None: none.
        auto_model: the transformers Auto class that loads the family's checkpoints when it is not its base task's
            (`Aimv2Model` is in `AutoModel`'s mapping only, not the zero-shot one); None: the base task's.
        vision_config: path from the model to the vision tower's config ("config" or "vision_model.config").
        blocks: path from the model to the `nn.ModuleList` of vision blocks.
        attention: path from a block to its self-attention module (which returns (output, probabilities) under
            eager attention).
        value: path from a block to the module whose output is the attention values V (with `fused_qkv`: the
            fused projection whose output is [Q | K | V], heads concatenated in each third, as BLIP and timm split it).
        output: path from a block to the module whose input is the attention context A @ V (heads concatenated);
            where a norm sits between the context and the output projection (timm's `attn.norm`), that norm.
        fused_qkv: whether `value` is a fused Q/K/V projection whose last third is V.
        mlp_output: path from a block to its MLP's last per-token affine map.
        prefix_tokens: tokens before the patch tokens (CLS, distillation token).
        register_tokens: the vision config's attribute counting register tokens, which follow the prefix tokens
            and are never part of a map; None: the family has none.
        native_resolution: whether the config's `image_size` is the checkpoint's native input size (False for
            NaFlex models, which take any aspect ratio).
        score_definition: the card's sentence defining a prompt's or class's score at block l.
        scores_name: what `LeGradOutput.scores` holds for a dual encoder, as the card's example names it.
        reading_notes: the card's family-specific bullets under "How to read the maps".
        checkpoints: the family's Hub checkpoints that get a generated model card.
    """

    name: str
    display_name: str
    model_classes: tuple[str | type, ...]
    base_task: str
    model_types: tuple[str, ...] = ()
    pipeline_classes: tuple[str, ...] | None = None
    default_class: str | None = None
    auto_model: str | None = None
    vision_config: str = "config"
    blocks: str = "encoder.layers"
    attention: str = "attention"
    value: str = "attention.v_proj"
    output: str = "attention.o_proj"
    fused_qkv: bool = False
    mlp_output: str = "mlp.fc2"
    prefix_tokens: int = 1
    register_tokens: str | None = None
    native_resolution: bool = True
    score_definition: str = ""
    scores_name: str = "logits_per_image"
    reading_notes: tuple[str, ...] = ()
    checkpoints: tuple[HubCheckpoint, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"FamilySpec.name must be a non-empty string, got {self.name!r}.")
        if not self.model_classes or any(not isinstance(c, (str, type)) for c in self.model_classes):
            raise ValueError(
                f"FamilySpec {self.name!r}: `model_classes` must name at least one class (class names or classes), "
                f"got {self.model_classes!r}."
            )
        if self.base_task not in TASK_LOADERS:
            raise ValueError(
                f"FamilySpec {self.name!r}: `base_task` must be one of {', '.join(TASK_LOADERS)}, got "
                f"{self.base_task!r}."
            )
        if isinstance(self.prefix_tokens, bool) or not isinstance(self.prefix_tokens, int) or self.prefix_tokens < 0:
            raise ValueError(
                f"FamilySpec {self.name!r}: `prefix_tokens` must be an int >= 0, got {self.prefix_tokens!r}."
            )
        named = {"default_class": (self.default_class,) if self.default_class else ()}
        named["pipeline_classes"] = self.pipeline_classes or ()
        named["checkpoints' model_class"] = tuple(c.model_class for c in self.checkpoints if c.model_class)
        for field_name, class_names in named.items():
            for class_name in class_names:
                if class_name not in self.class_names:
                    raise ValueError(
                        f"FamilySpec {self.name!r}: `{field_name}` names {class_name!r}, which is not one of its "
                        f"`model_classes` ({', '.join(self.class_names)})."
                    )

    @property
    def class_names(self) -> tuple[str, ...]:
        """`model_classes` as names."""
        return tuple(c if isinstance(c, str) else c.__name__ for c in self.model_classes)

    @property
    def served_classes(self) -> tuple[str, ...]:
        """The classes the pipeline, cards and export serve (`pipeline_classes`, default every class)."""
        return self.pipeline_classes if self.pipeline_classes is not None else self.class_names

    @property
    def main_class(self) -> str:
        """The class that cards and examples name for the family: its first served class."""
        return self.served_classes[0]

    @property
    def auto_class(self) -> str:
        """The transformers Auto class that loads the family's checkpoints (its base task's, or `auto_model`)."""
        return self.auto_model or TASK_LOADERS[self.base_task][0]

    @property
    def processor_class(self) -> str:
        """The transformers Auto class of its processor (with a tokenizer for prompts, or images only)."""
        return TASK_LOADERS[self.base_task][1]

    @property
    def is_dual_encoder(self) -> bool:
        return self.base_task == ZERO_SHOT

    @property
    def is_backbone(self) -> bool:
        """A model with neither text tower nor classifier, explained along directions in its feature space."""
        return self.base_task == FEATURE_EXTRACTION

    @property
    def is_detector(self) -> bool:
        """An open-vocabulary detector: each text query is explained at the boxes it matches."""
        return self.base_task == ZERO_SHOT_DETECTION

    @property
    def modality(self) -> str:
        """What the family's models take: "image", "video" (frames) or "audio" (a waveform's spectrogram)."""
        return TASK_MODALITIES.get(self.base_task, "image")


@dataclass(frozen=True)
class TextLayout:
    """Where a dual encoder's text tower keeps what the engine hooks (paths like `FamilySpec`'s).

    Attributes:
        blocks: path from the model to the `nn.ModuleList` of text encoder layers.
        value: path from a text layer to the module whose output is the attention values V.
        output: path from a text layer to the module whose input is the attention context A @ V.
        causal: whether a token attends only to itself and the tokens before it (CLIP), or to all (SigLIP).
    """

    blocks: str
    value: str
    output: str
    causal: bool


@dataclass
class PixelInputs:
    """Model-ready image tensors and the patch grid they produce.

    Attributes:
        model_kwargs: keyword arguments for the vision trunk (`pixel_values`, and per family
            `interpolate_pos_encoding`, `pixel_attention_mask`, `spatial_shapes`).
        grid_shapes: the token grid of each input: (height, width) patches of an image, (time, height, width)
            tubelets of a video.
        image_sizes: the processed size of each input along the same axes: (height, width) pixels of an image,
            (frames, height, width) of a video.
        valid_tokens: bool [batch, tokens] of real (non-padding) tokens, or None when every token is real.
        prompts: the tokenized prompts, for a readout that reads them with the image tokens (an adapter whose
            `reads_prompts` is True, such as BLIP's image-text matching head); None otherwise.
        queries: detectors: the text queries' embeddings [queries, dim] that the readout scores each patch against
            (set by the explainer's request); None for other families.
        boxes: detectors: the model's predicted boxes [batch, patches, 4] (center x, center y, width, height,
            relative to the processed image), set by the adapter's `image_features`; None before it ran.
        patch_geometry: per token axis, (stride, patch size) in input units, when the adapter declares where its
            patches lie (`maps.heatmaps_from_grids` then places the map at the patch centres); None: the grid
            tiles the input, as an image's patches do.
    """

    model_kwargs: dict[str, object]
    grid_shapes: list[tuple[int, ...]]
    image_sizes: list[tuple[int, ...]]
    valid_tokens: torch.Tensor | None = None
    prompts: TextInputs | None = None
    queries: torch.Tensor | None = None
    boxes: torch.Tensor | None = None
    patch_geometry: tuple[tuple[int, int], ...] | None = None

    @property
    def batch_size(self) -> int:
        return len(self.grid_shapes)


@dataclass
class AttentionHandle:
    """A differentiable handle on one attention's probabilities, through the identity dS/dA_h = dS/dO_h @ V_h^T.

    Attributes:
        context: [batch, queries, heads * head_dim], the attention output A @ V with heads concatenated, a leaf
            that requires grad and feeds the rest of the readout.
        values: [batch, keys, heads * head_dim], the attention values V (no grad needed).
        num_heads: number of heads.
    """

    context: torch.Tensor
    values: torch.Tensor
    num_heads: int


@dataclass
class TextInputs:
    """Tokenized prompts for a dual encoder's text tower.

    Attributes:
        input_ids: long [prompts, tokens].
        attention_mask: [prompts, tokens], 1 on real tokens; None when the tokenizer gives none.
        extra: the tokenizer's other outputs a text tower may take (`token_type_ids`); an adapter whose tower
            takes them passes them on (Chinese CLIP's BERT), the others ignore them.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor | None = None
    extra: dict[str, torch.Tensor] = field(default_factory=dict)

    @classmethod
    def from_encoding(cls, encoded) -> TextInputs:
        """The prompts as a tokenizer returned them (`tokenizer(prompts, return_tensors="pt", ...)`)."""
        extra = {name: encoded[name] for name in ("token_type_ids",) if name in encoded}
        return cls(input_ids=encoded["input_ids"], attention_mask=encoded.get("attention_mask"), extra=extra)


class FamilyAdapter:
    """Base class of the per-family adapters; see the module docstring for the contract.

    A subclass declares its family in `spec` and writes its readout (`image_features`, `layer_features`, and for
    a pooling head `pooling_head_attention`); the structure (blocks, projections, prefix tokens) follows the spec.
    Constructing an adapter checks that the spec's paths exist on the model.

    Attributes:
        spec: the family's declaration (classes, tasks, module paths, prefix tokens, card prose).
        is_dual_encoder: True for image-text models (prompts), False for classifiers (targets).
        is_backbone: True for backbones (neither prompts nor classes: `directions` or `reference_images`).
        is_detector: True for open-vocabulary detectors (text queries explained at their boxes; `detections`).
        explains_pooling_head: True when LeGrad differentiates the pooling head's attention (SigLIP) instead of
            each block's self-attention.
        default_correction: True when SigLIP's null-prompt correction is on by default.
    """

    spec: ClassVar[FamilySpec]
    is_dual_encoder: ClassVar[bool] = False
    is_backbone: ClassVar[bool] = False
    is_detector: ClassVar[bool] = False
    explains_pooling_head: ClassVar[bool] = False
    default_correction: ClassVar[bool] = False

    def __init__(self, model: nn.Module, **options: object) -> None:
        # Options are the family's own (`LeGradExplainer(model, processor, **options)`); a subclass that takes some
        # consumes them in its `__init__`, so any left here are unknown.
        if options:
            known = ", ".join(self.option_names()) or "none"
            raise TypeError(
                f"{type(self).__name__} takes no option {', '.join(map(repr, sorted(options)))}; the explainer "
                f"passes its extra keywords to the adapter of {type(model).__name__}, whose options are: {known}."
            )
        self.model = model
        self.check_structure()

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        """The family's options: the keyword-only parameters of its adapter's `__init__` (BLIP's `use_itm_head`)."""
        parameters = inspect.signature(cls.__init__).parameters.values()
        return tuple(parameter.name for parameter in parameters if parameter.kind is inspect.Parameter.KEYWORD_ONLY)

    # --- structure -----------------------------------------------------------------------------------------
    def check_structure(self) -> None:
        """Raise a `TypeError` naming the path when the spec's modules are not where it says on this model."""
        spec, model_name = self.spec, type(self.model).__name__
        where = f"{type(self).__name__} (FamilySpec {spec.name!r})"
        _find(self.model, spec.vision_config, f"{where}: `vision_config`", model_name)
        blocks = _find(self.model, spec.blocks, f"{where}: `blocks`", model_name)
        if not isinstance(blocks, nn.ModuleList) or len(blocks) == 0:
            raise TypeError(
                f"{where}: `blocks` is {spec.blocks!r}, a {type(blocks).__name__} on {model_name}, not a non-empty "
                "nn.ModuleList of transformer blocks; point it at the encoder's list of layers."
            )
        # The MLP's output projection matters only to a token-mean readout (DINOv2's SwiGLU MLP has none).
        token_mean = self.readout_is_token_mean("legrad") or self.readout_is_token_mean("model")
        names = ("attention", "value", "output", *(("mlp_output",) if token_mean else ()))
        for index, block in enumerate(blocks):
            for name in names:
                module = _find(block, getattr(spec, name), f"{where}: `{name}` (block {index})", type(block).__name__)
                if not isinstance(module, nn.Module):
                    raise TypeError(
                        f"{where}: `{name}` is {getattr(spec, name)!r}, a {type(module).__name__} in block {index}, "
                        "not a module; the engine hooks modules."
                    )
            self._check_attention_width(block, index, where)

    def _check_attention_width(self, block: nn.Module, index: int, where: str) -> None:
        """V's width must be heads x head_dim and feed the output projection, or the per-head split is wrong."""
        value, output = block.get_submodule(self.spec.value), block.get_submodule(self.spec.output)
        width = getattr(value, "out_features", None)
        if width is None:
            return  # not a Linear: nothing to read the width from
        if self.spec.fused_qkv:
            if width % 3:
                raise TypeError(
                    f"{where}: block {index}'s fused projection `{self.spec.value}` gives {width} features, not three "
                    "equal parts [Q | K | V]; set `fused_qkv=False` for a separate V projection."
                )
            width //= 3
        width = self.value_width(width)
        heads = self.num_heads
        if width % heads or getattr(output, "in_features", width) != width:
            raise TypeError(
                f"{where}: block {index}'s value projection `{self.spec.value}` gives {width} features, which is not "
                f"{heads} heads x head_dim feeding the {getattr(output, 'in_features', '?')} inputs of "
                f"`{self.spec.output}`; point `value` at the attention's V projection and `output` at the "
                "projection that takes the attention context."
            )

    @property
    def vision_config(self):
        return _find(self.model, self.spec.vision_config, "vision_config", type(self.model).__name__)

    @property
    def blocks(self) -> nn.ModuleList:
        return self.model.get_submodule(self.spec.blocks)

    @property
    def num_prefix_tokens(self) -> int:
        """Tokens before the patch tokens: the spec's prefix tokens, plus the registers where the model has them."""
        registers = self.spec.register_tokens
        count = int(getattr(self.vision_config, registers, 0) or 0) if registers else 0
        return self.spec.prefix_tokens + count

    @property
    def patch_size(self) -> int:
        return int(self.vision_config.patch_size)

    @property
    def num_channels(self) -> int:
        return int(getattr(self.vision_config, "num_channels", 3))

    @property
    def num_heads(self) -> int:
        return int(self.vision_config.num_attention_heads)

    @property
    def input_device(self) -> torch.device:
        return execution_device(self.blocks[0], self.model)

    @property
    def input_dtype(self) -> torch.dtype:
        return self.blocks[0].parameters().__next__().dtype

    def attention_module(self, block: nn.Module) -> nn.Module:
        """One block's self-attention module (returns (output, probabilities) under eager attention)."""
        return block.get_submodule(self.spec.attention)

    def attention_projections(self, block: nn.Module) -> tuple[nn.Module, nn.Module, int]:
        """(value projection, output projection, number of heads) of one block's self-attention."""
        return block.get_submodule(self.spec.value), block.get_submodule(self.spec.output), self.num_heads

    def attention_values(self, block: nn.Module, projected: torch.Tensor) -> torch.Tensor:
        """V [batch, keys, heads * head_dim] from the output of `block`'s value projection (`spec.value`).

        The default takes the output as it is, or its last third for a fused Q/K/V projection (`spec.fused_qkv`).
        A family whose attention shares K/V heads between query heads (grouped-query attention) overrides this to
        repeat each K/V head for the query heads that read it, so that V has one head per query head.
        """
        if self.spec.fused_qkv:  # a copy: a view would keep Q and K alive with the recorded tail
            return projected[..., 2 * (projected.shape[-1] // 3) :].contiguous()
        return projected

    def attention_relevance_to_tokens(self, relevance: torch.Tensor, pixels: PixelInputs) -> torch.Tensor:
        """Lay the reduced relevance of the explained attention out as [batch, prompts, tokens] for `maps`.

        The default is the identity: one attention sequence per input, its keys the input's tokens in grid order
        after the prefix tokens. A family whose explained attention runs over several sequences per input (one per
        frame of a video) or whose tokens are in another order overrides this.

        Args:
            relevance: float32 [sequences, prompts, keys], `engine.reduce_attention_gradient`'s output, one row per
                sequence the explained attention ran over (the batch of its context and V).
            pixels: the inputs the trunk ran on.

        Returns:
            float32 [batch, prompts, prefix tokens + tokens of the grid], the grid's tokens row-major as
            `maps.tokens_to_grids` lays them out.
        """
        return relevance

    def value_width(self, projected_width: int) -> int:
        """The width of `attention_values` for a V of `projected_width` features (grouped-query attention widens it)."""
        return projected_width

    def readout_is_token_mean(self, score: str) -> bool:
        """True when `layer_features` reads the block output only through its mean over tokens (before any
        per-token nonlinearity); the engine then shortens the local backward through the MLP's last projection."""
        return False

    def mlp_output_projection(self, block: nn.Module) -> nn.Module:
        """The block MLP's last per-token affine map, whose output is added to the residual stream."""
        return block.get_submodule(self.spec.mlp_output)

    # --- inputs --------------------------------------------------------------------------------------------
    def prepare_pixels(self, pixel_values: torch.Tensor, **extra: torch.Tensor | None) -> PixelInputs:
        """Validate image tensors [batch, channels, height, width] and describe their patch grid."""
        if extra.get("pixel_attention_mask") is not None or extra.get("spatial_shapes") is not None:
            raise ValueError(
                f"{type(self.model).__name__} takes no `pixel_attention_mask`/`spatial_shapes`; pass only "
                "`pixel_values` [batch, channels, height, width]."
            )
        if not isinstance(pixel_values, torch.Tensor) or pixel_values.dim() != 4:
            shape = tuple(pixel_values.shape) if isinstance(pixel_values, torch.Tensor) else type(pixel_values)
            raise ValueError(
                f"`pixel_values` must be a tensor [batch, {self.num_channels}, height, width], got {shape}. "
                "Pass images through the processor, or add the batch dimension with `.unsqueeze(0)`."
            )
        batch, channels, height, width = pixel_values.shape
        if channels != self.num_channels:
            raise ValueError(
                f"`pixel_values` has {channels} channels but the model expects {self.num_channels} "
                f"(shape {tuple(pixel_values.shape)}); convert the images to RGB, or use the processor."
            )
        patch = self.patch_size
        if height < patch or width < patch:
            raise ValueError(
                f"`pixel_values` of {height}x{width} pixels is smaller than one {patch}x{patch} patch; "
                f"resize the images (e.g. `image_size=`) to at least {patch} pixels per side."
            )
        if batch == 0:
            raise ValueError("`pixel_values` holds no image (batch size 0).")
        model_kwargs: dict[str, object] = {"pixel_values": pixel_values}
        native = self.native_image_size
        if native is not None and (height, width) != native:
            model_kwargs["interpolate_pos_encoding"] = True
        grid = (height // patch, width // patch)
        return PixelInputs(model_kwargs, [grid] * batch, [(height, width)] * batch)

    def prepare_audio(self, audio, sampling_rate: int | None, feature_extractor) -> PixelInputs:
        """Audio families (`adapters.audio.AudioClassifierAdapter`): waveforms through the feature extractor."""
        raise TypeError(f"{type(self.model).__name__} takes {self.spec.modality} inputs, not audio.")

    def prepare_input_values(self, input_values: torch.Tensor, **timing) -> PixelInputs:
        """Audio families: model-ready spectrograms [batch, time frames, mel bins]."""
        raise TypeError(f"{type(self.model).__name__} takes {self.spec.modality} inputs, not spectrograms.")

    @property
    def native_image_size(self) -> tuple[int, int] | None:
        """The size the position embeddings were trained at; other sizes pass `interpolate_pos_encoding=True`."""
        size = getattr(self.vision_config, "image_size", None) if self.spec.native_resolution else None
        if size is None:
            return None
        if isinstance(size, (tuple, list)):
            return int(size[0]), int(size[1])
        return int(size), int(size)

    def processor_size_kwargs(self, image_processor, image_size: tuple[int, int]) -> dict[str, object]:
        """Keyword arguments that make `image_processor` output images of `image_size` (height, width)."""
        height, width = image_size
        size = getattr(image_processor, "size", None) or {}
        kwargs: dict[str, object] = {}
        if "shortest_edge" in size:
            kwargs["size"] = {"shortest_edge": min(height, width)}
        else:
            kwargs["size"] = {"height": height, "width": width}
        if getattr(image_processor, "do_center_crop", False):
            kwargs["crop_size"] = {"height": height, "width": width}
        return kwargs

    # --- forward pieces ------------------------------------------------------------------------------------
    def image_features(self, pixels: PixelInputs) -> torch.Tensor:
        """The model's own final readout [batch, features] (the trunk forward)."""
        raise NotImplementedError

    def layer_features(self, tokens: torch.Tensor, pixels: PixelInputs, score: str) -> torch.Tensor:
        """LeGrad's readout [batch, features] from one block's output tokens [batch, tokens, hidden]."""
        raise NotImplementedError

    def pooling_head_attention(
        self, tokens: torch.Tensor, pixels: PixelInputs, score: str
    ) -> tuple[torch.Tensor, AttentionHandle]:
        """(readout, handle on the pooling head's attention) for one block's output tokens."""
        raise NotImplementedError

    def final_scores(self, image_features: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
        """The model's own score [batch, prompts] from its final readout and the directions [batch, prompts, f]."""
        return torch.einsum("bf,bkf->bk", image_features.float(), directions.float())

    def probabilities(
        self, image_features: torch.Tensor, directions: torch.Tensor, scores: torch.Tensor
    ) -> torch.Tensor:
        """Scores as the model's own pipeline reports them (classifiers: `classification_activation` of the logits:
        the softmax over all classes, or each class's sigmoid for a multi-label checkpoint)."""
        logits = image_features.float()
        activation = classification_activation(self.model.config, self.spec.modality)
        activated = {"softmax": logits.softmax(dim=-1), "sigmoid": logits.sigmoid(), "none": logits}[activation]
        return torch.einsum("bc,bkc->bk", activated, directions.float())

    # --- prompts (dual encoders) ---------------------------------------------------------------------------
    @property
    def embedding_dim(self) -> int:
        raise NotImplementedError

    @property
    def has_text_tower(self) -> bool:
        return hasattr(self.model, "get_text_features")

    def text_features(self, text: TextInputs) -> torch.Tensor:
        """Prompt embeddings [prompts, dim] from the model's own text tower (not normalized)."""
        device = execution_device(self.model.text_model, self.model)
        attention_mask = None if text.attention_mask is None else text.attention_mask.to(device)
        output = self.model.get_text_features(input_ids=text.input_ids.to(device), attention_mask=attention_mask)
        return output.pooler_output

    def tokenizer_kwargs(self, tokenizer) -> dict[str, object]:
        """How this family's text tower expects prompts to be padded and truncated."""
        return {"padding": True, "truncation": True, "max_length": self.max_text_length(tokenizer)}

    def max_text_length(self, tokenizer) -> int:
        """Prompts are truncated to what both the tokenizer and the text tower's position embeddings allow."""
        tower = int(self.model.config.text_config.max_position_embeddings)
        return min(tower, int(getattr(tokenizer, "model_max_length", tower) or tower))

    @property
    def reads_prompts(self) -> bool:
        """Whether the readout reads the tokenized prompts itself, with the image tokens (BLIP's image-text matching
        head cross-attends them), instead of comparing one image embedding with text embeddings. For a dual encoder the
        explainer then tokenizes the prompts into `PixelInputs.prompts` and takes their directions from
        `prompt_directions` (detectors read their queries' embeddings from `PixelInputs.queries` instead)."""
        return False

    def prompt_directions(self, num_prompts: int) -> torch.Tensor:
        """float32 [prompts, features]: each prompt's direction in readout space when `reads_prompts` is True."""
        raise NotImplementedError(
            f"{type(self).__name__} compares image and text embeddings (`reads_prompts` is False)."
        )

    def prompt_chunk(self, pixels: PixelInputs, start: int, stop: int) -> tuple[PixelInputs, slice]:
        """When `reads_prompts` is True: the inputs holding only prompts `start:stop`, and the columns of the full
        readout (`prompt_directions`) that the readout of those inputs gives, in the same order. The engine builds
        each chunk's readout from this view, so one chunk's backward never goes through the other prompts."""
        raise NotImplementedError(
            f"{type(self).__name__} compares image and text embeddings (`reads_prompts` is False)."
        )

    # --- targets (classifiers) -----------------------------------------------------------------------------
    @property
    def num_labels(self) -> int:
        return int(self.model.config.num_labels)

    @property
    def id2label(self) -> dict[int, str]:
        return {int(k): str(v) for k, v in (self.model.config.id2label or {}).items()}


class DualEncoderAdapter(FamilyAdapter):
    """Image-text models whose vision tower is `model.vision_model` (CLIP, SigLIP): prompts, not classes.

    The text side (`explain(..., text_relevance=True)`) needs three more things of a family: `text_layout` (where
    its text layers and their V/O projections are, and whether attention is causal), `text_pooled_positions` (the
    position its text tower pools) and `text_readout` (that pooled token through its text head). A family that
    leaves `text_layout` None has no text side.
    """

    is_dual_encoder = True
    text_layout: ClassVar[TextLayout | None] = None

    def text_pooled_positions(self, input_ids: torch.Tensor) -> torch.Tensor:
        """long [prompts]: the position of each prompt the text tower pools (its EOS, first or last token)."""
        raise NotImplementedError(f"{type(self).__name__} declares no text side (`text_layout` is None).")

    def text_readout(self, pooled: torch.Tensor) -> torch.Tensor:
        """The text embedding [prompts, dim] (not normalized) of one text layer's pooled token [prompts, hidden]."""
        raise NotImplementedError(f"{type(self).__name__} declares no text side (`text_layout` is None).")

    def final_scores(self, image_features: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
        """`logits_per_image`: the cosine times the model's temperature, plus its bias where it has one."""
        scores = super().final_scores(image_features, directions)
        logit_scale = getattr(self.model, "logit_scale", None)
        if logit_scale is not None:  # CLIPVisionModelWithProjection has none: the cosine is its score
            scores = scores * logit_scale.detach().float().exp().to(scores.device)
        logit_bias = getattr(self.model, "logit_bias", None)
        if logit_bias is not None:
            scores = scores + logit_bias.detach().float().to(scores.device)
        return scores

    def probabilities(
        self, image_features: torch.Tensor, directions: torch.Tensor, scores: torch.Tensor
    ) -> torch.Tensor:
        """Softmax over the prompts, as the zero-shot-image-classification pipeline reports CLIP's scores."""
        return scores.softmax(dim=-1)


def classification_activation(config, modality: str) -> str:
    """ "softmax", "sigmoid" or "none": what transformers' image-, video- and audio-classification pipelines apply
    to a classifier's logits by default (their `function_to_apply` rule, read from `config.problem_type`).

    Regression: none; multi-label: sigmoid; otherwise softmax, except that `image-classification` also takes the
    sigmoid for a single label and, for a config that says neither, its `function_to_apply`.
    """
    problem, labels = getattr(config, "problem_type", None), getattr(config, "num_labels", 2)
    if problem == "regression":
        return "none"
    if problem == "multi_label_classification" or (modality == "image" and labels == 1):
        return "sigmoid"
    if modality != "image" or problem == "single_label_classification" or labels > 1:
        return "softmax"
    chosen = str(getattr(config, "function_to_apply", "none")).lower()
    return chosen if chosen in ("softmax", "sigmoid", "none") else "none"


def _find(root: nn.Module, path: str, what: str, owner: str):
    """`root`'s attribute at dotted `path`, or a TypeError saying which step is missing and what is there."""
    current = root
    for step in path.split("."):
        if not hasattr(current, step):
            children = [name for name, _ in current.named_children()] if isinstance(current, nn.Module) else []
            raise TypeError(
                f"{what} is {path!r}, but {owner} has no {step!r} there"
                + (f" (it has: {', '.join(children)})" if children else "")
                + ". Fix the path in the adapter's FamilySpec to match the model."
            )
        current = getattr(current, step)
    return current
