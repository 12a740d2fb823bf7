"""Train the bundled demo models of `transformers_legrad.demo` on synthetic scenes, on a CPU, deterministically.

    python scripts/train_demo_models.py                  # all three: clip, siglip, vit
    python scripts/train_demo_models.py --model clip     # one of them

Each model is trained from scratch on freshly generated scenes of `transformers_legrad.evaluation.synthetic`
(a new batch every step, from the step's own seed), then evaluated on held-out scenes of another seed:

- "clip" (`CLIPModel`, InfoNCE) and "siglip" (`SiglipModel`, sigmoid loss) learn to match a scene with the
  caption of ONE of its objects ("a red circle"). Other scenes of the batch that happen to hold the same object are
  positives too, not negatives. Held out: does each object's caption rank among the top m of all colour-shape
  captions, m the number of objects in the scene (caption recall@m); top-1 accuracy on single-object scenes.
- "vit" (`ViTForImageClassification`) names the largest object ("red circle") of scenes where it is at least
  `VIT_MARGIN` times larger than every other object. Held out: accuracy.

Then the maps are scored with `LeGradExplainer` (default settings) by the pointing game: the fraction of
(scene, object) queries whose heatmap maximum falls inside the queried object's visible mask, against the chance
rate of a uniformly random point (the mean mask area fraction).

Writes `src/transformers_legrad/demo/models/NAME/` (safetensors weights, config, processor, tokenizer, and
`training_metrics.json`) and, with `--cards DIR`, the model cards `DIR/demo-NAME.md`. Runs on 2 CPU threads; the
same command gives the same weights on the same machine and software versions.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import transformers  # noqa: E402
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers  # noqa: E402
from transformers import (  # noqa: E402
    CLIPConfig,
    CLIPImageProcessorPil,
    CLIPModel,
    CLIPProcessor,
    PreTrainedTokenizerFast,
    SiglipConfig,
    SiglipImageProcessorPil,
    SiglipModel,
    SiglipProcessor,
    ViTConfig,
    ViTForImageClassification,
    ViTImageProcessorPil,
)

from transformers_legrad import LeGradExplainer  # noqa: E402
from transformers_legrad.cards import card_metadata, render_model_card  # noqa: E402
from transformers_legrad.evaluation import metrics as evaluation_metrics  # noqa: E402
from transformers_legrad.evaluation import synthetic  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "src" / "transformers_legrad" / "demo" / "models"
NAMES = ("clip", "siglip", "vit")

IMAGE_SIZE = 64
PATCH_SIZE = 8
VISION = dict(
    hidden_size=128,
    intermediate_size=512,
    num_hidden_layers=4,
    num_attention_heads=4,
    image_size=IMAGE_SIZE,
    patch_size=PATCH_SIZE,
)
TEXT = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4)
TEXT_MAX_POSITIONS = 16
PROJECTION_DIM = 64
BOS, EOS, UNK = "<|startoftext|>", "<|endoftext|>", "<unk>"
#: Caption templates seen in training; evaluation and the demo use the first.
TEMPLATES = ("a {}", "a photo of a {}", "{}")
VIT_MARGIN = 1.5
DEMO_CARD_TEMPLATE = "demo_model_card_template.md"  # shipped next to transformers_legrad/cards.py
RETRIEVAL_POOL = 100  # caption -> image retrieval: the best of this many held-out scenes
SIGLIP_INITIAL_BIAS = -2.5

TRAIN_SEED_BASE = 1_000_000  # training batch of step s: generate(batch, seed=TRAIN_SEED_BASE * (model + 1) + s)
HELD_OUT_SEED = 20_240_404  # never a training seed
THREADS = 2


@dataclass
class Recipe:
    steps: int
    batch_size: int
    learning_rate: float
    warmup_steps: int
    weight_decay: float = 0.05
    token_label_weight: float = 1.0
    max_grad_norm: float | None = 1.0  # gradient norm clipping (None: off)
    initial_temperature: float = 10.0  # SigLIP's logit scale at the start (CLIP keeps transformers' 1/0.07)


RECIPES = {
    "clip": Recipe(steps=3000, batch_size=64, learning_rate=1e-3, warmup_steps=50),
    # SigLIP: with a temperature of 10 and clipped gradients it learned colours but hardly shapes (precision@1 0.45
    # after 2000 steps); a temperature of 30 and no clipping learned faster in 400-step trials.
    "siglip": Recipe(
        steps=3000, batch_size=64, learning_rate=1e-3, warmup_steps=50, max_grad_norm=None, initial_temperature=30.0
    ),
    "vit": Recipe(steps=4000, batch_size=64, learning_rate=1e-3, warmup_steps=50),
}


# --- tokenizer, models, processors ------------------------------------------------------------------------------
def caption_corpus() -> list[str]:
    return [template.format(label) for template in TEMPLATES for label in synthetic.LABELS] + ["a photo of a"]


def make_tokenizer() -> PreTrainedTokenizerFast:
    """A BPE tokenizer trained on the captions (bos 0, eos = pad 1, unk 2): every word is one token."""
    tk = Tokenizer(models.BPE(unk_token=UNK))
    tk.normalizer = normalizers.Lowercase()
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.decoder = decoders.BPEDecoder()
    trainer = trainers.BpeTrainer(
        vocab_size=128,
        special_tokens=[BOS, EOS, UNK],  # eos must not be 2: CLIP reads eos id 2 as "take the argmax id"
        initial_alphabet=list("abcdefghijklmnopqrstuvwxyz"),
        show_progress=False,
    )
    tk.train_from_iterator(caption_corpus(), trainer)
    bos, eos = tk.token_to_id(BOS), tk.token_to_id(EOS)
    tk.post_processor = processors.TemplateProcessing(single=f"{BOS} $A {EOS}", special_tokens=[(BOS, bos), (EOS, eos)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tk,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=EOS,
        unk_token=UNK,
        model_max_length=TEXT_MAX_POSITIONS,
    )


def text_config(tokenizer: PreTrainedTokenizerFast) -> dict:
    return dict(
        TEXT,
        vocab_size=len(tokenizer),
        max_position_embeddings=TEXT_MAX_POSITIONS,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def build(name: str, recipe: Recipe | None = None):
    """A fresh model and its processor."""
    square = {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    if name == "vit":
        labels = dict(enumerate(synthetic.LABELS))
        label2id = {label: i for i, label in labels.items()}
        config = ViTConfig(**VISION, num_labels=len(labels), id2label=labels, label2id=label2id)
        return ViTForImageClassification(config), ViTImageProcessorPil(size=square)
    tokenizer = make_tokenizer()
    if name == "clip":
        config = CLIPConfig(text_config=text_config(tokenizer), vision_config=VISION, projection_dim=PROJECTION_DIM)
        image_processor = CLIPImageProcessorPil(size={"shortest_edge": IMAGE_SIZE}, crop_size=square)
        return CLIPModel(config), CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)
    if name == "siglip":
        # The text head projects to the image embedding's width (SigLIP's image side has no projection).
        config = SiglipConfig(
            text_config=dict(text_config(tokenizer), projection_size=VISION["hidden_size"]), vision_config=VISION
        )
        model = SiglipModel(config)
        with torch.no_grad():
            # transformers initializes the scale and bias to 0 (temperature 1), from which a learning rate of 1e-3
            # barely moves them. SigLIP's paper starts at temperature 10 and a bias that matches the prior: -10 for
            # its 32k batches; here about 8% of the pairs of a batch are positive, hence -2.5. The recipe sets the
            # temperature.
            model.logit_scale.fill_(math.log(recipe.initial_temperature if recipe else 10.0))
            model.logit_bias.fill_(SIGLIP_INITIAL_BIAS)
        image_processor = SiglipImageProcessorPil(size=square)
        return model, SiglipProcessor(image_processor=image_processor, tokenizer=tokenizer)
    raise ValueError(f"unknown model {name!r}; known: {', '.join(NAMES)}")


# --- data -------------------------------------------------------------------------------------------------------
def pixel_values(images, processor) -> torch.Tensor:
    """[batch, 3, 64, 64]: what the processor gives for 64 x 64 images (no resize), computed in one tensor op."""
    image_processor = getattr(processor, "image_processor", processor)
    array = np.stack([np.asarray(image, dtype=np.uint8) for image in images])
    pixels = torch.from_numpy(array).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(image_processor.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(image_processor.image_std).view(1, 3, 1, 1)
    return (pixels - mean) / std


def vit_scenes(count: int, seed: int) -> tuple[list[synthetic.Scene], torch.Tensor]:
    """`count` scenes with a clear largest object, and that object's label ids."""
    rng = np.random.default_rng(seed)
    scenes, targets = [], []
    while len(scenes) < count:
        for scene in synthetic.generate(2 * count, seed=int(rng.integers(2**62))):
            largest = synthetic.largest_object(scene, VIT_MARGIN)
            if largest is not None and len(scenes) < count:
                scenes.append(scene)
                targets.append(synthetic.LABELS.index(largest.label))
    return scenes, torch.tensor(targets)


