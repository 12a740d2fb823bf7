"""Peak CPU memory of explaining an OWLv2 detection at 960 px (3,600 patch tokens), in fresh processes.

    python benchmarks/owl_memory.py

Each configuration runs in its own fresh Python process (so one run's allocations do not raise another's peak):
it builds a random `Owlv2ForObjectDetection` from a config (960 px, patch 16: 60 x 60 patches + CLS = 3,601
tokens), makes a random [1, 3, 960, 960] input and random query embeddings, reads its peak resident set size
(`resource.getrusage(RUSAGE_SELF).ru_maxrss`), runs one `LeGradExplainer.explain` (default: each query's highest
box, so one map per query), and reads the peak again. The difference is what the explanation added at its peak.
For scale, the script prints the size of one query's full dS/dA (heads x tokens x tokens float32), which the engine
never holds: it reduces dS/dA in chunks of at most `engine.REDUCTION_CHUNK_ELEMENTS` values. Prints one JSON line
per configuration.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

CONFIGS = {
    # name: (hidden size, heads, blocks); the text tower is tiny in every configuration
    "tiny (hidden 32, 4 heads, 3 blocks)": (32, 4, 3),
    "base's 12 heads (hidden 96, 3 blocks)": (96, 12, 3),
}
IMAGE_SIZE, PATCH_SIZE = 960, 16


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def measure(hidden: int, heads: int, blocks: int, queries: int, layers: str | None) -> dict[str, object]:
    """Run one explanation in this process and return its memory figures (see the module docstring)."""
    import torch
    from transformers import Owlv2Config, Owlv2ForObjectDetection

    from transformers_legrad import LeGradExplainer, engine

    torch.manual_seed(0)
    text = dict(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=1, num_attention_heads=heads)
    vision = dict(
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=blocks,
        num_attention_heads=heads,
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
    )
    model = Owlv2ForObjectDetection(Owlv2Config(text_config=text, vision_config=vision, projection_dim=hidden)).eval()
    pixel_values = torch.randn(1, 3, IMAGE_SIZE, IMAGE_SIZE)
    embeds = torch.randn(queries, hidden)
    explainer = LeGradExplainer(model, layers="all" if layers == "all" else None)
    before = _peak_mib()
    if layers == "forward":  # the model's own image forward alone, for comparison
        with torch.no_grad():
            model.image_embedder(pixel_values)
        return {"config": f"hidden {hidden}, {heads} heads, {blocks} blocks", "forward_added_mib": _peak_mib() - before}
    out = explainer.explain(pixel_values=pixel_values, text_embeds=embeds)
    after = _peak_mib()
    tokens = (IMAGE_SIZE // PATCH_SIZE) ** 2 + 1
    return {
        "config": f"hidden {hidden}, {heads} heads, {blocks} blocks",
        "tokens": tokens,
        "queries": queries,
        "explained_layers": out.explained_layers,
        "peak_before_mib": round(before, 1),
        "peak_after_mib": round(after, 1),
        "explain_added_mib": round(after - before, 1),
        "full_dS_dA_per_query_mib": round(heads * tokens * tokens * 4 / 2**20, 1),
        "reduction_chunk_limit_mib": engine.REDUCTION_CHUNK_ELEMENTS * 4 // 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=5, metavar=("HIDDEN", "HEADS", "BLOCKS", "QUERIES", "LAYERS"))
    args = parser.parse_args()
    if args.child:
        hidden, heads, blocks, queries, layers = args.child
        print(json.dumps(measure(int(hidden), int(heads), int(blocks), int(queries), layers)))
        return
    for hidden, heads, blocks in CONFIGS.values():
        for queries, layers in ((1, "forward"), (1, "last-2"), (5, "last-2"), (1, "all")):
            command = [sys.executable, __file__, "--child", str(hidden), str(heads), str(blocks), str(queries), layers]
            result = subprocess.run(command, capture_output=True, text=True, check=True)
            print(result.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
