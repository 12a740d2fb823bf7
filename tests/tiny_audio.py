"""A tiny random `ASTForAudioClassification` and synthetic waveforms, built offline.

Built like `tiny_models` (hidden 32, 3 layers, 4 heads, 5 labels, perturbed LayerNorm affines and biases,
round-tripped with its feature extractor through save_pretrained/from_pretrained). AST's 16 x 16 patches with
strides 10 on a 32 mel-bin x 96 frame spectrogram give a (2 frequency, 9 time) patch grid after the CLS and
distillation tokens; those two tokens and the position embeddings (zero at init) get random values, so a readout
that forgot one would not match the reference. The feature extractor has torchaudio's absence to itself: it makes
its log-mel frames with numpy (10 ms hop, 25 ms window at 16 kHz).
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import (
    ASTConfig,
    ASTFeatureExtractor,
    ASTForAudioClassification,
    AutoFeatureExtractor,
    AutoModelForAudioClassification,
)

from tiny_models import CLASSIFIER, Tiny, _build, _round_trip

__all__ = [
    "FRAMES",
    "MEL_BINS",
    "NUM_LAYERS",
    "SAMPLING_RATE",
    "ast_config",
    "make_ast",
    "noise",
    "samples_for_frames",
    "tone_burst",
]

SAMPLING_RATE = 16000
MEL_BINS = 32
FRAMES = 96
NUM_LAYERS = 3
#: The numpy path of ASTFeatureExtractor: 160-sample hop, 400-sample window.
HOP, WINDOW = 160, 400


def ast_config(**overrides) -> ASTConfig:
    """The tiny AST's config: CLASSIFIER's sizes and labels, AST's patches on a 32 x 96 spectrogram."""
    sizes = {k: v for k, v in CLASSIFIER.items() if k not in ("image_size", "patch_size", "num_hidden_layers")}
    return ASTConfig(
        **{
            **sizes,
            "num_hidden_layers": NUM_LAYERS,
            "patch_size": 16,
            "frequency_stride": 10,
            "time_stride": 10,
            "max_length": FRAMES,
            "num_mel_bins": MEL_BINS,
            **overrides,
        }
    )


@torch.no_grad()
def _randomize_tokens(model: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed + 2)
    embeddings = model.audio_spectrogram_transformer.embeddings
    for param in (embeddings.cls_token, embeddings.distillation_token, embeddings.position_embeddings):
        param.copy_(0.5 * torch.randn(param.shape, generator=gen))


def feature_extractor() -> ASTFeatureExtractor:
    return ASTFeatureExtractor(num_mel_bins=MEL_BINS, max_length=FRAMES, sampling_rate=SAMPLING_RATE)


def make_ast(seed: int = 0, **config) -> Tiny:
    """ASTForAudioClassification (CLS + distillation token, 5 labels) + its ASTFeatureExtractor (32 mel, 96 frames)."""
    model = _build(ASTForAudioClassification, ast_config(**config), seed)
    _randomize_tokens(model, seed)
    return _round_trip(
        model,
        feature_extractor(),
        "ast",
        auto_model=AutoModelForAudioClassification,
        auto_processor=AutoFeatureExtractor,
    )


def samples_for_frames(frames: int) -> int:
    """The waveform length in samples that gives exactly `frames` spectrogram frames."""
    return WINDOW + (frames - 1) * HOP


def noise(samples: int, seed: int, level: float = 0.1) -> np.ndarray:
    """Gaussian noise, float32 [samples]."""
    return (level * np.random.default_rng(seed).standard_normal(samples)).astype(np.float32)


def tone_burst(
    samples: int, start: float, duration: float, seed: int, frequency: float = 1000.0, level: float = 0.05
) -> np.ndarray:
    """A sine burst of `duration` seconds from `start` (seconds) in noise of std `level`, float32 [samples]."""
    t = np.arange(samples) / SAMPLING_RATE
    burst = ((t >= start) & (t < start + duration)) * np.sin(2 * np.pi * frequency * t)
    return (burst + noise(samples, seed, level)).astype(np.float32)


@torch.no_grad()
def make_tone_detector() -> ASTForAudioClassification:
    """A one-block AST with constructed weights whose "tone" logit grows with its patches' energy.

    Each patch embeds as `a u + c v` (u, v orthogonal zero-mean directions): a = the patch's mean log-mel value,
    c a constant, so the layernorm before attention keeps `a` as the angle of the token. Attention is uniform
    (zero Q, K); V reads the u component of the normalized token, the output projection writes it back along u;
    the MLP is zero. The classifier's "tone" row reads u. So d score / d A[i, j] is proportional to token j's
    normalized u component, an increasing function of the patch's energy: where a burst is louder than the noise,
    the known answer is its patches.
    """
    config = ast_config(
        num_hidden_layers=1,
        num_labels=2,
        id2label={0: "noise", 1: "tone"},
        label2id={"noise": 0, "tone": 1},
    )
    model = ASTForAudioClassification(config).eval()
    for param in model.parameters():
        param.zero_()
    for module in model.modules():
        if isinstance(module, torch.nn.LayerNorm):
            module.weight.fill_(1.0)
    hidden = config.hidden_size
    u, v = torch.zeros(hidden), torch.zeros(hidden)
    u[0], u[1], v[2], v[3] = 2**-0.5, -(2**-0.5), 2**-0.5, -(2**-0.5)
    embeddings = model.audio_spectrogram_transformer.embeddings
    patch = config.patch_size
    embeddings.patch_embeddings.projection.weight.copy_(u[:, None, None, None].expand(-1, 1, patch, patch) / patch**2)
    embeddings.patch_embeddings.projection.bias.copy_(v)
    embeddings.cls_token.copy_(v)
    embeddings.distillation_token.copy_(v)
    attention = model.audio_spectrogram_transformer.layers[0].attention
    attention.v_proj.weight[0] = u
    attention.o_proj.weight[:, 0] = u
    model.classifier.dense.weight[1] = 4 * u
    return model
