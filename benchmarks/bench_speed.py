"""Speed and peak memory of `LeGradExplainer.explain` beside the straightforward way (issue 8).

For each configuration (model, image size, prompts K, batch, dtype, explained layers) four things are timed side by
side in one run, round-robin so that background load hits them alike:

- `ours`: `LeGradExplainer.explain` (one trunk forward without gradients, small local graphs per explained block);
- `straightforward`: LeGrad the way the authors' code computes it, written out below: the image repeated once per
  prompt, eager attention with the probabilities captured through `output_attentions`, the full autograd graph,
  and one `torch.autograd.grad(..., create_graph=True)` per explained layer;
- `forward`: the model's own image forward under `torch.no_grad()` (F of the floor below);
- `forward_backward`: the model's own forward with gradients plus a backward of its scores.

Latency is the median over `--repeats` timed runs after `--warmup` runs, synchronized on CUDA. Peak memory is
measured in a separate run per method: on CUDA `torch.cuda.max_memory_allocated` above what was allocated before
the call (weights and inputs excluded); on CPU the peak resident set size above the one before the call, sampled
every millisecond by a thread (after `malloc_trim`, so memory freed earlier does not hide new allocations).

The floor is one trunk forward plus, per explained block and prompt, a local backward of about 0.42 of that block's
forward: `floor = F * (1 + 0.42 * K * L_explained / L)`.

The straightforward maps are checked against ours (max abs difference after per-map min-max), so both compute the
same thing. Models are random-init from configs of the real architectures (no download). SigLIP runs with its
null-prompt correction off in both implementations, and every model gets its prompts as random `text_embeds` (the
text tower is not timed; SigLIP's is cut to one layer for that reason).

    python benchmarks/bench_speed.py --smoke --json /tmp/smoke.json
    python benchmarks/bench_speed.py --models clip-b16 --prompts 1 8 --layers last2 all --json cpu.json
    python benchmarks/bench_speed.py --device cuda --dtype bf16 --models clip-l14 clip-bigg14 --image-sizes 448
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import gc
import json
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from transformers import (
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
    SiglipConfig,
    SiglipModel,
    ViTConfig,
    ViTForImageClassification,
)

from transformers_legrad import LeGradExplainer, engine

BACKWARD_FRACTION = 0.42  # local backward of one block per prompt, as a fraction of that block's forward
METHODS = ("ours", "straightforward", "forward", "forward_backward")
# Not run by default: ours with no memory for recorded block tails, so every explained block is recomputed from its
# input (the engine's fallback past its budget, and how it worked before tails were recorded).
EXTRA_METHODS = ("ours_recomputed",)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# Max abs difference between min-max normalized maps of ours and the straightforward way; half precision rounds
# differently in the two (SDPA vs eager attention, local vs full graph), so it gets a looser bound.
MAP_TOLERANCE = {torch.float32: 1e-3, torch.bfloat16: 0.1, torch.float16: 0.05}
MIN_MAP_CORRELATION = {torch.float32: 0.9999, torch.bfloat16: 0.98, torch.float16: 0.99}

# The real architectures (vision towers as released; layer counts, widths, heads, patch and native image sizes).
_LAION_TEXT = "laion CLIP"
MODELS: dict[str, dict] = {
    "clip-b16": dict(family="clip", hidden=768, mlp=3072, layers=12, heads=12, patch=16, native=224, proj=512,
                     act="quick_gelu"),
    "clip-l14": dict(family="clip", hidden=1024, mlp=4096, layers=24, heads=16, patch=14, native=224, proj=768,
                     act="quick_gelu"),
    "clip-h14": dict(family="clip", hidden=1280, mlp=5120, layers=32, heads=16, patch=14, native=224, proj=1024,
                     act="gelu"),
    "clip-bigg14": dict(family="clip", hidden=1664, mlp=8192, layers=48, heads=16, patch=14, native=224, proj=1280,
                        act="gelu"),
    "siglip-so400m14": dict(family="siglip", hidden=1152, mlp=4304, layers=27, heads=16, patch=14, native=384,
                            act="gelu_pytorch_tanh"),
    "vit-b16": dict(family="vit", hidden=768, mlp=3072, layers=12, heads=12, patch=16, native=224, labels=1000,
                    act="gelu"),
}  # fmt: skip
SMOKE_MODELS: dict[str, dict] = {
    "smoke-clip": dict(family="clip", hidden=64, mlp=128, layers=3, heads=4, patch=8, native=32, proj=32,
                       act="quick_gelu"),
    "smoke-siglip": dict(family="siglip", hidden=64, mlp=128, layers=3, heads=4, patch=8, native=32,
                         act="gelu_pytorch_tanh"),
    "smoke-vit": dict(family="vit", hidden=64, mlp=128, layers=3, heads=4, patch=8, native=32, labels=10,
                      act="gelu"),
}  # fmt: skip
PREFIX_TOKENS = {"clip": 1, "siglip": 0, "vit": 1}


# --------------------------------------------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------------------------------------------


def build_model(spec: dict, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """A random-init model of the architecture in `spec`, in eval mode on `device` in `dtype`."""
    vision = dict(
        hidden_size=spec["hidden"],
        intermediate_size=spec["mlp"],
        num_hidden_layers=spec["layers"],
        num_attention_heads=spec["heads"],
        patch_size=spec["patch"],
        image_size=spec["native"],
        hidden_act=spec["act"],
    )
    torch.manual_seed(0)
    with torch.device(device):
        if spec["family"] == "clip":
            model = CLIPVisionModelWithProjection(CLIPVisionConfig(**vision, projection_dim=spec["proj"]))
        elif spec["family"] == "siglip":
            # The text tower is never run (prompts come as text_embeds): one layer keeps the model small.
            text = dict(
                hidden_size=spec["hidden"],
                intermediate_size=spec["mlp"],
                num_hidden_layers=1,
                num_attention_heads=spec["heads"],
                vocab_size=1000,
                max_position_embeddings=64,
                bos_token_id=1,
                eos_token_id=2,
                pad_token_id=0,
            )
            model = SiglipModel(SiglipConfig(vision_config=vision, text_config=text))
        else:
            model = ViTForImageClassification(ViTConfig(**vision, num_labels=spec["labels"]))
    return model.to(dtype).eval()


def embedding_dim(model: torch.nn.Module, spec: dict) -> int:
    return spec["proj"] if spec["family"] == "clip" else spec["hidden"]


def vision_trunk(model: torch.nn.Module, spec: dict) -> torch.nn.Module:
    return model.vit if spec["family"] == "vit" else model.vision_model


def image_readout(model: torch.nn.Module, spec: dict, pixel_values: torch.Tensor, interpolate: bool) -> torch.Tensor:
    """The model's own final image readout (normalized embedding, or logits)."""
    if spec["family"] == "clip":
        return F.normalize(model(pixel_values=pixel_values, interpolate_pos_encoding=interpolate).image_embeds, dim=-1)
    if spec["family"] == "siglip":
        output = model.get_image_features(pixel_values=pixel_values, interpolate_pos_encoding=interpolate)
        return F.normalize(output.pooler_output, dim=-1)
    return model(pixel_values=pixel_values, interpolate_pos_encoding=interpolate).logits


