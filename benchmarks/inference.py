"""Inference speed: the naive way vs the engine, same run, same real pbc-dev images.

    .venv/bin/python benchmarks/inference.py [--images 64] [--device cpu] [--backbones a,b]
        [--ensembles offline,paper] [--threads N] [--checkpoint trained.pt]

naive  = eager fp32, one image at a time (torchvision transforms, model(x[None]) under no_grad),
         as a user would write it; the same backbone + a linear head.
engine = classifier.ml's EnsembleModel: batched, decoded ahead in threads, one resize per input
         size, inference_mode; on the CPU in two runtimes: PyTorch (BN folded, channels_last)
         and OpenVINO (the default where installed), each in fp32, and OpenVINO in bf16 where
         the CPU has native bf16. The "engine" column is what the engine chooses by itself
         (precision="auto"), as after training: bf16 is measured against fp32 on other real
         cells (calibration cells; heads from --checkpoint or fit on 90 more cells), and the
         engine runs bf16 where the votes agree >= 99.5 %, bf16 with the cells close to a
         decision re-computed in fp32 where that agrees >= 99.5 % (classifier.ml.precision),
         else fp32. Its agreement with fp32 is then measured on the timed images, which the
         calibration never saw. CUDA: PyTorch with AMP + pinned memory.
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

from benchmarks.common import SHARED  # noqa: E402

DATA = Path(os.environ.get("PBC_DEV", SHARED / "pbc-dev"))
CLASSES = ["basophil", "eosinophil", "erythroblast", "immature_granulocyte", "lymphocyte", "monocyte",
           "neutrophil_band", "neutrophil_segmented", "platelet"]


def real_images(n: int) -> list[Path]:
    per = {c: sorted((DATA / c).glob("*.jpg")) for c in CLASSES}
    n = min(n, sum(map(len, per.values())))  # a small folder (the demo cells) has fewer
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
        size = int(job.get("input_sizes", {}).get(b, spec.input_size))  # the engine's input size
        net = torch.nn.Sequential(FeatureExtractor(build_backbone(b, weights, input_size=size), "pooled"),
                                  torch.nn.Linear(spec.feature_dim, len(CLASSES))).eval().to(device)
        tf = transforms.Compose([transforms.Resize((size, size)), transforms.ToTensor(),
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


def _engine(job: dict, precision: str, runtime: str, with_ckpt: bool = False):
    from classifier.ml.api import untrained_checkpoint
    from classifier.ml.checkpoint import load_checkpoint
    from classifier.ml.engine import EnsembleModel
    from classifier.ml.registry import get_spec

    if job.get("checkpoint"):
        ckpt, digest = load_checkpoint(job["checkpoint"])
        keep = [b for b in ckpt["backbones"] if b in job["backbones"]]
        if keep != list(ckpt["backbones"]):  # a part of a trained ensemble: its own precision check, and
            # no out-of-distribution check (the trained one reads every backbone of the ensemble)
            ckpt = dict(ckpt, backbones=keep, bf16_agreement=None, bf16_recheck=None, ood=None)
    else:
        weights = "imagenet" if all(get_spec(b).family == "efficientnet_lite" for b in job["backbones"]) else None
        if job.get("random_weights"):
            weights = None
        with tempfile.TemporaryDirectory() as tmp:
            path, digest = untrained_checkpoint(job["backbones"], CLASSES, out_dir=Path(tmp), weights=weights,
                                                config_overrides={"tta_views": job["views"]})
            ckpt, digest = load_checkpoint(path)
    model = EnsembleModel(ckpt, digest, device=job["device"], precision=precision, runtime=runtime)
    if job.get("views"):
        model.tta_views = job["views"]
    return (model, ckpt) if with_ckpt else model


def worker_engine(job: dict) -> dict:
    import torch

    torch.set_num_threads(job["threads"])
    model = _engine(job, job["precision"], job["runtime"])
    paths = [Path(p) for p in job["images"]]
    model.predict_proba(paths[: job["batch_size"]], batch_size=job["batch_size"])  # warm-up
    _sync(model.device)
    t = time.perf_counter()
    model.predict_proba(paths, batch_size=job["batch_size"])
    _sync(model.device)
    dt = time.perf_counter() - t
    return {"cells_per_s": len(paths) / dt, "seconds": dt, "peak_rss_mb": peak_rss_mb(), "precision": model.precision_label,
            "runtime": model.runtime, "views": len(model.tta_views)}


def worker_calibrate(job: dict) -> dict:
    """The checkpoint every engine column of a row loads: the trained one (--checkpoint), or
    linear heads fit (logistic regression) on fp32 features of 90 other real labelled cells;
    then, as training does, bf16 measured against fp32 on other real cells (the calibration
    cells, not the timed ones): plain bf16 agreement and the fp32 re-check's tolerances
    (classifier.ml.precision.check), stored in the checkpoint the engine loads."""
    import numpy as np
    import torch
    from sklearn.linear_model import LogisticRegression

    from classifier.ml.checkpoint import save_checkpoint
    from classifier.ml.features import extract_views
    from classifier.ml.preprocess import batched_resized
    from classifier.ml.registry import get_spec

    torch.set_num_threads(job["threads"])
    fp32, ckpt = _engine(job, "fp32", job["runtime"], with_ckpt=True)
    bf16 = _engine(job, "bf16", job["runtime"])
    if not job.get("checkpoint"):
        train = [Path(p) for p in job["train_images"]]
        labels = np.array([CLASSES.index(Path(p).parent.name) for p in train])
        for b in fp32.backbones:
            size = fp32.input_sizes[b]
            X = torch.cat([extract_views(fp32.extractors[b], get_spec(b), batch[size], ["id"], fp32.device, "fp32")[:, 0]
                           for _, batch in batched_resized(train, [size], 32)])
            head = fp32.heads[b]
            head.set_standardisation(X)
            Z = ((X - head.mean) / head.std).numpy()
            lr = LogisticRegression(C=0.1, max_iter=300).fit(Z, labels)
            W = np.zeros((len(CLASSES), Z.shape[1]), np.float32)
            bias = np.full(len(CLASSES), -30.0, np.float32)  # classes absent from the fit set
            W[lr.classes_] = lr.coef_
            bias[lr.classes_] = lr.intercept_
            linear = head.body[-1]
            with torch.no_grad():
                linear.weight.copy_(torch.from_numpy(W))
                linear.bias.copy_(torch.from_numpy(bias))
            bf16.heads[b].load_state_dict(head.state_dict())
            ckpt["heads"][b] = head.state_dict()
            ckpt["temperature"][b] = fp32.temperature[b] = bf16.temperature[b] = 1.0
    measured = measure_bf16(fp32, bf16, [Path(p) for p in job["calibration_images"]], job["views"],
                            fp32.default_threshold)  # the threshold the engine applies (never 0)
    ckpt = dict(ckpt, backbones=list(fp32.backbones), bf16_agreement=measured["agreement"],
                bf16_agreement_runtime=fp32.runtime, bf16_recheck=measured["recheck"],
                config=dict(ckpt["config"], tta_views=job["views"]))
    path, _ = save_checkpoint(ckpt, Path(job["out_dir"]), stem="benchmark")
    return {"checkpoint": str(path), "calibration": measured}


def measure_bf16(fp32, bf16, paths: list[Path], views: list[str], threshold: float | None) -> dict:
    """bf16 against fp32 on ``paths`` as training measures it (classifier.ml.precision.check):
    both engines' logits ([backbones, N, C]: ``_logits`` returns the logits *and* the features,
    which used to be stacked together: "setting an array element with a sequence ...
    inhomogeneous shape" on every CPU with native bf16) and, when the checkpoint has an
    out-of-distribution check, its measures in both precisions (without them the engine never
    runs the re-check for such a checkpoint)."""
    import numpy as np

    from classifier.ml.ood import COLOUR_SIZE, colour_features
    from classifier.ml.precision import check, ood_measures
    from classifier.ml.preprocess import batched_resized

    sizes = sorted(set(fp32.input_sizes.values()) | ({COLOUR_SIZE} if fp32.ood is not None else set()))
    batches = [batch for _, batch in batched_resized(paths, sizes, 32, standardise=fp32.standardise)]
    z, feats = {}, {}
    for prec, model in (("fp32", fp32), ("bf16", bf16)):
        per = {b: [model._logits(model.extractors[b], b, batch, views, prec) for batch in batches]
               for b in model.backbones}
        z[prec] = np.stack([np.concatenate([logits for logits, _ in per[b]]) for b in model.backbones])
        feats[prec] = {b: np.concatenate([f for _, f in per[b]]) for b in model.backbones}
    measures = None
    if fp32.ood is not None:
        colour = np.concatenate([colour_features(batch[COLOUR_SIZE]) for batch in batches])
        measures = ood_measures(fp32.ood, feats["bf16"], feats["fp32"], colour)
    return check(z["bf16"], z["fp32"], np.array([fp32.temperature[b] for b in fp32.backbones]), threshold,
                 ood=measures)


def worker_agreement(job: dict) -> dict:
    """Top-1 agreement with fp32 on the timed images (not the calibration cells) of the vote in
    plain bf16 and of what the engine runs (``precision="auto"``)."""
    import torch

    from classifier.ml.voting import vote

    torch.set_num_threads(job["threads"])
    paths = [Path(p) for p in job["images"]]
    votes = {}
    for prec in ("fp32", "bf16", "auto"):
        model = _engine(job, prec, job["runtime"])
        votes[prec] = vote(model.predict_proba(paths, batch_size=job["batch_size"]).stacked).label
    return {"bf16": float((votes["bf16"] == votes["fp32"]).mean()),
            "engine": float((votes["auto"] == votes["fp32"]).mean())}


def gflop_per_cell(backbone: str, size: int) -> float:
    """Forward FLOPs of one backbone on one image (a multiply-add counts 2), by torch's counter."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from classifier.ml.registry import build_backbone

    model = build_backbone(backbone, None, input_size=size).eval()
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, size, size))
    return counter.get_total_flops() / 1e9


