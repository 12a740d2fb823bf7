"""Audio spectrogram transformers: `ASTForAudioClassification`, explained on its (frequency, time) patch grid.

AST cuts a log-mel spectrogram into overlapping 16 x 16 patches (strides `frequency_stride` x `time_stride`), puts
a CLS and a distillation token before them, and classifies `classifier((layernorm(Z)[:, 0] + layernorm(Z)[:, 1])
/ 2)`, where `classifier` is `ASTMLPHead` (its own layernorm, then a dense layer). LeGrad's readout of block l
(`score="legrad"`) is the rule of every classifier here: the classifier on the model's final layernorm of the mean
over ALL tokens, `classifier(layernorm(mean Z))`; `score="model"` is the model's own pooling.

Orientation. The model takes `input_values` [batch, time frames, mel bins]; its patch tokens are ordered
frequency-major, so the maps are laid out [frequency patches, time patches] and the heatmaps [mel bins, time
frames]: row 0 is the lowest mel bin, column 0 the first frame (the transpose of `input_values`, the way a
spectrogram is drawn once flipped so that low frequencies are at the bottom). `LeGradOutput.image_sizes` holds
(mel bins, time frames) and `grid_shapes` (frequency patches, time patches). AST's patches overlap (16 wide, every
`frequency_stride` / `time_stride`) and do not reach the last `(mel bins - 16) % frequency_stride` bins and
`(frames - 16) % time_stride` frames, so the grid is not stretched over the spectrogram as an image's is: the
adapter declares the patches' geometry (`PixelInputs.patch_geometry`) and the heatmap is interpolated linearly
between the patch centres (patch i's at `stride * i + 7.5`), exact there, and held constant beyond the first and
last centre.

The feature extractor (`ASTFeatureExtractor`) makes one frame per hop and pads or truncates every clip to
`max_length` frames: a shorter clip's map covers its padding too (the model sees it), a longer clip is explained
on its first `max_length` frames (with a warning). Its hop and window are those of the path it takes: with
torchaudio, Kaldi's fbank, 10 ms and 25 ms at the extractor's rate (`int(rate * 0.010)`, `int(rate * 0.025)`
samples); without it, numpy's 160 and 400 samples at any rate (10 ms and 25 ms at its usual 16 kHz).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from transformers.utils import is_speech_available

from .base import AUDIO_CLASSIFICATION, FamilyAdapter, FamilySpec, HubCheckpoint, PixelInputs
from .classifiers import CLASSIFIER_NOTES, VIT_LAYOUT
from .registry import register

#: ASTFeatureExtractor's frame step and window in samples on its numpy path, at any rate (the extractor keeps
#: neither as an attribute); its torchaudio path uses Kaldi's 10 ms and 25 ms instead, the same at 16 kHz.
AST_HOP_SAMPLES = 160
AST_WINDOW_SAMPLES = 400
AST_SAMPLING_RATE = 16000
#: Kaldi's frame shift and length (`torchaudio.compliance.kaldi.fbank`'s defaults), in milliseconds.
KALDI_HOP_MS = 10.0
KALDI_WINDOW_MS = 25.0

AST_SCORE = (
    "A class's score at block l is the classifier's logit for that class computed from that block's output "
    "tokens: `s^l = classifier(layernorm(mean of all tokens))[class]`, where `classifier` is AST's MLP head (its "
    "layernorm and dense layer) and `layernorm` the model's final one; the mean takes the CLS and distillation "
    "tokens too (the recipe of the LeGrad paper transposed to a classification head)."
)
AST_NOTES = (
    CLASSIFIER_NOTES[0],
    "- **Scores.** The pipeline's `score` is what transformers' `audio-classification` pipeline reports: the "
    "softmax over all classes, or each class's own sigmoid when `config.problem_type` is "
    '`"multi_label_classification"` (AudioSet\'s labels are multi-label; which of the two this checkpoint gets is '
    "what its config says, `model.config.problem_type`, read when it loads); "
    "`LeGradExplainer` returns the class logits in `out.scores`.",
    "- **Orientation.** Maps are [mel bins, time frames], low frequencies in row 0; `out.relevance_over_time()` "
    "averages each heatmap over frequency, and `out.frame_times` gives each frame's time in seconds.",
    "- **Patch centres.** The patches overlap (16 wide, every 10): each patch's value is placed at its centre and "
    "the heatmap is linear between neighbouring centres, exact at the centres, not the patch grid stretched over "
    "the spectrogram.",
)


@dataclass
class AudioInputs(PixelInputs):
    """Model-ready spectrograms, their patch grid, and the time of each spectrogram frame.

    Attributes:
        hop_seconds: the time between two frames' starts.
        window_seconds: the length of one frame's window.
        clip_frames: per clip, the frames that hold its audio (the rest is the extractor's padding); None when the
            spectrograms were given as `input_values`.
    """

    hop_seconds: float = AST_HOP_SAMPLES / AST_SAMPLING_RATE
    window_seconds: float = AST_WINDOW_SAMPLES / AST_SAMPLING_RATE
    clip_frames: list[int] | None = None

    @property
    def frame_times(self) -> torch.Tensor:
        """float32 [time frames]: the centre of each frame's window, in seconds from the clip's start."""
        frames = self.image_sizes[0][1]
        return torch.arange(frames, dtype=torch.float32) * self.hop_seconds + self.window_seconds / 2


class AudioClassifierAdapter(FamilyAdapter):
    """Audio classifiers over spectrogram patches: the inputs side (`modality` "audio") shared by their adapters.

    A family declares `spectrogram_shape` (the (time frames, mel bins) its position embeddings fix) and
    `grid_shape` (its (frequency, time) patch grid); waveforms go through the model's feature extractor.
    """

    @property
    def spectrogram_shape(self) -> tuple[int, int]:
        """(time frames, mel bins) of the `input_values` the model takes."""
        raise NotImplementedError

    @property
    def grid_shape(self) -> tuple[int, int]:
        """(frequency patches, time patches) of the model's patch grid."""
        raise NotImplementedError

    @property
    def patch_geometry(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """((stride, patch) in mel bins, (stride, patch) in frames): where each patch lies in the spectrogram."""
        raise NotImplementedError

    def prepare_pixels(self, pixel_values: torch.Tensor, **extra: torch.Tensor | None) -> PixelInputs:
        raise ValueError(
            f"{type(self.model).__name__} classifies audio, not images: pass `audio=` (a 1-D waveform or a list of "
            "them) with `sampling_rate=`, or model-ready `input_values=` [batch, time frames, mel bins]."
        )

    def prepare_input_values(self, input_values: torch.Tensor, **timing) -> AudioInputs:
        """Validate spectrograms [batch, time frames, mel bins] and describe their patch grid.

        Args:
            input_values: the feature extractor's `input_values`.
            timing: `AudioInputs` fields (`hop_seconds`, `window_seconds`, `clip_frames`) when known.
        """
        frames, bins = self.spectrogram_shape
        if not isinstance(input_values, torch.Tensor) or input_values.dim() != 3:
            shape = tuple(input_values.shape) if isinstance(input_values, torch.Tensor) else type(input_values)
            raise ValueError(
                f"`input_values` must be a tensor [batch, {frames} time frames, {bins} mel bins], got {shape}. Pass "
                "waveforms as `audio=` (through the feature extractor), or add the batch dimension with "
                "`.unsqueeze(0)`."
            )
        if tuple(input_values.shape[1:]) != (frames, bins):
            raise ValueError(
                f"`input_values` has {tuple(input_values.shape[1:])} (time frames, mel bins) per clip, but "
                f"{type(self.model).__name__}'s position embeddings are fixed to ({frames}, {bins}) "
                "(`config.max_length`, `config.num_mel_bins`); use its own feature extractor, which pads or "
                "truncates every clip to that."
            )
        if input_values.shape[0] == 0:
            raise ValueError("`input_values` holds no clip (batch size 0).")
        if not input_values.is_floating_point() or not torch.isfinite(input_values).all():
            raise ValueError("`input_values` must be finite floating-point log-mel features.")
        batch = input_values.shape[0]
        model_kwargs: dict[str, object] = {"input_values": input_values}
        grids, sizes = [self.grid_shape] * batch, [(bins, frames)] * batch
        return AudioInputs(model_kwargs, grids, sizes, patch_geometry=self.patch_geometry, **timing)

    def prepare_audio(self, audio, sampling_rate: int | None, feature_extractor) -> AudioInputs:
        """Waveforms through the model's feature extractor, validated on the way.

        Args:
            audio: a 1-D waveform (numpy array, list of floats, torch tensor) or a list of them (mono).
            sampling_rate: the waveforms' sampling rate in Hz; must be the feature extractor's.
            feature_extractor: the model's feature extractor (`AutoFeatureExtractor.from_pretrained(...)`).

        Raises:
            ValueError: no feature extractor, a missing or wrong sampling rate, a waveform that is not 1-D, empty,
                shorter than one frame or not finite, or an extractor whose spectrogram the model does not take.
        """
        if feature_extractor is None:
            raise ValueError(
                "Raw audio needs the model's feature extractor: `LeGradExplainer(model, "
                "AutoFeatureExtractor.from_pretrained(model_id))`, or pass model-ready `input_values`."
            )
        expected = int(getattr(feature_extractor, "sampling_rate", AST_SAMPLING_RATE))
        if sampling_rate is None:
            raise ValueError(f"`audio` needs its `sampling_rate=`; the feature extractor expects {expected} Hz.")
        if isinstance(sampling_rate, bool) or not isinstance(sampling_rate, (int, np.integer)):
            raise TypeError(f"`sampling_rate` must be an int in Hz, got {sampling_rate!r}.")
        if int(sampling_rate) != expected:
            raise ValueError(
                f"the audio is sampled at {sampling_rate} Hz, but {type(self.model).__name__}'s feature extractor "
                f"expects {expected} Hz; resample it first (e.g. `torchaudio.functional.resample(waveform, "
                f"{sampling_rate}, {expected})` or `librosa.resample(y, orig_sr={sampling_rate}, "
                f"target_sr={expected})`)."
            )
        waveforms = _waveforms(audio)
        hop, window = _frame_samples(feature_extractor, expected)
        too_short = [i for i, wave in enumerate(waveforms) if wave.shape[0] < window]
        if too_short:
            raise ValueError(
                f"clip {too_short[0]} has {waveforms[too_short[0]].shape[0]} samples, fewer than one "
                f"{window}-sample frame ({1000 * window / expected:g} ms); give at least that much audio."
            )
        self._check_extractor(feature_extractor)
        frames = self.spectrogram_shape[0]
        clip_frames = [1 + (wave.shape[0] - window) // hop for wave in waveforms]
        if max(clip_frames) > frames:
            warnings.warn(
                f"{sum(n > frames for n in clip_frames)} clip(s) are longer than the model's {frames} frames "
                f"({frames * hop / expected:g} s); the feature extractor keeps their first {frames} frames, and the "
                "maps explain that part.",
                stacklevel=5,  # explain's caller (prepare_audio <- _audio_inputs <- prepare_request <- explain)
            )
        features = feature_extractor(waveforms, sampling_rate=expected, return_tensors="pt")["input_values"]
        return self.prepare_input_values(
            features,
            hop_seconds=hop / expected,
            window_seconds=window / expected,
            clip_frames=[min(n, frames) for n in clip_frames],
        )

    def _check_extractor(self, feature_extractor) -> None:
        frames, bins = self.spectrogram_shape
        given = (getattr(feature_extractor, "max_length", frames), getattr(feature_extractor, "num_mel_bins", bins))
        if tuple(given) != (frames, bins):
            raise ValueError(
                f"the feature extractor makes {given} (time frames, mel bins) spectrograms, but "
                f"{type(self.model).__name__} takes ({frames}, {bins}); load the extractor of the same checkpoint."
            )


def _waveforms(audio) -> list[np.ndarray]:
    """`audio` as a list of 1-D float32 waveforms, or a ValueError/TypeError saying what is wrong with it."""
    if isinstance(audio, (list, tuple)) and audio and not isinstance(audio[0], (int, float, np.number)):
        clips = list(audio)
    else:
        clips = [audio]
    waveforms = []
    for index, clip in enumerate(clips):
        if isinstance(clip, torch.Tensor):
            clip = clip.detach().cpu().float().numpy()
        try:
            wave = np.asarray(clip, dtype=np.float32)
        except (TypeError, ValueError):
            raise TypeError(
                f"`audio` clip {index} is a {type(clip).__name__}, not a waveform: give a 1-D numpy array, list of "
                "floats or torch tensor (or a list of them)."
            ) from None
        if wave.ndim != 1:
            raise ValueError(
                f"`audio` clip {index} has shape {wave.shape}, not a 1-D (mono) waveform: for several channels "
                "average them (`waveform.mean(axis=0)`), for several clips pass a list of 1-D waveforms."
            )
        if wave.shape[0] == 0:
            raise ValueError(f"`audio` clip {index} is empty.")
        if not np.isfinite(wave).all():
            raise ValueError(f"`audio` clip {index} contains NaN or inf samples.")
        waveforms.append(wave)
    return waveforms


def _frame_samples(feature_extractor, rate: int) -> tuple[int, int]:
    """(hop, window) of the extractor's frames in samples at `rate`.

    Its `hop_length`/`win_length` where it keeps them; else ASTFeatureExtractor's: Kaldi's 10 ms / 25 ms
    (truncated to whole samples, as `torchaudio.compliance.kaldi` does) when transformers will use torchaudio,
    numpy's fixed 160 / 400 samples otherwise.
    """
    hop = getattr(feature_extractor, "hop_length", None)
    window = getattr(feature_extractor, "win_length", None)
    if hop and window:
        return int(hop), int(window)
    if is_speech_available():
        return int(rate * KALDI_HOP_MS * 0.001), int(rate * KALDI_WINDOW_MS * 0.001)  # kaldi's own arithmetic
    return AST_HOP_SAMPLES, AST_WINDOW_SAMPLES


@register
class ASTAdapter(AudioClassifierAdapter):
    """`ASTForAudioClassification`: `classifier((layernorm(Z)[:, 0] + layernorm(Z)[:, 1]) / 2)`."""

    spec = FamilySpec(
        name="audio-spectrogram-transformer",
        display_name="AST",
        model_classes=("ASTForAudioClassification",),
        base_task=AUDIO_CLASSIFICATION,
        model_types=("audio-spectrogram-transformer",),
        blocks="audio_spectrogram_transformer.layers",
        **VIT_LAYOUT,
        prefix_tokens=2,
        native_resolution=False,
        score_definition=AST_SCORE,
        reading_notes=AST_NOTES,
        # The license is as recalled, not checked against the Hub here. The parameter count is computed from the
        # architecture on the meta device (ASTConfig defaults, which are this checkpoint's, 527 AudioSet classes).
        checkpoints=(
            HubCheckpoint(
                "MIT/ast-finetuned-audioset-10-10-0.4593",
                license="bsd-3-clause",
                native_resolution=None,
                patch_size=16,
                parameters_millions=86.6,
                input_grid=(
                    "1024 time frames (10.24 s) x 128 mel bins; 12 frequency x 101 time patches of 16 x 16, strides "
                    "10 x 10"
                ),
            ),
        ),
    )

    @property
    def backbone(self) -> torch.nn.Module:
        return self.model.audio_spectrogram_transformer

    @property
    def spectrogram_shape(self) -> tuple[int, int]:
        config = self.model.config
        return int(config.max_length), int(config.num_mel_bins)

    @property
    def grid_shape(self) -> tuple[int, int]:
        frequency, time = self.backbone.embeddings.get_shape(self.model.config)
        return int(frequency), int(time)

    @property
    def patch_geometry(self) -> tuple[tuple[int, int], tuple[int, int]]:
        config = self.model.config
        patch = int(config.patch_size)
        return (int(config.frequency_stride), patch), (int(config.time_stride), patch)

    def readout_is_token_mean(self, score: str) -> bool:
        return score == "legrad"

    def image_features(self, pixels: PixelInputs) -> torch.Tensor:
        return self.model(**pixels.model_kwargs).logits.float()

    def layer_features(self, tokens: torch.Tensor, pixels: PixelInputs, score: str) -> torch.Tensor:
        if score == "model":
            normalized = self.backbone.layernorm(tokens)
            pooled = (normalized[:, 0] + normalized[:, 1]) / 2
        else:
            pooled = self.backbone.layernorm(tokens.mean(dim=1))
        return self.model.classifier(pooled).float()