# --------------------------------------------------------------------------------------------------------------
# the straightforward way (authors' style)
# --------------------------------------------------------------------------------------------------------------


@contextmanager
def eager_attention(model: torch.nn.Module):
    """Switch to eager attention (the only one that returns probabilities), and back."""
    previous = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(previous)


def siglip_head_by_hand(head: torch.nn.Module, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SigLIP's attention-pooling head with its probabilities in the graph: (pooled [B, D], probs [B, H, 1, N])."""
    attention = head.attention
    batch, num_tokens, dim = tokens.shape
    heads = attention.num_heads
    head_dim = dim // heads
    w_q, w_k, w_v = attention.in_proj_weight.chunk(3)
    b_q, b_k, b_v = attention.in_proj_bias.chunk(3)
    query = F.linear(head.probe.expand(batch, -1, -1), w_q, b_q).view(batch, 1, heads, head_dim).transpose(1, 2)
    key = F.linear(tokens, w_k, b_k).view(batch, num_tokens, heads, head_dim).transpose(1, 2)
    value = F.linear(tokens, w_v, b_v).view(batch, num_tokens, heads, head_dim).transpose(1, 2)
    probs = ((query @ key.transpose(-1, -2)) * head_dim**-0.5).softmax(dim=-1)
    attended = attention.out_proj((probs @ value).transpose(1, 2).reshape(batch, 1, dim))
    pooled = attended + head.mlp(head.layernorm(attended))
    return pooled[:, 0], probs


def straightforward_grid_maps(
    model: torch.nn.Module,
    spec: dict,
    pixel_values: torch.Tensor,
    directions: torch.Tensor,
    layers: list[int],
    interpolate: bool,
) -> torch.Tensor:
    """LeGrad as the authors' code computes it; float32 [batch, prompts, h, w].

    `directions` [prompts, features]: normalized text embeddings (dual encoders) or one-hot class rows.
    """
    batch = pixel_values.shape[0]
    prompts = directions.shape[0]
    height, width = pixel_values.shape[-2] // spec["patch"], pixel_values.shape[-1] // spec["patch"]
    repeated = pixel_values.repeat_interleave(prompts, dim=0)  # copy b*K + k is explained for prompt k
    per_copy = directions.repeat(batch, 1).to(pixel_values.dtype)
    family = spec["family"]
    trunk = vision_trunk(model, spec)
    total = 0
    with eager_attention(model), torch.enable_grad():
        out = trunk(
            pixel_values=repeated,
            interpolate_pos_encoding=interpolate,
            output_attentions=True,
            output_hidden_states=True,
        )
        for layer in layers:
            tokens = out.hidden_states[layer + 1]
            probs = out.attentions[layer]
            if family == "clip":
                feature = F.normalize(model.visual_projection(trunk.post_layernorm(tokens.mean(dim=1))), dim=-1)
            elif family == "siglip":
                pooled, probs = siglip_head_by_hand(trunk.head, tokens)
                feature = F.normalize(pooled, dim=-1)
            else:
                feature = model.classifier(trunk.layernorm(tokens.mean(dim=1)))
            score = (feature * per_copy).sum()
            (grad,) = torch.autograd.grad(score, [probs], retain_graph=True, create_graph=True)
            relevance = grad.clamp(min=0).mean(dim=1).mean(dim=1)[:, PREFIX_TOKENS[family] :]
            total = total + relevance.detach().float()
        del out
    return total.reshape(batch, prompts, height, width)


# --------------------------------------------------------------------------------------------------------------
# measuring
# --------------------------------------------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _release_freed_memory() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: freed memory may stay resident and hide some allocations
        pass


def peak_memory_bytes(fn: Callable[[], object], device: torch.device) -> int:
    """Peak memory of one call above what was in use before it (see the module docstring for how)."""
    _release_freed_memory()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    before = _rss_bytes()
    peak = before
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _rss_bytes())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        fn()
    finally:
        done.set()
        sampler.join()
    return max(peak, _rss_bytes()) - before