def matmul_gflops(dtype, threads: int, n: int = 2048, reps: int = 8) -> float:
    """What this machine's cores compute at best: a large matrix product, GFLOP/s."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    seconds = time.perf_counter() - t0
    torch.set_num_threads(before)
    return 2 * n ** 3 * reps / seconds / 1e9


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
        workers = {"naive": worker_naive, "engine": worker_engine, "calibrate": worker_calibrate,
                   "agreement": worker_agreement}
        print(json.dumps(workers[kind](json.loads(job))))
        return

    import torch

    from classifier.ml.device import cpu_supports_bf16, resolve_device
    from classifier.ml.engine import BF16_MIN_AGREEMENT
    from classifier.ml.registry import ENSEMBLES
    from classifier.ml.runtime import resolve_runtime

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

    rows = []
    targets = [(b, [b]) for b in backbones] + [(f"ensemble:{e}", ENSEMBLES[e]) for e in ensembles]
    bf16 = device.type == "cpu" and cpu_supports_bf16()
    cpu = device.type == "cpu"
    runtime = resolve_runtime("auto", device)
    # other real cells: 90 to fit heads (without --checkpoint), 160 to measure bf16 as training does
    more = [str(p) for p in real_images(args.images + 90 + 160)[args.images:]]
    train_images, calibration_images = more[:90], more[90:]
    # the engine's input size per backbone (the checkpoint's, else the default recipe's): the naive
    # way runs at the same size
    if args.checkpoint:
        from classifier.ml.checkpoint import load_checkpoint

        info = load_checkpoint(args.checkpoint)[0]["backbone_info"]
        ck_sizes = {b: int(v["input_size"]) for b, v in info.items()}
    else:
        ck_sizes = {}
    from classifier.ml.recipes import input_size_for, recipe
    from classifier.ml.registry import get_spec

    every = list(dict.fromkeys(backbones + [b for e in ensembles for b in ENSEMBLES[e]]))
    sizes = {b: ck_sizes.get(b) or input_size_for(recipe("default"), b, get_spec(b).input_size) for b in every}
    print("# input sizes (engine and naive): " + ", ".join(f"{b} {s}" for b, s in sizes.items()))
    flops = {b: gflop_per_cell(b, sizes[b]) for b in every}
    print("# GFLOP per cell (forward, one view; an ensemble is the sum): "
          + ", ".join(f"{b} {v:.2f}" for b, v in flops.items()))
    if cpu:
        print(f"# this machine's limit: matrix product {matmul_gflops(torch.float32, threads):.0f} GFLOP/s in fp32, "
              f"{matmul_gflops(torch.bfloat16, threads):.0f} GFLOP/s in bf16 ({threads} threads); the GFLOP/s columns "
              "are cells/s x GFLOP per cell (the fp32 re-check's extra work not counted)")
    print(f"# engine runtime: {runtime}; heads: {'the trained checkpoint' if args.checkpoint else 'logistic regression on 90 other real cells'}; "
          f"bf16 measured against fp32 on {len(calibration_images)} other real cells as training does: the engine runs "
          f"bf16 where its vote agreement is >= {BF16_MIN_AGREEMENT}, alone or with the fp32 re-check near decisions, else fp32")
    _print_header(cpu)
    tmp = tempfile.TemporaryDirectory()
    for name, bbs in targets:
        job = {"backbones": bbs, "device": args.device, "threads": threads, "batch_size": bs, "views": views,
               "random_weights": args.random_weights, "images": images,
               "checkpoint": args.checkpoint if (args.checkpoint and all(b in ENSEMBLES["offline"] for b in bbs)) else None}
        naive = spawn("naive", dict(job, images=naive_images, input_sizes={b: sizes[b] for b in bbs}))
        cols = {}
        if cpu:
            if bf16:
                cal = spawn("calibrate", dict(job, runtime=runtime, train_images=train_images,
                                              calibration_images=calibration_images, out_dir=tmp.name))
                cols["calibration"] = cal.get("calibration", cal)
                if "checkpoint" in cal:
                    job = dict(job, checkpoint=cal["checkpoint"])
            cols["torch fp32"] = spawn("engine", dict(job, precision="fp32", runtime="torch"))
            if runtime == "openvino":
                cols["openvino fp32"] = spawn("engine", dict(job, precision="fp32", runtime="openvino"))
            if bf16:
                cols["bf16"] = spawn("engine", dict(job, precision="bf16", runtime=runtime))
                cols["engine"] = spawn("engine", dict(job, precision="auto", runtime=runtime))
                cols["agreement"] = spawn("agreement", dict(job, runtime=runtime))
            for f in Path(tmp.name).glob("benchmark-*.pt"):
                f.unlink()
        else:
            cols["cuda amp"] = spawn("engine", dict(job, precision="auto", runtime="torch"))
        rows.append((name, naive, cols))
        _print_row(name, naive, cols, runtime, cpu, sum(flops[b] for b in bbs) * len(views))
    print("# targets (2 CPU cores): paper ensemble >= 4x naive; offline ensemble >= 20 cells/s")


def _print_header(cpu):
    if cpu:
        print(f"{'model':<24} {'naive':>7} {'torch fp32':>10} {'ov fp32':>8} {'bf16':>7} {'bf16 agree':>10} "
              f"{'engine':>7} {'engine runs':>20} {'agree':>6} {'recheck':>7} {'speedup':>7} {'naive MB':>8} "
              f"{'engine MB':>9} {'naive GF/s':>10} {'engine GF/s':>11}  (cells/s; agreement with fp32 on the timed cells)")
    else:
        print(f"{'model':<24} {'naive':>7} {'cuda amp':>9} {'speedup':>7} {'naive MB':>8} {'engine MB':>9}  (cells/s)")


def _print_row(name, naive, cols, runtime, cpu, gflop=None):
    def f(d, k="cells_per_s"):
        fmt = "{:.0f}" if k == "peak_rss_mb" else "{:.2f}"
        return fmt.format(d[k]) if d and k in d else ("err" if d and "error" in d else "-")

    def pct(v):
        return f"{100 * v:.1f}%" if isinstance(v, float) else "-"

    def gfs(d):
        return f"{d['cells_per_s'] * gflop:.1f}" if gflop and d and "cells_per_s" in d else "-"

    errors = [d["error"] for d in [naive, *cols.values()] if d and "error" in d]
    if not cpu:
        eng = cols["cuda amp"]
        sp = f"{eng['cells_per_s'] / naive['cells_per_s']:.1f}x" if "cells_per_s" in eng and "cells_per_s" in naive else "-"
        print(f"{name:<24} {f(naive):>7} {f(eng):>9} {sp:>7} {f(naive, 'peak_rss_mb'):>8} {f(eng, 'peak_rss_mb'):>9}")
    else:
        eng = cols.get("engine") or cols.get("openvino fp32") or cols["torch fp32"]
        agree = cols.get("agreement", {})
        recheck = (cols.get("calibration") or {}).get("recheck") or {}
        runs = eng.get("precision", "fp32")
        share = pct(recheck.get("rechecked_share")) if "re-check" in runs else "-"
        sp = f"{eng['cells_per_s'] / naive['cells_per_s']:.1f}x" if "cells_per_s" in eng and "cells_per_s" in naive else "-"
        print(f"{name:<24} {f(naive):>7} {f(cols['torch fp32']):>10} {f(cols.get('openvino fp32')):>8} "
              f"{f(cols.get('bf16')):>7} {pct(agree.get('bf16')):>10} {f(eng):>7} {runs:>20} {pct(agree.get('engine')):>6} "
              f"{share:>7} {sp:>7} {f(naive, 'peak_rss_mb'):>8} {f(eng, 'peak_rss_mb'):>9} {gfs(naive):>10} "
              f"{gfs(eng):>11}", flush=True)
        cal = cols.get("calibration") or {}
        if "agreement" in cal:
            print(f"#   calibration ({cal['cells']} other cells): plain bf16 {pct(cal['agreement'])}, re-checked "
                  f"{pct(recheck.get('agreement'))} (two-fold), {pct(recheck.get('rechecked_share'))} of backbone results "
                  f"re-computed in fp32", flush=True)
    for e in errors:
        print(f"#   error: {e}")


if __name__ == "__main__":
    main()
