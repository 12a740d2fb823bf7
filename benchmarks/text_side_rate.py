"""How often the text side's largest relevance falls on a content word, for the bundled demo dual encoders.

    python benchmarks/text_side_rate.py --n 100

For each generated scene (`synthetic.generate(n, seed=20261126)`, the localization benchmark's scenes) every
object's caption ("a red circle") is explained with `text_relevance=True`. A prompt counts as a hit when its most
relevant token (over its real, non-padding positions, start and end tokens included) is a content word (the colour
or the shape), not "a" nor a special token; the chance rate is the content words' share of the real positions.
Prints one JSON line per model.
"""

from __future__ import annotations

import argparse
import json

from transformers_legrad import LeGradExplainer, demo
from transformers_legrad.evaluation import synthetic

SEED = 20261126
FUNCTION_WORDS = {"a"}


def rate(model_name: str, n: int, seed: int = SEED) -> dict[str, object]:
    """The content-word hit rate of one demo model over `n` scenes (see the module docstring)."""
    model, processor = demo.load(model_name)
    explainer = LeGradExplainer(model, processor)
    tokenizer = processor.tokenizer
    hits = prompts = content_positions = real_positions = 0
    for scene in synthetic.generate(n, seed=seed):
        out = explainer.explain(images=scene.image, text=scene.captions, text_relevance=True)
        encoded = tokenizer(scene.captions, return_tensors="pt", **explainer.adapter.tokenizer_kwargs(tokenizer))
        mask = encoded.get("attention_mask", encoded["input_ids"] * 0 + 1)
        for k in range(len(scene.captions)):
            relevance = out.text_relevance[0, k]
            tokens = out.text_tokens[k]
            real = [j for j in range(len(tokens)) if mask[k, j]]
            content = [j for j in real if not tokens[j].special and tokens[j].text.lower() not in FUNCTION_WORDS]
            top = max(real, key=lambda j: float(relevance[j]))
            hits += top in content
            prompts += 1
            content_positions += len(content)
            real_positions += len(real)
    return {
        "model": model_name,
        "scenes": n,
        "prompts": prompts,
        "content_word_rate": round(hits / prompts, 3),
        "chance": round(content_positions / real_positions, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100, help="scenes (default 100)")
    parser.add_argument("--models", nargs="+", default=["clip", "siglip"], help="demo models (default clip siglip)")
    args = parser.parse_args()
    for name in args.models:
        print(json.dumps(rate(name, args.n)))


if __name__ == "__main__":
    main()
