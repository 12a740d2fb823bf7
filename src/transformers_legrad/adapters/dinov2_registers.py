"""DINOv2 with registers as an image classifier (`Dinov2WithRegistersForImageClassification`).

The model is DINOv2's classifier with register tokens between the CLS token and the patch tokens: its head reads
`[CLS, mean of the patch tokens after the registers]` after the final layernorm. Registers are prefix tokens: they
are never part of a map and never enter the head's patch mean. LeGrad's readout is DINOv2's (the CLS feature
replaced by `layernorm(mean of ALL tokens)`, registers included, as every classifier's token mean is), so the
adapter is `Dinov2ClassifierAdapter` with this model's names and checkpoints.
"""

from __future__ import annotations

from dataclasses import replace

from .classifiers import Dinov2ClassifierAdapter
from .registry import register


@register
class Dinov2WithRegistersClassifierAdapter(Dinov2ClassifierAdapter):
    """`Dinov2WithRegistersForImageClassification`: `classifier(cat[CLS, mean of patch tokens])`, registers
    (`config.num_register_tokens`, after CLS) dropped from the patch mean and from the maps."""

    spec = replace(
        Dinov2ClassifierAdapter.spec,
        name="dinov2_with_registers",
        display_name="DINOv2 with registers",
        model_classes=("Dinov2WithRegistersForImageClassification",),
        model_types=("dinov2_with_registers",),
        blocks="dinov2_with_registers.encoder.layer",
        reading_notes=(
            *Dinov2ClassifierAdapter.spec.reading_notes,
            "- **Registers.** The register tokens are not image regions: they never appear in a map, and the "
            "head's mean of the patch tokens leaves them out, as the model's own head does.",
        ),
        checkpoints=(),
    )