def minmax(maps: torch.Tensor) -> torch.Tensor:
    low = maps.amin(dim=(-2, -1), keepdim=True)
    span = maps.amax(dim=(-2, -1), keepdim=True) - low
    return torch.where(span > 0, (maps - low) / span.clamp_min(1e-30), torch.zeros_like(maps))


def compare_maps(ours: torch.Tensor, reference: torch.Tensor, dtype: torch.dtype, label: str) -> dict:
    """Max abs difference and correlation of min-max normalized maps; raises when they disagree."""
    ours, reference = minmax(ours.float().cpu()), minmax(reference.float().cpu())
    diff = float((ours - reference).abs().max())
    correlation = float(torch.corrcoef(torch.stack([ours.flatten(), reference.flatten()]))[0, 1])
    constant = int((reference.flatten(-2).amax(-1) == 0).sum())
    tolerance = MAP_TOLERANCE[dtype]
    if constant or not diff <= tolerance or not correlation >= MIN_MAP_CORRELATION[dtype]:
        raise AssertionError(
            f"{label}: LeGradExplainer and the straightforward implementation disagree (max abs difference "
            f"{diff:.2e} after min-max, tolerance {tolerance:.0e}; correlation {correlation:.5f}, at least "
            f"{MIN_MAP_CORRELATION[dtype]} needed; {constant} constant reference maps). The timings would not compare "
            "the same computation; fix the implementation before trusting them."
        )
    return {"max_abs_diff": diff, "correlation": correlation, "tolerance": tolerance}