class TextBank:
    """Token ids of every training caption, tokenized as the explainer tokenizes prompts."""

    def __init__(self, processor, padding):
        self.captions = caption_corpus()
        self.index = {caption: i for i, caption in enumerate(self.captions)}
        encoded = processor.tokenizer(
            self.captions, padding=padding, max_length=TEXT_MAX_POSITIONS, truncation=True, return_tensors="pt"
        )
        self.input_ids, self.attention_mask = encoded["input_ids"], encoded["attention_mask"]

    def features(self, model, rows: torch.Tensor) -> torch.Tensor:
        out = model.get_text_features(input_ids=self.input_ids[rows], attention_mask=self.attention_mask[rows])
        return getattr(out, "pooler_output", out)


def image_features(model, pixels: torch.Tensor) -> torch.Tensor:
    out = model.get_image_features(pixel_values=pixels)
    return getattr(out, "pooler_output", out)


# --- training ---------------------------------------------------------------------------------------------------
def learning_rate(step: int, recipe: Recipe) -> float:
    if step < recipe.warmup_steps:
        return recipe.learning_rate * (step + 1) / recipe.warmup_steps
    progress = (step - recipe.warmup_steps) / max(1, recipe.steps - recipe.warmup_steps)
    return recipe.learning_rate * 0.5 * (1.0 + math.cos(math.pi * progress))


