import json
import time
from pathlib import Path

import numpy as np
from django.core.management.base import BaseCommand, CommandError

from classifier.folders import folder_items
from classifier.ml.reasons import NEW_SOURCE, NEW_SOURCE_FEW_CELLS, REASON_TEXT
from classifier.models import ModelVersion
from classifier.selectors import model_version_resolve, threshold_applied
from classifier.services import ensemble_load
from reports import metrics


class Command(BaseCommand):
    help = "Classify every image of an ImageFolder tree with a model version and write the metrics as JSON."

    def add_arguments(self, parser):
        parser.add_argument("--model", default="active", help="A model version id, or 'active'.")
        parser.add_argument("--data", required=True)
        parser.add_argument("--json", dest="json_out", required=True)
        parser.add_argument("--batch-size", type=int, default=32)

    def handle(self, *args, model, data, json_out, batch_size, **options):
        try:
            version = model_version_resolve(model)
        except ModelVersion.DoesNotExist as exc:
            raise CommandError(str(exc)) from None
        pairs = folder_items(data, check_taxonomy=False)
        ensemble = ensemble_load(version)
        paths = [p for p, _ in pairs]
        actual = [code for _, code in pairs]
        t0 = time.perf_counter()
        applied = threshold_applied(version)
        proba = ensemble.predict_proba(paths, batch_size=batch_size, threshold=applied.value)
        preds = ensemble.decide(proba, threshold=applied.value, min_agreement=applied.min_agreement)
        elapsed = time.perf_counter() - t0
        predicted = [p.top_class for p in preds]
        labels = list(dict.fromkeys(list(ensemble.classes) + sorted(set(actual))))
        summary = metrics.summary(actual, predicted, labels)
        per_backbone = {}
        for b in proba.backbones:
            top = [ensemble.classes[i] for i in np.argmax(proba.per_backbone[b], axis=1)]
            per_backbone[b] = float(np.mean([a == t for a, t in zip(actual, top)]))
        accepted = [(a, p.top_class) for a, p in zip(actual, preds) if not p.abstained]
        ood_flagged = sum(p.out_of_distribution for p in preds)
        out = {
            "model_version": version.pk,
            "ensemble": version.ensemble,
            "n": len(actual),
            "overall_accuracy": summary["overall_accuracy"],
            "balanced_accuracy": summary["balanced_accuracy"],
            "macro_f1": summary["macro_f1"],
            "kappa": summary["kappa"],
            "per_class": {
                code: {k: c[k] for k in ("accuracy", "sensitivity", "specificity", "misdiagnosis_rate", "support")}
                for code, c in summary["per_class"].items()
                if c["support"] or code in set(predicted)
            },
            "confusion_matrix": {"labels": labels, "matrix": summary["confusion_matrix"]["matrix"],
                                 "rows": "actual", "columns": "predicted"},
            "per_backbone": per_backbone,
            # the rule applied: below the threshold, or fewer backbones agreeing, a cell is referred
            "threshold": applied.value,
            "threshold_source": applied.why,
            "min_agreement": applied.min_agreement,
            # every cell referred to an expert, for any reason (split vote, low confidence, out-of-distribution)
            "abstained": sum(p.abstained for p in preds),
            "ood_flagged": ood_flagged if ensemble.ood_checked else None,
            # the model's own reasons (a folder has no source: the portal's new-source rules do not apply)
            "referred_by_reason": {r: sum(r in p.reasons for p in preds) for r in REASON_TEXT
                                   if r not in (NEW_SOURCE, NEW_SOURCE_FEW_CELLS)},
            "accuracy_on_accepted": (sum(a == t for a, t in accepted) / len(accepted)) if accepted else None,
            "accepted_and_wrong": (sum(a != t for a, t in accepted) / len(actual)) if actual else None,
            "cells_per_second": len(actual) / elapsed if elapsed > 0 else None,
        }
        Path(json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(json_out).write_text(json.dumps(out, indent=2))
        self.stdout.write(
            f"overall accuracy {out['overall_accuracy']:.4f} on {len(actual)} cells; abstained {out['abstained']} "
            f"(out-of-distribution {out['ood_flagged']}); "
            f"{out['cells_per_second']:.1f} cells/s; written to {json_out}"
        )