def _is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


def run_config(
    model, spec, name, device, dtype, image_size, prompts, batch, layer_mode, methods, repeats, warmup, collect_garbage
):
    """Measure one configuration; returns its JSON record."""
    num_layers = spec["layers"]
    explained = list(range(num_layers - 2, num_layers)) if layer_mode == "last2" else list(range(num_layers))
    interpolate = image_size != spec["native"]
    generator = torch.Generator().manual_seed(1)
    pixel_values = torch.randn(batch, 3, image_size, image_size, generator=generator).to(device=device, dtype=dtype)
    explainer = LeGradExplainer(model)
    family = spec["family"]
    if family == "vit":
        targets = list(range(prompts))
        directions = torch.eye(spec["labels"], device=device)[targets]
        call_kwargs = {"targets": targets}
    else:
        directions = F.normalize(torch.randn(prompts, embedding_dim(model, spec), generator=generator), dim=-1)
        directions = directions.to(device)
        call_kwargs = {"text_embeds": directions}
        if family == "siglip":
            call_kwargs["correction"] = False

    def ours():
        return explainer.explain(pixel_values=pixel_values, layers=explained, **call_kwargs).grid_maps

    def ours_recomputed():
        budget = engine.RECORDED_TAIL_MEMORY_FRACTION
        engine.RECORDED_TAIL_MEMORY_FRACTION = 0.0
        try:
            return ours()
        finally:
            engine.RECORDED_TAIL_MEMORY_FRACTION = budget

    def straightforward():
        return straightforward_grid_maps(model, spec, pixel_values, directions, explained, interpolate)

    def forward():
        with torch.no_grad():
            return image_readout(model, spec, pixel_values, interpolate)

    readout_direction = directions.mean(dim=0).to(dtype)

    def forward_backward():
        with torch.enable_grad():
            readout = image_readout(model, spec, pixel_values, interpolate)
            (readout * readout_direction).sum().float().backward()
        model.zero_grad(set_to_none=True)

    functions = {
        "ours": ours,
        "ours_recomputed": ours_recomputed,
        "straightforward": straightforward,
        "forward": forward,
        "forward_backward": forward_backward,
    }
    label = f"{name} {image_size}px K={prompts} batch={batch} {str(dtype).removeprefix('torch.')} {layer_mode}"
    failed: dict[str, str] = {}
    outputs: dict[str, object] = {}
    for _ in range(max(1, warmup)):
        for method in methods:
            if method in failed:
                continue
            try:
                outputs[method] = functions[method]()
                synchronize(device)
            except (torch.OutOfMemoryError, RuntimeError) as error:
                if not _is_out_of_memory(error):
                    raise
                failed[method] = "out of memory"
                outputs.pop(method, None)
                gc.collect()
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    agreement = None
    if "ours" in outputs and "straightforward" in outputs:
        agreement = compare_maps(outputs["ours"], outputs["straightforward"], dtype, label)
        if "ours_recomputed" in outputs:
            compare_maps(outputs["ours_recomputed"], outputs["straightforward"], dtype, label + " (recomputed)")
    outputs.clear()
    times: dict[str, list[float]] = {method: [] for method in methods if method not in failed}
    cpu_times: dict[str, list[float]] = {method: [] for method in times}
    for _ in range(repeats):
        for method in times:
            synchronize(device)
            start, cpu_start = time.perf_counter(), time.process_time()
            functions[method]()
            synchronize(device)
            times[method].append((time.perf_counter() - start) * 1000)
            cpu_times[method].append((time.process_time() - cpu_start) * 1000)
    if collect_garbage:  # a full collection takes ~0.3 s with transformers loaded; once per configuration
        gc.collect()
    memory = {method: peak_memory_bytes(functions[method], device) / 2**20 for method in times}
    median = {method: statistics.median(values) for method, values in times.items()}
    cpu_median = {method: statistics.median(values) for method, values in cpu_times.items()}
    ratios = {}
    if "ours" in median and "straightforward" in median:
        ratios["straightforward_over_ours"] = median["straightforward"] / median["ours"]
        ratios["straightforward_over_ours_cpu_time"] = cpu_median["straightforward"] / cpu_median["ours"]
    if "ours" in median and "ours_recomputed" in median:
        ratios["recomputed_over_ours"] = median["ours_recomputed"] / median["ours"]
    floor = None
    if "forward" in median:
        floor = median["forward"] * (1 + BACKWARD_FRACTION * prompts * len(explained) / num_layers)
        if "ours" in median:
            ratios["ours_over_forward"] = median["ours"] / median["forward"]
            ratios["ours_over_floor"] = median["ours"] / floor
    if "ours" in memory and "straightforward" in memory and memory["ours"] > 0:
        ratios["memory_straightforward_over_ours"] = memory["straightforward"] / memory["ours"]
    record = {
        "model": name,
        "family": family,
        "image_size": image_size,
        "prompts": prompts,
        "batch": batch,
        "dtype": str(dtype).removeprefix("torch."),
        "layers": layer_mode,
        "explained_layers": len(explained),
        "num_layers": num_layers,
        "median_ms": median,
        "times_ms": times,
        # CPU time of this process (all its threads): on a shared CPU it counts the work done, not the waiting.
        "median_cpu_ms": cpu_median,
        "cpu_times_ms": cpu_times,
        "images_per_s": {method: batch * 1000 / value for method, value in median.items()},
        "floor_ms": floor,
        "ratios": ratios,
        "peak_memory_mb": memory,
        "failed": failed,
        "maps_agree": None if agreement is None else True,
        "map_check": agreement,
    }
    print_row(record)
    return record


