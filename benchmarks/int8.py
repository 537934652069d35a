"""Would int8 make the frozen layers faster with the same predictions? Measured, not assumed.

    .venv/bin/python benchmarks/int8.py [--ensembles offline,paper] [--calibration 128]
        [--fit 200] [--check 240] [--images 64] [--preset performance]

Needs NNCF (post-training quantisation for OpenVINO), which the product does not install:
``.venv/bin/pip install nncf==3.4.0``.

Per backbone, as the engine runs it (OpenVINO graph with the uint8 images normalised inside,
2 threads, batch 32): the fp32 graph, the same graph in bf16, and an int8 copy quantised by
NNCF on --calibration real pbc-dev cells. A linear head (logistic regression) is fit on fp32
features of --fit real cells; then, on --check other real cells, what classifier.ml.precision
measures at training for bf16 is measured for int8 too: plain vote agreement with fp32, and
the fp32 re-check's share of recomputed results and its agreement (two-fold). Speed: cells/s
on --images further cells. Offline backbones use their real ImageNet weights and the default
recipe's features (multistage, Lite0 at 320 px); the paper's are built with weights=None
(their ImageNet weights are not on this machine) and pooled features, so their int8 error is
that of random weights.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.inference import CLASSES, DATA  # noqa: E402


def split(n_fit: int, n_check: int, n_timed: int) -> tuple[list[Path], list[Path], list[Path]]:
    files = sorted(DATA.glob("*/*.jpg"), key=lambda p: hashlib.sha256(p.name.encode()).hexdigest())
    return files[:n_fit], files[n_fit:n_fit + n_check], files[n_fit + n_check:n_fit + n_check + n_timed]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ensembles", default="offline,paper")
    ap.add_argument("--calibration", type=int, default=128, help="cells NNCF calibrates on (from the --fit cells)")
    ap.add_argument("--fit", type=int, default=200, help="cells the linear heads are fit on")
    ap.add_argument("--check", type=int, default=240, help="cells the agreement is measured on")
    ap.add_argument("--images", type=int, default=64, help="timed cells")
    ap.add_argument("--preset", default="performance", choices=["performance", "mixed"])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    try:
        import nncf
    except ImportError:
        sys.exit("benchmarks/int8.py needs NNCF: .venv/bin/pip install nncf==3.4.0")
    import numpy as np
    import torch
    from sklearn.linear_model import LogisticRegression

    from classifier.ml.features import make_extractor
    from classifier.ml.precision import check
    from classifier.ml.preprocess import load_resized
    from classifier.ml.recipes import DEFAULT, input_size_for
    from classifier.ml.registry import get_spec, resolve_ensemble
    from classifier.ml.runtime import _core, _to_openvino

    torch.set_num_threads(args.threads)
    fit, held, timed = split(args.fit, args.check, args.images)
    y_fit = np.array([CLASSES.index(p.parent.name) for p in fit])
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": args.threads}

    def features(compiled, x):
        req = compiled.create_infer_request()
        return np.concatenate([np.array(req.infer({0: x[i:i + 32]})[0]) for i in range(0, len(x), 32)])

    print(f"# int8 probe: threads={args.threads}, NNCF {nncf.__version__} preset={args.preset}, "
          f"{args.calibration} calibration cells, heads fit on {args.fit}, agreement on {args.check} other cells, "
          f"speed on {args.images} more (all real pbc-dev)")
    cols = ("fp32", "bf16", "int8")
    print(f"{'model':<22}" + "".join(f"{c + ' c/s':>10}" for c in cols)
          + "".join(f"{c + ' ' + h:>15}" for c in cols[1:] for h in ("plain", "re-check")) + f"{'quantise s':>11}")
    for ensemble in args.ensembles.split(","):
        names = resolve_ensemble(ensemble)
        z = {c: [] for c in cols}
        seconds = {c: 0.0 for c in cols}
        for name in names:
            spec = get_spec(name)
            offline = spec.family == "efficientnet_lite"
            size = input_size_for(DEFAULT, name, spec.input_size) if offline else spec.input_size
            ext, _ = make_extractor(name, "multistage" if offline else "pooled",
                                    weights="imagenet" if offline else None, input_size=size)
            graph = _to_openvino(ext, size, (spec.mean, spec.std))

            def load(paths):
                return np.stack([load_resized(p, [size])[size].numpy() for p in paths])

            x_fit, x_held, x_timed = load(fit), load(held), load(timed)
            t = time.perf_counter()
            quantised = nncf.quantize(graph, nncf.Dataset([x_fit[i:i + 1] for i in range(args.calibration)]),
                                      subset_size=args.calibration,
                                      preset=getattr(nncf.QuantizationPreset, args.preset.upper()))
            t_quantise = time.perf_counter() - t
            compiled = {
                "fp32": _core().compile_model(graph, "CPU", dict(config, INFERENCE_PRECISION_HINT="f32")),
                "bf16": _core().compile_model(graph, "CPU", dict(config, INFERENCE_PRECISION_HINT="bf16")),
                "int8": _core().compile_model(quantised, "CPU", dict(config, INFERENCE_PRECISION_HINT="f32")),
            }
            f = features(compiled["fp32"], x_fit)
            mu, sd = f.mean(0), f.std(0) + 1e-6
            head = LogisticRegression(C=0.05, max_iter=500).fit((f - mu) / sd, y_fit)
            speed = {}
            for c, comp in compiled.items():
                z[c].append(head.decision_function((features(comp, x_held) - mu) / sd))
                features(comp, x_timed[:32])  # warm-up
                t = time.perf_counter()
                features(comp, x_timed)
                dt = time.perf_counter() - t
                seconds[c] += dt
                speed[c] = len(x_timed) / dt
            row(name, speed, {c: check(z[c][-1][None], z["fp32"][-1][None], np.ones(1)) for c in cols[1:]}, t_quantise)
        speed = {c: len(timed) / s for c, s in seconds.items()}
        row(f"ensemble:{ensemble}", speed,
            {c: check(np.stack(z[c]), np.stack(z["fp32"]), np.ones(len(names))) for c in cols[1:]}, None)
    print("# plain: share of cells with the same majority vote as fp32; re-check: agreement with fp32 after "
          "the fp32 re-check (two-fold, as training measures it) / share of backbone results it recomputes")


def row(name: str, speed: dict, measured: dict, t_quantise: float | None) -> None:
    out = f"{name:<22}" + "".join(f"{speed[c]:>10.2f}" for c in ("fp32", "bf16", "int8"))
    for c in ("bf16", "int8"):
        m = measured[c]
        r = m["recheck"]
        out += f"{m['agreement']:>14.1%} " + f"{r['agreement']:>7.1%}/{r['rechecked_share']:>6.1%}"
    print(out + (f"{t_quantise:>11.1f}" if t_quantise is not None else ""), flush=True)


if __name__ == "__main__":
    main()
