"""The promotion gate's decision, pure (no Django, no database), beside the metrics: given what the
evaluations found, which outcome and which reasons. ``reports.services.model_version_evaluate_and_gate``
runs the evaluations, asks here, and records the decision."""
from __future__ import annotations

from dataclasses import dataclass

from .metrics import pct, promotion_check

# The values of reports.models.GateDecision.Outcome.
ACTIVATED = "activated"
FIRST = "first"
UNEVALUATED_ACTIVATED = "unevaluated_activated"
CANDIDATE = "candidate"
TOO_SMALL = "too_small"
NOT_EVALUATED = "not_evaluated"


@dataclass(frozen=True)
class Scored:
    """An evaluation on the held-out snapshot, as the gate reads it."""

    n_cells: int
    overall_accuracy: float | None
    vote: dict


def gate_decide(*, version: int, active: int | None, n_items: int, new: Scored | None, old: Scored | None,
                failure: str | None, sample: dict, margin: float, names: dict[str, str],
                comparison: dict) -> tuple[str, list[str]]:
    """The outcome and its reasons for candidate ``version`` against the ``active`` version (None: none).

    ``n_items``: held-out cells with a final label; ``new`` / ``old``: the two evaluations on them (None:
    not run, or failed with ``failure``); ``sample``: :func:`reports.services.heldout_sample`;
    ``comparison``: the paired comparison of the two evaluations ({} without one)."""
    if not n_items:
        if active is None:
            return UNEVALUATED_ACTIVATED, [
                "No held-out cell has a final label, so the gate could not evaluate this version; "
                "it was activated because no version was active."]
        return NOT_EVALUATED, [
            f"No held-out cell has a final label, so the gate could not compare this version with "
            f"the active v{active}; it stays a candidate (a lab admin can promote it explicitly)."]
    if new is None:
        return NOT_EVALUATED, [f"The evaluation on the held-out cells failed ({failure}); the version stays a candidate."]
    if active is None:
        reasons = [f"No version was active; activated after evaluation on {new.n_cells} held-out cells "
                   f"(overall accuracy {pct(new.overall_accuracy)})."]
        if not sample["enough"]:
            reasons.append(too_small_reason(sample, names) + " With no version to compare with, it was activated "
                           "all the same; its accuracy is a rough estimate until more held-out cells are labelled.")
        return FIRST, reasons
    if old is None:
        return NOT_EVALUATED, [f"The active v{active} could not be evaluated on the same cells ({failure}); "
                               "the new version stays a candidate."]
    ok, why = promotion_check(new.vote, old.vote, margin=margin, names=names)
    if not sample["enough"]:
        outcome = TOO_SMALL
        reasons = [too_small_reason(sample, names) + f" v{version} stays a candidate; a lab admin decides, with a reason.",
                   *why]
    elif ok:
        outcome = ACTIVATED
        reasons = [f"Not worse than the active v{active} on the same {new.n_cells} held-out cells: overall accuracy "
                   f"{pct(new.overall_accuracy)} vs {pct(old.overall_accuracy)}, no class's sensitivity drops by more "
                   f"than {pct(margin)}."]
    else:
        outcome, reasons = CANDIDATE, list(why)
    return outcome, [*reasons, paired_comparison_text(comparison, new=version, old=active)]


def too_small_reason(sample: dict, names: dict[str, str]) -> str:
    parts = []
    if sample["total"] < sample["min_total"]:
        parts.append(f"{sample['total']} held-out cells have a final label, {sample['min_total']} are needed")
    if sample["short"]:
        listed = ", ".join(f"{names.get(c, c)} {n}" for c, n in sample["short"].items())
        parts.append(f"fewer than {sample['min_per_class']} in {len(sample['short'])} class(es): {listed}")
    return "Held-out set too small to decide: " + "; ".join(parts) + "."


def paired_comparison_text(comparison: dict, *, new: int, old: int) -> str:
    """One sentence for the gate's reasons (the pages show the same figures in a table)."""
    if not comparison.get("n"):
        return "No held-out cell was scored by both versions; no paired comparison."
    lo, hi = comparison["difference_ci"]
    return (f"Paired comparison on the same {comparison['n']} cells: v{new} right where v{old} is wrong on "
            f"{comparison['new_only']}, the reverse on {comparison['old_only']}; McNemar's exact test p = "
            f"{comparison['mcnemar_p']:.3f}; difference in accuracy {100 * comparison['difference']:+.1f} points "
            f"(95% interval {100 * lo:+.1f} to {100 * hi:+.1f}).")