def vision_forward(model, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(image output, patch tokens [batch, 64, width] of the last block) in one vision forward.

    The image output is the model's own: its image embedding (CLIP, SigLIP) or its class logits (ViT).
    """
    if isinstance(model, ViTForImageClassification):
        tokens = model.vit(pixel_values=pixels).last_hidden_state
        return model.classifier(tokens[:, 0]), tokens[:, 1:]
    out = model.vision_model(pixel_values=pixels)
    if isinstance(model, CLIPModel):
        return model.visual_projection(out.pooler_output), out.last_hidden_state[:, 1:]
    return out.pooler_output, out.last_hidden_state  # SigLIP: no prefix token


class TokenLabeller(torch.nn.Module):
    """Training-only head: which object (or background) covers each patch, from the patch's token.

    Targets are soft: the fraction of the patch each object's visible mask covers, the rest background (LV-ViT's
    token labelling). The head is not saved; the model stays a plain transformers model.
    """

    def __init__(self, width: int):
        super().__init__()
        self.norm = torch.nn.LayerNorm(width)
        self.linear = torch.nn.Linear(width, len(synthetic.LABELS) + 1)

    def loss(self, tokens: torch.Tensor, scenes) -> torch.Tensor:
        targets = torch.from_numpy(np.stack([patch_coverage(scene) for scene in scenes]))
        return -(targets * self.linear(self.norm(tokens)).log_softmax(-1)).sum(-1).mean()


def patch_coverage(scene: synthetic.Scene) -> np.ndarray:
    """float32 [patches, 1 + labels]: per 8 x 8 patch, the background's and each label's share of its pixels."""
    grid = IMAGE_SIZE // PATCH_SIZE
    coverage = np.zeros((grid * grid, len(synthetic.LABELS) + 1), dtype=np.float32)
    for obj in scene.objects:
        share = obj.mask.reshape(grid, PATCH_SIZE, grid, PATCH_SIZE).mean(axis=(1, 3), dtype=np.float32)
        coverage[:, 1 + synthetic.LABELS.index(obj.label)] = share.reshape(-1)
    coverage[:, 0] = 1.0 - coverage[:, 1:].sum(axis=1)
    return coverage


def dual_encoder_loss(name: str, model, bank: TextBank, scenes, images: torch.Tensor, rng: np.random.Generator):
    """One (scene, caption of one of its objects) pair per scene; every scene holding a caption's object is a
    positive for it, not a negative."""
    labels = [scene.objects[int(rng.integers(len(scene.objects)))].label for scene in scenes]
    captions = [TEMPLATES[int(rng.integers(len(TEMPLATES)))].format(label) for label in labels]
    positives = torch.tensor([[label in scene.labels for label in labels] for scene in scenes]).float()
    texts = F.normalize(bank.features(model, torch.tensor([bank.index[caption] for caption in captions])), dim=-1)
    logits = F.normalize(images, dim=-1) @ texts.T * model.logit_scale.exp()
    if name == "clip":
        image_to_text = -(positives / positives.sum(1, keepdim=True) * logits.log_softmax(1)).sum(1).mean()
        text_to_image = -(positives / positives.sum(0, keepdim=True) * logits.log_softmax(0)).sum(0).mean()
        return (image_to_text + text_to_image) / 2
    signs = 2 * positives - 1
    return -F.logsigmoid(signs * (logits + model.logit_bias)).mean()  # mean over all pairs


def train(name: str, recipe: Recipe, seed: int, log_every: int = 100):
    torch.manual_seed(seed)
    model, processor = build(name, recipe)
    labeller = TokenLabeller(VISION["hidden_size"])
    model.train()
    named = [*model.named_parameters(), *labeller.named_parameters()]
    decay = [p for n, p in named if p.ndim >= 2 and "embed" not in n]
    rest = [p for n, p in named if not (p.ndim >= 2 and "embed" not in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": rest, "weight_decay": 0.0}],
        lr=recipe.learning_rate,
        betas=(0.9, 0.98),
    )
    bank = None if name == "vit" else TextBank(processor, padding="max_length" if name == "siglip" else True)
    model_index = NAMES.index(name)
    rng = np.random.default_rng(seed + model_index)
    started, cpu_started = time.perf_counter(), time.process_time()
    history = []
    for step in range(recipe.steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, recipe)
        step_seed = TRAIN_SEED_BASE * (model_index + 1) + step
        if name == "vit":
            scenes, targets = vit_scenes(recipe.batch_size, step_seed)
        else:
            scenes = synthetic.generate(recipe.batch_size, seed=step_seed)
        output, tokens = vision_forward(model, pixel_values([s.image for s in scenes], processor))
        if name == "vit":
            task_loss = F.cross_entropy(output, targets)
        else:
            task_loss = dual_encoder_loss(name, model, bank, scenes, output, rng)
        token_loss = labeller.loss(tokens, scenes)
        loss = task_loss + recipe.token_label_weight * token_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if recipe.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_([p for _, p in named], recipe.max_grad_norm)
        optimizer.step()
        if step % log_every == 0 or step == recipe.steps - 1:
            elapsed = time.perf_counter() - started
            history.append(
                {
                    "step": step,
                    "loss": round(task_loss.item(), 4),
                    "token_loss": round(token_loss.item(), 4),
                    "seconds": round(elapsed, 1),
                }
            )
            print(
                f"[{name}] step {step:5d}  loss {task_loss.item():.4f}  token {token_loss.item():.4f}  {elapsed:6.0f}s",
                flush=True,
            )
    times = {"training_seconds": time.perf_counter() - started, "cpu_seconds": time.process_time() - cpu_started}
    return model.eval(), processor, times, history


# --- evaluation -------------------------------------------------------------------------------------------------
@torch.no_grad()
def caption_scores(model, processor, scenes) -> torch.Tensor:
    """[scenes, labels] logits of every scene against "a <label>" for every label."""
    padding = "max_length" if isinstance(model, SiglipModel) else True
    prompts = [synthetic.caption(label) for label in synthetic.LABELS]
    encoded = processor.tokenizer(prompts, padding=padding, max_length=TEXT_MAX_POSITIONS, return_tensors="pt")
    out = model.get_text_features(**encoded)
    texts = F.normalize(getattr(out, "pooler_output", out), dim=-1)
    rows = []
    for start in range(0, len(scenes), 256):
        chunk = [s.image for s in scenes[start : start + 256]]
        rows.append(F.normalize(image_features(model, pixel_values(chunk, processor)), dim=-1) @ texts.T)
    return torch.cat(rows)


def retrieval_metrics(model, processor, scenes, pool: int = RETRIEVAL_POOL) -> dict:
    """Held-out retrieval, both ways.

    Image -> caption: caption recall@m over all objects of all scenes; precision@1 (the best caption names an object
    of the scene); top-1 accuracy on single-object scenes. Caption -> image: in consecutive pools of `pool` scenes,
    for every label some scene of the pool holds, is the best-scoring scene one that holds it?
    """
    scores = caption_scores(model, processor, scenes)
    found = total = single_hits = singles = precise = 0
    for scene, row in zip(scenes, scores, strict=True):
        top = {synthetic.LABELS[i] for i in row.topk(len(scene.objects)).indices.tolist()}
        found += sum(label in top for label in scene.labels)
        total += len(scene.objects)
        precise += synthetic.LABELS[int(row.argmax())] in scene.labels
        if len(scene.objects) == 1:
            singles += 1
            single_hits += scene.labels[0] in top
    retrieved = queries = 0
    for start in range(0, len(scenes) - pool + 1, pool):
        pool_scenes, pool_scores = scenes[start : start + pool], scores[start : start + pool]
        for j, label in enumerate(synthetic.LABELS):
            if any(label in scene.labels for scene in pool_scenes):
                queries += 1
                retrieved += label in pool_scenes[int(pool_scores[:, j].argmax())].labels
    return {
        "caption_recall_at_m": found / total,
        "precision_at_1": precise / len(scenes),
        "single_object_top1": single_hits / singles,
        "text_to_image_top1": retrieved / queries,
        "text_to_image_queries": queries,
        "text_to_image_pool": pool,
        "objects": total,
        "scenes": len(scenes),
        "single_object_scenes": singles,
    }


@torch.no_grad()
def vit_accuracy(model, processor, scenes, targets) -> dict:
    logits = torch.cat(
        [
            model(pixel_values=pixel_values([s.image for s in scenes[i : i + 256]], processor)).logits
            for i in range(0, len(scenes), 256)
        ]
    )
    return {"accuracy": float((logits.argmax(-1) == targets).float().mean()), "scenes": len(scenes)}


def pointing_game(model, processor, scenes, **explain_kwargs) -> dict:
    """Pointing game of LeGrad maps: per (scene, object) query, is the heatmap's maximum inside the object's mask?

    CLIP/SigLIP: each object of each scene is queried by its caption. ViT: each scene's largest object, by its
    class.
    """
    explainer = LeGradExplainer(model, processor)
    hits = queries = 0
    chance = 0.0
    for scene in scenes:
        if isinstance(model, ViTForImageClassification):
            target = synthetic.largest_object(scene, VIT_MARGIN)
            out = explainer.explain(images=scene.image, targets=[target.label], **explain_kwargs)
            objects = [target]
        else:
            out = explainer.explain(images=scene.image, text=scene.captions, **explain_kwargs)
            objects = scene.objects
        for k, obj in enumerate(objects):
            hits += evaluation_metrics.pointing_game(out.heatmaps[0, k].numpy(), obj.mask)
            chance += obj.mask.mean()
            queries += 1
    return {"hit_rate": hits / queries, "chance": chance / queries, "queries": queries, "scenes": len(scenes)}


def evaluate(name: str, model, processor, held_out: int, pointing_scenes: int) -> dict:
    if name == "vit":
        scenes, targets = vit_scenes(held_out, HELD_OUT_SEED)
        metrics = {"held_out": vit_accuracy(model, processor, scenes, targets)}
        pointing = scenes[:pointing_scenes]
        metrics["pointing_game"] = pointing_game(model, processor, pointing)
        multi = [s for s in scenes if len(s.objects) > 1][:pointing_scenes]
        metrics["pointing_game_multi_object"] = pointing_game(model, processor, multi)
    else:
        scenes = synthetic.generate(held_out, seed=HELD_OUT_SEED)
        metrics = {"held_out": retrieval_metrics(model, processor, scenes)}
        multi = [s for s in scenes if len(s.objects) > 1][:pointing_scenes]
        metrics["pointing_game_multi_object"] = pointing_game(model, processor, multi)
        if name == "siglip":
            metrics["pointing_game_multi_object_no_correction"] = pointing_game(
                model, processor, multi, correction=False
            )
    metrics["held_out_seed"] = HELD_OUT_SEED
    return metrics


# --- output -----------------------------------------------------------------------------------------------------
def save(name: str, model, processor, out_dir: Path, record: dict) -> Path:
    folder = out_dir / name
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    (folder / "training_metrics.json").write_text(json.dumps(record, indent=2) + "\n")
    for path in folder.iterdir():
        path.chmod(0o644)  # safetensors files are written owner-only; package data must be readable by all
    return folder


def folder_size(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=(*NAMES, "all"), default="all")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the model folders go")
    parser.add_argument("--cards", type=Path, default=None, help="also write model cards demo-NAME.md here")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None, help="override the recipe's number of steps")
    parser.add_argument("--batch-size", type=int, default=None, help="override the recipe's batch size")
    parser.add_argument("--learning-rate", type=float, default=None, help="override the recipe's learning rate")
    parser.add_argument("--token-label-weight", type=float, default=None, help="override the recipe's weight")
    parser.add_argument("--threads", type=int, default=THREADS, help="CPU threads (the weights depend on it)")
    parser.add_argument("--held-out", type=int, default=1000, help="held-out scenes for the accuracy")
    parser.add_argument("--pointing-scenes", type=int, default=200, help="held-out scenes for the pointing game")
    parser.add_argument(
        "--evaluate",
        action="store_true",
        help="do not train: evaluate the saved models in --out again and update their metrics (and --cards)",
    )
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    transformers.logging.set_verbosity_error()
    names = NAMES if args.model == "all" else (args.model,)
    if args.evaluate:
        return reevaluate(names, args)
    for name in names:
        recipe = RECIPES[name]
        overrides = {
            "steps": args.steps,
            "batch_size": args.batch_size,
            "learning_rate": args.learning_rate,
            "token_label_weight": args.token_label_weight,
        }
        recipe = Recipe(**{**recipe.__dict__, **{k: v for k, v in overrides.items() if v is not None}})
        model, processor, times, history = train(name, recipe, args.seed)
        metrics = evaluate(name, model, processor, args.held_out, args.pointing_scenes)
        record = {
            "model": name,
            "command": " ".join(["python", "scripts/train_demo_models.py", *sys.argv[1:]]),
            "seed": args.seed,
            "train_seed_base": TRAIN_SEED_BASE * (NAMES.index(name) + 1),
            "recipe": recipe.__dict__,
            "training_seconds": round(times["training_seconds"], 1),
            "cpu_seconds": round(times["cpu_seconds"], 1),
            "threads": args.threads,
            "parameters": sum(p.numel() for p in model.parameters()),
            "metrics": metrics,
            "history": history,
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
            "machine": platform.processor() or platform.machine(),
        }
        record["size_bytes"] = 0
        folder = save(name, model, processor, args.out, record)
        record["size_bytes"] = folder_size(folder)
        (folder / "training_metrics.json").write_text(json.dumps(record, indent=2) + "\n")
        print(json.dumps({k: record[k] for k in ("model", "training_seconds", "metrics")}, indent=2), flush=True)
        print(f"[{name}] wrote {folder} ({folder_size(folder) / 1e6:.2f} MB)", flush=True)
        if args.cards is not None:
            write_card(name, record, args.cards)
    return 0


def reevaluate(names, args) -> int:
    """Evaluate saved models again (e.g. after metrics were added) and update their `training_metrics.json`."""
    for name in names:
        folder = args.out / name
        record = json.loads((folder / "training_metrics.json").read_text())
        if name == "vit":
            model = ViTForImageClassification.from_pretrained(folder)
            processor = ViTImageProcessorPil.from_pretrained(folder)
        else:
            model_class, processor_class = (
                (CLIPModel, CLIPProcessor) if name == "clip" else (SiglipModel, SiglipProcessor)
            )
            model, processor = model_class.from_pretrained(folder), processor_class.from_pretrained(folder)
        record["metrics"] = evaluate(name, model.eval(), processor, args.held_out, args.pointing_scenes)
        record["evaluation_command"] = " ".join(["python", "scripts/train_demo_models.py", *sys.argv[1:]])
        (folder / "training_metrics.json").write_text(json.dumps(record, indent=2) + "\n")
        print(json.dumps({"model": name, "metrics": record["metrics"]}, indent=2), flush=True)
        if args.cards is not None:
            write_card(name, record, args.cards)
    return 0


CARD_INFO = {
    "clip": {
        "title": "CLIP",
        "class": "CLIPModel",
        "pipeline_tag": "zero-shot-image-classification",
        "task": 'matches a scene with the caption of one of its objects ("a red circle")',
        "loss": "symmetric InfoNCE (CLIP's contrastive loss) on (scene, caption of one of its objects) pairs; "
        "every scene of the batch that holds a caption's object counts as a positive for it",
    },
    "siglip": {
        "title": "SigLIP",
        "class": "SiglipModel",
        "pipeline_tag": "zero-shot-image-classification",
        "task": 'matches a scene with the caption of one of its objects ("a red circle")',
        "loss": "SigLIP's pairwise sigmoid loss on (scene, caption of one of its objects) pairs, averaged over all "
        "pairs of the batch; a pair is positive when the scene holds the caption's object; learnable temperature "
        f"and bias start at {{temperature:g}} and {SIGLIP_INITIAL_BIAS}",
    },
    "vit": {
        "title": "ViT",
        "class": "ViTForImageClassification",
        "pipeline_tag": "image-classification",
        "task": 'names the largest object of a scene ("red circle"), in scenes where it is at least '
        f"{VIT_MARGIN} times larger (visible area) than every other object",
        "loss": "cross-entropy on the largest object's label",
    },
}


def write_card(name: str, record: dict, cards_dir: Path) -> Path:
    """The model card `cards_dir/demo-NAME.md`, with the numbers of this training run."""
    info, metrics, recipe = dict(CARD_INFO[name]), record["metrics"], record["recipe"]
    info["loss"] = info["loss"].format(temperature=recipe.get("initial_temperature", 10.0))
    max_norm = recipe.get("max_grad_norm", 1.0)
    clipping = "no gradient clipping" if max_norm is None else f"gradient norm clipped at {max_norm:g}"
    held_out = metrics["held_out"]
    if name == "vit":
        accuracy_rows = f"| accuracy (largest object, {held_out['scenes']} scenes) | {held_out['accuracy']:.3f} |"
        pointing = metrics["pointing_game"]
        pointing_rows = [
            ("the largest object, by its class (all scenes)", pointing),
            ("the largest object, scenes with 2-4 objects", metrics["pointing_game_multi_object"]),
        ]
        load = "AutoModelForImageClassification"
        example = (
            "out = LeGradExplainer(model, processor).explain(images=scene.image)   # the top-1 class\n"
            "out.labels, out.heatmaps.shape   # ['red circle'], [1, 1, 64, 64]"
        )
    else:
        accuracy_rows = "\n".join(
            [
                f"| caption recall@m, all objects of {held_out['scenes']} scenes ({held_out['objects']} objects) | "
                f"{held_out['caption_recall_at_m']:.3f} |",
                f"| top-1 caption, {held_out['single_object_scenes']} single-object scenes | "
                f"{held_out['single_object_top1']:.3f} |",
                f"| precision@1: the best caption names an object of the scene, {held_out['scenes']} scenes | "
                f"{held_out['precision_at_1']:.3f} |",
                f"| caption -> image top-1 among {held_out['text_to_image_pool']} scenes "
                f"({held_out['text_to_image_queries']} queries) | {held_out['text_to_image_top1']:.3f} |",
            ]
        )
        pointing_rows = [
            ("each object of scenes with 2-4 objects, by its caption", metrics["pointing_game_multi_object"])
        ]
        if name == "siglip":
            pointing_rows.append(
                ("the same, without the null-prompt correction", metrics["pointing_game_multi_object_no_correction"])
            )
        load = "AutoModel"
        example = (
            "out = LeGradExplainer(model, processor).explain(images=scene.image, text=scene.captions)\n"
            "out.heatmaps.shape   # [1, objects, 64, 64]"
        )
    metadata = card_metadata(
        pipeline_tag=info["pipeline_tag"], license="apache-2.0", tags=["legrad", "explainability", "demo"]
    )
    text = render_model_card(
        metadata,
        DEMO_CARD_TEMPLATE,
        name=name,
        title=info["title"],
        model_class=info["class"],
        task=info["task"],
        loss=info["loss"],
        auto_class=load,
        example=example,
        vision_tower=_tower(VISION),
        text_row=_text_row(name),
        record=record,
        recipe=recipe,
        metrics=metrics,
        colours=synthetic.COLOURS,
        shapes=synthetic.SHAPES,
        labels=synthetic.LABELS,
        min_visible_fraction=synthetic.MIN_VISIBLE_FRACTION,
        captions=", ".join(f'"{template.format("red circle")}"' for template in TEMPLATES),
        clipping=clipping,
        accuracy_rows=accuracy_rows,
        metric_definition=_metric_definition(name),
        correction=", null-prompt correction on" if name == "siglip" else "",
        pointing_rows=pointing_rows,
    )
    cards_dir.mkdir(parents=True, exist_ok=True)
    path = cards_dir / f"demo-{name}.md"
    path.write_text(text)
    return path


def _tower(config: dict) -> str:
    return (
        f"{config['num_hidden_layers']} blocks, width {config['hidden_size']}, {config['num_attention_heads']} heads, "
        f"MLP {config['intermediate_size']}"
    )


def _text_row(name: str) -> str:
    if name == "vit":
        return f'| classes | {len(synthetic.LABELS)} (`id2label`: "red circle", ...) |\n'
    return (
        f"| text tower | {TEXT['num_hidden_layers']} blocks, width {TEXT['hidden_size']}, BPE tokenizer trained on the "
        "captions (every word one token) |\n"
    )


def _metric_definition(name: str) -> str:
    if name == "vit":
        return "Accuracy: the predicted class is the largest object's label."
    return (
        "Caption recall@m: each scene is scored against the captions of all "
        f'{len(synthetic.LABELS)} colour-shape labels ("a red circle", ...); an object is found when its caption '
        "is among the m best, m the number of objects in the scene. Top-1: the best caption of a single-object "
        "scene is its object's. Precision@1: the best caption of any scene names one of its objects. Caption -> "
        f"image: the held-out scenes are cut into pools of {RETRIEVAL_POOL}; for every label that some scene of a "
        "pool holds, the pool's best-scoring scene for that label's caption must hold it."
    )


if __name__ == "__main__":
    sys.exit(main())