# --------------------------------------------------------------------------------------------------------------
# reporting
# --------------------------------------------------------------------------------------------------------------

_COLUMNS = (
    "model", "px", "K", "B", "dtype", "layers", "ours ms", "recomputed ms", "straight ms", "fwd ms", "fwd+bwd ms",
    "straight/ours", "same, CPU time", "ours/fwd", "floor ms", "ours/floor", "mem ours MB", "mem straight MB",
    "mem ratio", "map diff",
)  # fmt: skip


def _number(value, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_header(memory_method: str) -> None:
    print(f"peak memory: {memory_method}")
    print("| " + " | ".join(_COLUMNS) + " |")
    print("|" + "|".join("---" for _ in _COLUMNS) + "|")


def print_row(record: dict) -> None:
    median, ratios, memory = record["median_ms"], record["ratios"], record["peak_memory_mb"]
    straight = median.get("straightforward")
    if straight is None and "straightforward" in record["failed"]:
        straight = record["failed"]["straightforward"]
    cells = [
        record["model"],
        record["image_size"],
        record["prompts"],
        record["batch"],
        record["dtype"],
        record["layers"],
        _number(median.get("ours")),
        _number(median.get("ours_recomputed")),
        straight if isinstance(straight, str) else _number(straight),
        _number(median.get("forward")),
        _number(median.get("forward_backward")),
        _number(ratios.get("straightforward_over_ours"), 2),
        _number(ratios.get("straightforward_over_ours_cpu_time"), 2),
        _number(ratios.get("ours_over_forward"), 2),
        _number(record["floor_ms"]),
        _number(ratios.get("ours_over_floor"), 2),
        _number(memory.get("ours")),
        _number(memory.get("straightforward")),
        _number(ratios.get("memory_straightforward_over_ours"), 1),
        "-" if record["map_check"] is None else f"{record['map_check']['max_abs_diff']:.1e}",
    ]
    print("| " + " | ".join(str(cell) for cell in cells) + " |", flush=True)


def machine_description(device: torch.device) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            cpu = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=[*MODELS, *SMOKE_MODELS], help="default: clip-b16")
    parser.add_argument("--image-sizes", nargs="+", type=int, help="default: 224")
    parser.add_argument("--prompts", nargs="+", type=int, help="default: 1 8")
    parser.add_argument("--batch", nargs="+", type=int, help="default: 1")
    parser.add_argument("--dtype", nargs="+", default=["fp32"], choices=list(DTYPES))
    parser.add_argument("--layers", nargs="+", default=["last2", "all"], choices=["last2", "all"])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=[*METHODS, *EXTRA_METHODS])
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (cuda when available)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own; --smoke: 1)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--json", dest="json_path", help="write the results here")
    parser.add_argument("--smoke", action="store_true", help="tiny models, a few seconds on CPU (for CI)")
    args = parser.parse_args(argv)
    if args.smoke:  # tiny models and few runs; an explicit --models/--prompts/--batch still applies
        args.models, args.prompts = args.models or list(SMOKE_MODELS), args.prompts or [1, 3]
        args.image_sizes, args.batch = [32], args.batch or [2]
        args.repeats, args.warmup = 2, 1
        args.threads = args.threads or 1  # tiny ops: a second thread only adds synchronization
    args.models, args.image_sizes = args.models or ["clip-b16"], args.image_sizes or [224]
    args.prompts, args.batch = args.prompts or [1, 8], args.batch or [1]
    if "ours" not in args.methods:
        parser.error("--methods must include 'ours'")
    if args.repeats < 1 or args.warmup < 0 or min(args.prompts) < 1 or min(args.batch) < 1:
        parser.error("--repeats, --prompts and --batch must be >= 1 and --warmup >= 0")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return _run(args, device, sys.argv[1:] if argv is None else argv)
    finally:
        torch.set_num_threads(threads)  # in-process callers (the test) keep their own setting


