"""Inference speed: the naive way vs the engine, same run, same real pbc-dev images.

    .venv/bin/python benchmarks/inference.py [--images 64] [--device cpu] [--backbones a,b]
        [--ensembles offline,paper] [--threads N] [--checkpoint trained.pt]

naive  = eager fp32, one image at a time (torchvision transforms, model(x[None]) under no_grad),
         as a user would write it; the same backbone + a linear head.
engine = classifier.ml's EnsembleModel: batched, decoded ahead in threads, BN folded,
         channels_last, inference_mode, bf16 autocast where the CPU has it and it agrees >= 99.5%
         top-1 with fp32 on these images (measured here), AMP + pinned memory on CUDA.
Each measurement runs in its own process, so the peak RSS is that configuration's.
The paper's backbones are built with weights=None (same cost as with ImageNet weights, which
are not on this machine); the offline (EfficientNet-Lite) ones with their real weights.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DATA = Path(os.environ.get("PBC_DEV", REPO.parent / "shared" / "data" / "pbc-dev"))
if not DATA.is_dir():
    DATA = Path("/work/shared/data/pbc-dev")
CLASSES = ["basophil", "eosinophil", "erythroblast", "immature_granulocyte", "lymphocyte", "monocyte",
           "neutrophil_band", "neutrophil_segmented", "platelet"]


def real_images(n: int) -> list[Path]:
    per = {c: sorted((DATA / c).glob("*.jpg")) for c in CLASSES}
    out, i = [], 0
    while len(out) < n:
        for c in CLASSES:
            if i < len(per[c]) and len(out) < n:
                out.append(per[c][i])
        i += 1
    return out


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


# ----------------------------------------------------------------------------- workers
def worker_naive(job: dict) -> dict:
    import torch
    from PIL import Image
    from torchvision import transforms

    from classifier.ml.device import resolve_device
    from classifier.ml.features import FeatureExtractor
    from classifier.ml.registry import build_backbone, get_spec

    torch.set_num_threads(job["threads"])
    device = resolve_device(job["device"])
    models = []
    for b in job["backbones"]:
        spec = get_spec(b)
        weights = "imagenet" if spec.family == "efficientnet_lite" and not job.get("random_weights") else None
        net = torch.nn.Sequential(FeatureExtractor(build_backbone(b, weights), "pooled"),
                                  torch.nn.Linear(spec.feature_dim, len(CLASSES))).eval().to(device)
        tf = transforms.Compose([transforms.Resize((spec.input_size, spec.input_size)), transforms.ToTensor(),
                                 transforms.Normalize(spec.mean, spec.std)])
        models.append((net, tf))
    paths = [Path(p) for p in job["images"]]

    def run(ps):
        out = []
        with torch.no_grad():
            for p in ps:
                img = Image.open(p).convert("RGB")
                probs = [net(tf(img)[None].to(device)).softmax(1).cpu() for net, tf in models]
                out.append(torch.stack(probs).mean(0).argmax().item())
        return out

    run(paths[:1])  # warm-up
    _sync(device)
    t = time.perf_counter()
    run(paths)
    _sync(device)
    dt = time.perf_counter() - t
    return {"cells_per_s": len(paths) / dt, "seconds": dt, "peak_rss_mb": peak_rss_mb()}


def worker_engine(job: dict) -> dict:
    import numpy as np
    import torch

    from classifier.ml.api import untrained_checkpoint
    from classifier.ml.checkpoint import load_checkpoint
    from classifier.ml.engine import EnsembleModel
    from classifier.ml.registry import get_spec

    torch.set_num_threads(job["threads"])
    if job.get("checkpoint"):
        ckpt, digest = load_checkpoint(job["checkpoint"])
    else:
        weights = "imagenet" if all(get_spec(b).family == "efficientnet_lite" for b in job["backbones"]) else None
        if job.get("random_weights"):
            weights = None
        with tempfile.TemporaryDirectory() as tmp:
            path, digest = untrained_checkpoint(job["backbones"], CLASSES, out_dir=Path(tmp), weights=weights,
                                                config_overrides={"tta_views": job["views"]})
            ckpt, digest = load_checkpoint(path)
    model = EnsembleModel(ckpt, digest, device=job["device"], precision=job["precision"])
    if job.get("views"):
        model.tta_views = job["views"]
    paths = [Path(p) for p in job["images"]]
    model.predict_proba(paths[: job["batch_size"]], batch_size=job["batch_size"])  # warm-up
    _sync(model.device)
    t = time.perf_counter()
    proba = model.predict_proba(paths, batch_size=job["batch_size"])
    _sync(model.device)
    dt = time.perf_counter() - t
    res = {"cells_per_s": len(paths) / dt, "seconds": dt, "peak_rss_mb": peak_rss_mb(), "precision": model.precision,
           "views": len(model.tta_views)}
    if job.get("agreement_with") == "fp32" and model.precision != "fp32":
        ref = EnsembleModel(ckpt, digest, device=job["device"], precision="fp32")
        ref.tta_views = model.tta_views
        p32 = ref.predict_proba(paths, batch_size=job["batch_size"])
        res["agreement_fp32"] = float(np.mean(p32.stacked.argmax(2) == proba.stacked.argmax(2)))
        res["max_prob_diff"] = float(np.abs(p32.stacked - proba.stacked).max())
    return res


def spawn(kind: str, job: dict) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--worker", kind, json.dumps(job)], capture_output=True,
                          text=True, cwd=REPO)
    if proc.returncode != 0:
        return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-1][:200]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=48, help="real pbc-dev images per measurement")
    ap.add_argument("--naive-images", type=int, default=None, help="images for the (slow) naive way (default: --images)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--backbones", default=None, help="comma-separated; default: every backbone of the ensembles")
    ap.add_argument("--ensembles", default="offline,paper")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: all this process may use)")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--views", default="id", help="test-time views for the engine (comma-separated)")
    ap.add_argument("--checkpoint", default=None, help="a trained checkpoint for the offline ensemble (agreement check)")
    ap.add_argument("--random-weights", action="store_true",
                    help="weights=None for every backbone (same cost; for machines without the Lite weight packages)")
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        kind, job = args.worker
        print(json.dumps((worker_naive if kind == "naive" else worker_engine)(json.loads(job))))
        return

    import torch

    from classifier.ml.device import cpu_supports_bf16, resolve_device
    from classifier.ml.engine import BF16_MIN_AGREEMENT
    from classifier.ml.registry import ENSEMBLES

    device = resolve_device(args.device)
    threads = args.threads or len(os.sched_getaffinity(0))
    bs = args.batch_size or (128 if device.type == "cuda" else 32)
    images = [str(p) for p in real_images(args.images)]
    naive_images = images[: args.naive_images or args.images]
    views = args.views.split(",")
    ensembles = [e for e in args.ensembles.split(",") if e]
    backbones = args.backbones.split(",") if args.backbones else [b for e in ensembles for b in ENSEMBLES[e]]
    print(f"# inference benchmark: device={device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), "
          f"threads={threads}, torch {torch.__version__}, {len(images)} real pbc-dev images "
          f"(naive: {len(naive_images)}), batch {bs}, engine views={views}")
    if args.random_weights:
        print("# all backbones: weights=None (same cost as ImageNet weights; --random-weights)")
    else:
        print("# paper backbones: weights=None (same cost; their ImageNet weights are not on this machine); "
              "offline backbones: real ImageNet weights from their packages")

    precision = "fp32"
    agreement_note = "fp32 (no bf16 on this CPU)"
    if device.type == "cuda":
        precision, agreement_note = "auto", "CUDA AMP (bf16)"
    elif cpu_supports_bf16():
        probe = spawn("engine", {"backbones": ENSEMBLES["offline"], "device": args.device, "threads": threads,
                                 "images": images, "batch_size": bs, "precision": "bf16", "views": views,
                                 "agreement_with": "fp32", "checkpoint": args.checkpoint,
                                 "random_weights": args.random_weights})
        agr = probe.get("agreement_fp32", 0.0)
        heads = "trained heads" if args.checkpoint else "random heads (pessimistic)"
        precision = "bf16" if agr >= BF16_MIN_AGREEMENT else "fp32"
        agreement_note = (f"bf16 vs fp32 top-1 agreement {agr:.4f} per backbone on {len(images)} real images, "
                          f"{heads}; max prob diff {probe.get('max_prob_diff', float('nan')):.4f} -> engine uses {precision}")
    print(f"# precision: {agreement_note}")

    rows = []
    targets = [(b, [b]) for b in backbones] + [(f"ensemble:{e}", ENSEMBLES[e]) for e in ensembles]
    for name, bbs in targets:
        job = {"backbones": bbs, "device": args.device, "threads": threads, "batch_size": bs, "views": views,
               "precision": precision, "random_weights": args.random_weights}
        naive = spawn("naive", dict(job, images=naive_images))
        ckpt = args.checkpoint if (args.checkpoint and name == "ensemble:offline") else None
        eng = spawn("engine", dict(job, images=images, checkpoint=ckpt))
        rows.append((name, naive, eng))
        _print_row(name, naive, eng, header=len(rows) == 1)
    print("# targets (2 CPU cores): paper ensemble >= 4x naive; offline ensemble >= 20 cells/s")


def _print_row(name, naive, eng, header=False):
    if header:
        print(f"{'model':<24} {'naive cells/s':>13} {'engine cells/s':>14} {'speedup':>8} {'naive RSS MB':>12} "
              f"{'engine RSS MB':>13} {'engine prec':>11}")
    if "error" in naive or "error" in eng:
        print(f"{name:<24} error: {naive.get('error') or eng.get('error')}")
        return
    print(f"{name:<24} {naive['cells_per_s']:>13.2f} {eng['cells_per_s']:>14.2f} "
          f"{eng['cells_per_s'] / naive['cells_per_s']:>7.1f}x {naive['peak_rss_mb']:>12.0f} "
          f"{eng['peak_rss_mb']:>13.0f} {eng['precision']:>11}", flush=True)


if __name__ == "__main__":
    main()
