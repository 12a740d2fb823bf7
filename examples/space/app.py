"""LeGrad in the browser: a Gradio app, ready to push as a Hugging Face Space.

    python examples/space/app.py                 # http://127.0.0.1:7860, the bundled demo CLIP by default
    python examples/space/app.py --port 8000 --host 0.0.0.0

Upload an image (or pick an example scene), type one prompt per line, pick a model, and get one LeGrad overlay per
prompt with its score, and a zip of the maps (`maps.npz` and PNGs). For an image classifier, the lines name classes
to explain; left empty, the top-k classes are explained. The layer controls choose the explained blocks: the last
N (LeGrad sums their maps; the authors' default is 2) or one block alone.

The bundled demo models (tiny, trained on synthetic coloured shapes, 64 x 64 pixels) work offline; Hub models are
downloaded when first picked and kept loaded. Requests are queued, at most `CONCURRENCY` run at once, so a slow
request (a large model, a big image) makes the others wait their turn instead of starving them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import threading
import time
import uuid
import zipfile
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no calls home

import gradio as gr
import numpy as np
import torch
from PIL import Image
from transformers import pipeline

import transformers_legrad  # noqa: F401  (registers the "legrad-explanation" task)
from transformers_legrad import demo
from transformers_legrad.visualize import slug

DEMO_PREFIX = "demo:"
#: (shown name, value): bundled demo models first (offline), then Hub checkpoints, loaded when first picked.
MODEL_CHOICES: list[tuple[str, str]] = [
    ("Demo CLIP (bundled, offline)", f"{DEMO_PREFIX}clip"),
    ("Demo SigLIP (bundled, offline)", f"{DEMO_PREFIX}siglip"),
    ("Demo ViT classifier (bundled, offline)", f"{DEMO_PREFIX}vit"),
    ("openai/clip-vit-base-patch16", "openai/clip-vit-base-patch16"),
    ("openai/clip-vit-large-patch14", "openai/clip-vit-large-patch14"),
    ("google/siglip-base-patch16-224", "google/siglip-base-patch16-224"),
    ("google/siglip2-base-patch16-224", "google/siglip2-base-patch16-224"),
    ("google/vit-base-patch16-224", "google/vit-base-patch16-224"),
]
DEFAULT_MODEL = MODEL_CHOICES[0][1]
_MODEL_NAMES = {value: name for name, value in MODEL_CHOICES}
DEFAULT_LAYERS = 2
LAST_N, ONE_BLOCK = "the last N blocks", "block N alone"
CONCURRENCY = 2
MAX_PROMPTS = 16
NUM_EXAMPLES = 3
EXAMPLE_SIZE = 256
OUTPUT_MAX_AGE_S = 3600

_OUTPUT_DIR = Path(tempfile.gettempdir()) / "legrad-space"
_EXAMPLES_DIR = _OUTPUT_DIR / "examples"
_pipelines: dict[str, object] = {}
_loading_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


# --- models -------------------------------------------------------------------------------------------------------
def model_source(choice: str) -> str:
    """The Hub id or local folder of a dropdown value."""
    if choice.startswith(DEMO_PREFIX):
        return str(demo.model_path(choice[len(DEMO_PREFIX) :]))
    return choice


def get_pipeline(choice: str):
    """The `legrad-explanation` pipeline of a dropdown value, loaded once (one loader per model, the others go on)."""
    with _locks_guard:
        lock = _loading_locks.setdefault(choice, threading.Lock())
    with lock:
        if choice not in _pipelines:
            device = "cuda" if torch.cuda.is_available() else "cpu"
            try:
                _pipelines[choice] = pipeline("legrad-explanation", model=model_source(choice), device=device)
            except (OSError, ValueError) as error:
                raise gr.Error(
                    f"Could not load {choice}: {error}. Hub models need a network connection the first time; the "
                    "bundled demo models work offline.",
                ) from error
        return _pipelines[choice]


def explains_prompts(pipe) -> bool:
    """True for CLIP/SigLIP (text prompts), False for image classifiers (classes)."""
    return pipe.explainer.adapter.is_dual_encoder


# --- one request --------------------------------------------------------------------------------------------------
def parse_lines(text: str | None) -> list[str]:
    """Non-empty lines, stripped."""
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


def selected_layers(mode: str, count: float, num_blocks: int) -> list[int]:
    """The explained block indices for the layer controls: the last N blocks, or block N (counted from 1) alone."""
    count = max(1, min(int(count), num_blocks))
    return list(range(num_blocks - count, num_blocks)) if mode == LAST_N else [count - 1]


def explain(image, prompts_text, model_choice, top_k, layer_mode, layer_count):
    """Explain one image: (gallery of (overlay, caption), path of the maps' zip, a status line, shaded words)."""
    if image is None:
        raise gr.Error("Upload an image or pick one of the examples first.")
    started = time.perf_counter()
    pipe = get_pipeline(model_choice)
    lines = parse_lines(prompts_text)
    if len(lines) > MAX_PROMPTS:
        raise gr.Error(f"At most {MAX_PROMPTS} prompts at a time; you entered {len(lines)}.")
    if explains_prompts(pipe):
        if not lines:
            raise gr.Error("Enter at least one prompt, one per line (for example: a cat).")
        request = {"candidate_labels": lines, "text_relevance": True}
    else:
        request = {"targets": lines} if lines else {"top_k": int(top_k)}
    num_blocks = pipe.explainer.num_layers
    layers = selected_layers(layer_mode, layer_count, num_blocks)
    try:
        results = pipe(image, layers=layers, return_tensors=True, **request)
    except ValueError as error:  # the package's errors name the problem and the fix
        raise gr.Error(str(error)) from error
    gallery = [(result["overlay"], f"{result['label']} · {result['score']:.3f}") for result in results]
    archive = write_archive(results, layers, model_choice)
    first, last = layers[0] + 1, layers[-1] + 1  # counted from 1, as the "block N alone" slider counts
    blocks = f"blocks {first}-{last}" if len(layers) > 1 else f"block {first}"
    status = (
        f"{_MODEL_NAMES.get(model_choice, model_choice)}: {len(results)} map(s), {blocks} of {num_blocks} explained, "
        f"{time.perf_counter() - started:.1f} s."
    )
    return gallery, str(archive), status, shaded_words(results)


def shaded_words(results: list[dict]) -> list[tuple[str, float | None]]:
    """Each prompt's words shaded by their text-side relevance, for `gr.HighlightedText`: (text, shade in [0, 1])
    pairs, each prompt's words scaled by its most relevant word, each prompt after a header of its own (shade
    None); [] for classifiers."""
    shaded: list[tuple[str, float | None]] = []
    for rank, result in enumerate(r for r in results if "words" in r):
        words = result["words"]
        top = max((word["relevance"] for word in words), default=0.0)
        shaded.append(((" | " if rank else "") + f"{result['label']}: ", None))
        shaded.extend((word["word"] + " ", word["relevance"] / top if top > 0 else 0.0) for word in words)
    return shaded


def write_archive(results: list[dict], layers: list[int], model_choice: str) -> Path:
    """A zip with `maps.npz` (maps float32 [prompts, height, width] in [0, 1], labels, scores, explained blocks,
    model) and each prompt's overlay and heatmap PNG."""
    _prune_outputs()
    folder = _OUTPUT_DIR / uuid.uuid4().hex
    folder.mkdir(parents=True)
    path = folder / "legrad_maps.zip"
    maps = np.stack([np.asarray(result["map"], dtype=np.float32) for result in results])
    npz = folder / "maps.npz"
    np.savez_compressed(
        npz,
        maps=maps,
        labels=np.array([result["label"] for result in results]),
        scores=np.array([result["score"] for result in results], dtype=np.float32),
        layers=np.array(layers),
        model=np.array(model_choice),
    )
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.write(npz, "maps.npz")
        for index, result in enumerate(results):
            stem = f"{index}_{slug(result['label'])}"
            for kind in ("overlay", "heatmap"):
                png = folder / f"{stem}_{kind}.png"
                result[kind].save(png)
                archive.write(png, png.name)
    return path


def _prune_outputs() -> None:
    """Remove the zips of earlier requests older than an hour (Gradio keeps its own copy of what it served).

    The example scenes' folder stays; two requests pruning at once may both reach a folder, hence ignore_errors.
    """
    if not _OUTPUT_DIR.is_dir():
        return
    cutoff = time.time() - OUTPUT_MAX_AGE_S
    for folder in _OUTPUT_DIR.iterdir():
        try:
            old = folder.is_dir() and folder != _EXAMPLES_DIR and folder.stat().st_mtime < cutoff
        except FileNotFoundError:
            continue
        if old:
            shutil.rmtree(folder, ignore_errors=True)


# --- the page -----------------------------------------------------------------------------------------------------
def model_changed(choice: str, layer_count: float):
    """Fit the controls to the picked model: its number of blocks, prompts or classes."""
    pipe = get_pipeline(choice)
    num_blocks = pipe.explainer.num_layers
    layer_slider = gr.update(maximum=num_blocks, value=min(int(layer_count), num_blocks))
    if explains_prompts(pipe):
        return layer_slider, gr.update(label="Prompts, one per line"), gr.update(visible=False)
    prompts = gr.update(label="Classes to explain, one per line (empty: the top-k classes)")
    return layer_slider, prompts, gr.update(visible=True)


def example_images() -> list[list[str]]:
    """The bundled example scenes as PNG files (enlarged 4x), each with its objects and an absent one as prompts."""
    folder = _EXAMPLES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for index, example in enumerate(demo.example_scenes(NUM_EXAMPLES)):
        path = folder / f"scene{index}.png"
        example.image.resize((EXAMPLE_SIZE, EXAMPLE_SIZE), Image.Resampling.NEAREST).save(path)
        rows.append([str(path), "\n".join([*example.prompts, example.absent_prompt])])
    return rows


def build_app() -> gr.Blocks:
    examples = example_images()
    num_blocks = get_pipeline(DEFAULT_MODEL).explainer.num_layers
    with gr.Blocks(title="LeGrad explanations", delete_cache=(600, OUTPUT_MAX_AGE_S)) as app:
        gr.Markdown(
            "# LeGrad: where does the model see it?\n"
            "One map per prompt, from the gradients of the model's score with respect to its attention "
            "([paper](https://arxiv.org/abs/2404.03214)). The bundled demo models know coloured shapes "
            '("a red circle", "a blue ring"); pick a Hub model for photos.'
        )
        with gr.Row():
            with gr.Column():
                image = gr.Image(type="pil", label="Image", elem_id="image", height=320)
                prompts = gr.Textbox(
                    label="Prompts, one per line", lines=4, placeholder="a red circle\na blue ring", elem_id="prompts"
                )
                model = gr.Dropdown(MODEL_CHOICES, value=DEFAULT_MODEL, label="Model", elem_id="model")
                top_k = gr.Slider(1, 10, value=3, step=1, label="Top-k classes", visible=False, elem_id="top-k")
                with gr.Row():
                    layer_mode = gr.Radio([LAST_N, ONE_BLOCK], value=LAST_N, label="Explain", elem_id="layer-mode")
                    layer_count = gr.Slider(
                        1, num_blocks, value=min(DEFAULT_LAYERS, num_blocks), step=1, label="N", elem_id="layers"
                    )
                submit = gr.Button("Explain", variant="primary", elem_id="submit")
                gr.Examples(examples, inputs=[image, prompts], label="Example scenes")
            with gr.Column():
                gallery = gr.Gallery(
                    label="LeGrad maps (prompt · score)", columns=2, format="png", elem_id="gallery", height=420
                )
                words = gr.HighlightedText(
                    label="Which words matched (text-side LeGrad, darker: more relevant)",
                    elem_id="words",
                    combine_adjacent=False,
                    show_legend=False,
                )
                status = gr.Markdown(elem_id="status")
                download = gr.File(label="Maps (maps.npz and PNGs)", elem_id="download")
        inputs = [image, prompts, model, top_k, layer_mode, layer_count]
        submit.click(explain, inputs, [gallery, download, status, words])
        prompts.submit(explain, inputs, [gallery, download, status, words])
        model.change(model_changed, [model, layer_count], [layer_count, prompts, top_k])
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the LeGrad Gradio app.")
    parser.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1; Spaces: 0.0.0.0)")
    parser.add_argument("--port", type=int, default=None, help="port (default 7860, or $GRADIO_SERVER_PORT)")
    args = parser.parse_args(argv)
    app = build_app()
    app.queue(default_concurrency_limit=CONCURRENCY, max_size=64)
    # System fonts: the page needs nothing from the network.
    theme = gr.themes.Default(
        font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
    )
    app.launch(server_name=args.host, server_port=args.port, theme=theme, allowed_paths=[str(_OUTPUT_DIR)])


if __name__ == "__main__":
    main()