def _run(args: argparse.Namespace, device: torch.device, argv: list[str]) -> dict:
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda, but torch sees no CUDA device; use --device cpu.")
    memory_method = (
        "torch.cuda.max_memory_allocated above the allocation before the call"
        if device.type == "cuda"
        else "peak RSS above the RSS before the call, sampled every 1 ms after malloc_trim"
    )
    specs = {**MODELS, **SMOKE_MODELS}
    methods = [method for method in (*METHODS, *EXTRA_METHODS) if method in args.methods]
    print_header(memory_method)
    results = []
    for name in args.models:
        for dtype_name in args.dtype:
            dtype = DTYPES[dtype_name]
            model = build_model(specs[name], device, dtype)
            for image_size in args.image_sizes:
                for batch in args.batch:
                    for prompts in args.prompts:
                        for layer_mode in args.layers:
                            results.append(
                                run_config(
                                    model, specs[name], name, device, dtype, image_size, prompts, batch, layer_mode,
                                    methods, args.repeats, args.warmup, not args.smoke,
                                )
                            )  # fmt: skip
            del model
            gc.collect()
            _release_freed_memory()
    report = {
        "machine": machine_description(device),
        "device": str(device),
        "command": " ".join(["python benchmarks/bench_speed.py", *argv]),
        "memory_method": memory_method,
        "floor": f"forward_ms * (1 + {BACKWARD_FRACTION} * prompts * explained_layers / num_layers)",
        "repeats": args.repeats,
        "warmup": args.warmup,
        "results": results,
    }
    if args.json_path:
        with open(args.json_path, "w") as handle:
            json.dump(report, handle, indent=1)
    return report


if __name__ == "__main__":
    main()
