"""Server-rendered SVG plots with matplotlib (Agg backend, no display, no Django)."""
from __future__ import annotations

import io
import threading
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

matplotlib.rcParams["svg.hashsalt"] = "leukoportal"  # stable ids: the same figure gives the same bytes
matplotlib.rcParams["svg.fonttype"] = "none"
_LOCK = threading.Lock()  # pyplot's state is global
ACCENT = "#7a2e8e"


def _svg(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    return buf.getvalue()


def _short(code: str) -> str:
    return code.replace("_", " ")


def confusion_heatmap(labels: Sequence[str], matrix_predicted_rows: Sequence[Sequence[int]], title: str = "") -> bytes:
    """Heatmap of a confusion matrix laid out like Table II: rows predicted, columns actual."""
    m = np.asarray(matrix_predicted_rows, dtype=float)
    col_tot = m.sum(0, keepdims=True)
    share = np.divide(m, col_tot, out=np.zeros_like(m), where=col_tot > 0)  # share of each actual class
    n = len(labels)
    with _LOCK:
        fig, ax = plt.subplots(figsize=(1.2 + 0.62 * n, 1.0 + 0.55 * n))
        ax.imshow(share, cmap="Purples", vmin=0, vmax=1)
        ax.set_xticks(range(n), [_short(c) for c in labels], rotation=45, ha="right")
        ax.set_yticks(range(n), [_short(c) for c in labels])
        ax.set_xlabel("actual (expert's final class)")
        ax.set_ylabel("predicted")
        for i in range(n):
            for j in range(n):
                if m[i, j]:
                    ax.text(j, i, f"{int(m[i, j])}", ha="center", va="center", fontsize=8,
                            color="white" if share[i, j] > 0.5 else "black")
        if title:
            ax.set_title(title)
        return _svg(fig)


def sensitivity_specificity_bars(per_class: dict, title: str = "", order: Sequence[str] | None = None) -> bytes:
    keys = [c for c in (order or []) if c in per_class] + [c for c in per_class if c not in (order or [])]
    codes = [c for c in keys if per_class[c].get("support")]
    sens = [per_class[c]["sensitivity"] or 0.0 for c in codes]
    spec = [per_class[c]["specificity"] or 0.0 for c in codes]

    def err(key, vals):
        lo, hi = [], []
        for c, v in zip(codes, vals):
            ci = per_class[c].get(f"{key}_ci") or [v, v]
            lo.append(max(v - ci[0], 0))
            hi.append(max(ci[1] - v, 0))
        return [lo, hi]

    x = np.arange(len(codes))
    with _LOCK:
        fig, ax = plt.subplots(figsize=(max(4.0, 0.8 * len(codes) + 1.5), 3.4))
        ax.bar(x - 0.2, sens, 0.4, yerr=err("sensitivity", sens), capsize=2, label="sensitivity", color=ACCENT)
        ax.bar(x + 0.2, spec, 0.4, yerr=err("specificity", spec), capsize=2, label="specificity", color="#9aa4b2")
        ax.set_xticks(x, [_short(c) for c in codes], rotation=45, ha="right")
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("with 95% interval")
        ax.legend(loc="lower right", fontsize=8)
        if title:
            ax.set_title(title)
        return _svg(fig)


def abstention_series(curve: Sequence[dict], operating_point: dict | None = None) -> dict:
    """What the abstention plot draws: per threshold, the accuracy on the accepted cells and the
    share referred, and the operating point (its threshold, accuracy and share referred).
    ``on_curve``: the point is one of the curve's points (an evaluation made since the curve
    applies the whole referral rule); an older evaluation's curve counted split votes and low
    confidence only, and its point is then not drawn on it."""
    t = [float(c["threshold"]) for c in curve]
    acc = [np.nan if c.get("accuracy_accepted") is None else float(c["accuracy_accepted"]) for c in curve]
    ref = [float(c.get("referred") or 0.0) for c in curve]
    point, on_curve = None, False
    if operating_point and operating_point.get("threshold") is not None:
        x = float(operating_point["threshold"])
        point = {"threshold": x, "accuracy_accepted": operating_point.get("accuracy_accepted"),
                 "referred": operating_point.get("referred")}
        same = [i for i, ti in enumerate(t) if abs(ti - x) < 1e-9]
        if same and point["referred"] is not None:
            i = same[0]
            on_curve = abs(ref[i] - point["referred"]) < 1e-9 and (
                (point["accuracy_accepted"] is None and np.isnan(acc[i]))
                or (point["accuracy_accepted"] is not None and abs(acc[i] - point["accuracy_accepted"]) < 1e-9))
    return {"threshold": t, "accuracy_accepted": acc, "referred": ref, "point": point, "on_curve": on_curve}


def abstention_plot(curve: Sequence[dict], operating_point: dict | None = None) -> bytes:
    """The abstention trade-off of :func:`abstention_series`: at each confidence threshold, under
    the rule the lab applies (the backbones that must agree, cells unlike the training images
    referred whatever their confidence), accuracy on the accepted cells and the share referred;
    the operating point on both curves."""
    s = abstention_series(curve, operating_point)
    agree = ""
    if operating_point and operating_point.get("min_agreement"):
        n = operating_point.get("n_backbones")
        agree = f", {operating_point['min_agreement']}{f' of {n}' if n else ''} backbones agreeing"
    with _LOCK:
        fig, ax = plt.subplots(figsize=(5.5, 3.4))
        ax.plot(s["threshold"], s["accuracy_accepted"], color=ACCENT, label=f"accuracy on accepted cells{agree}")
        ax.plot(s["threshold"], s["referred"], color="#667085", linestyle="--", label="share referred to experts")
        point = s["point"]
        if point is not None:
            x = point["threshold"]
            ax.axvline(x, color="#b42318", linewidth=1)
            label = f"lab's operating point (threshold {x:.2f})"
            if s["on_curve"]:
                if point["accuracy_accepted"] is not None:
                    ax.plot([x], [point["accuracy_accepted"]], "o", color="#b42318")
                ax.plot([x], [point["referred"]], "o", color="#b42318", fillstyle="none")
            else:
                label += "; re-run the evaluation to place it on these curves"
            ax.annotate(label, (x, 0.05), xytext=(4, 0), textcoords="offset points", fontsize=8, color="#b42318")
        ax.set_xlabel("confidence threshold")
        ax.set_ylim(0, 1.05)
        ax.legend(loc="center left", fontsize=8)
        return _svg(fig)


def training_curves(history: Sequence[dict]) -> bytes:
    backbones = list(dict.fromkeys(h.get("backbone", "") for h in history))
    with _LOCK:
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(8, 3.2))
        for b in backbones:
            rows = [h for h in history if h.get("backbone", "") == b]
            ep = [h["epoch"] for h in rows]
            line = ax1.plot(ep, [h.get("loss") for h in rows], label=f"{b} train")[0]
            if any(h.get("val_loss") is not None for h in rows):
                ax1.plot(ep, [h.get("val_loss", np.nan) for h in rows], linestyle="--", color=line.get_color(),
                         label=f"{b} validation")
            if any(h.get("val_accuracy") is not None for h in rows):
                ax2.plot(ep, [h.get("val_accuracy", np.nan) for h in rows], color=line.get_color(), label=b)
        ax1.set_xlabel("epoch")
        ax1.set_ylabel("loss")
        ax2.set_xlabel("epoch")
        ax2.set_ylabel("validation accuracy")
        ax2.set_ylim(0, 1.05)
        if backbones:
            ax1.legend(fontsize=7)
            ax2.legend(fontsize=7)
        if not history:
            ax1.text(0.5, 0.5, "no training history", ha="center", transform=ax1.transAxes)
        return _svg(fig)


def agreement_plot(by_week: dict) -> bytes:
    with _LOCK:
        fig, ax = plt.subplots(figsize=(7, 3.4))
        weeks = [r["key"] for r in by_week["rows"]]
        for i, code in enumerate(by_week["classes"]):
            ys = [(r["cells"][i] or {}).get("rate") for r in by_week["rows"]]
            ax.plot(weeks, [np.nan if y is None else y for y in ys], marker="o", markersize=3, label=_short(code))
        ax.plot(weeks, [np.nan if r["overall"]["rate"] is None else r["overall"]["rate"] for r in by_week["rows"]],
                color="black", linewidth=2, label="all cells")
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("model = expert")
        ax.set_xlabel("week")
        fig.autofmt_xdate()
        if weeks:
            ax.legend(fontsize=7, ncol=2, loc="lower left")
        else:
            ax.text(0.5, 0.5, "no cells with both a prediction and a final class yet", ha="center",
                    transform=ax.transAxes)
        return _svg(fig)
