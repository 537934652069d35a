import json
from pathlib import Path

import numpy as np
from django.core.management.base import BaseCommand, CommandError

from classifier.models import ModelVersion
from classifier.selectors import model_version_resolve, threshold_applied
from classifier.services import ensemble_load


class Command(BaseCommand):
    help = ("Classify image files: class, confidence, agreement, each backbone's vote, the out-of-distribution "
            "score and, for a cell referred to an expert, the reason.")

    def add_arguments(self, parser):
        parser.add_argument("files", nargs="+")
        parser.add_argument("--model", default="active")
        parser.add_argument("--json", dest="json_out")

    def handle(self, *args, files, model, json_out, **options):
        try:
            version = model_version_resolve(model)
        except ModelVersion.DoesNotExist as exc:
            raise CommandError(str(exc)) from None
        paths = [Path(f) for f in files]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise CommandError(f"No such file(s): {', '.join(missing)}")
        ensemble = ensemble_load(version)
        applied = threshold_applied(version)
        try:
            proba = ensemble.predict_proba(paths, threshold=applied.value)
        except (OSError, ValueError) as exc:
            raise CommandError(f"Could not read an image: {exc}") from None
        preds = ensemble.decide(proba, threshold=applied.value, min_agreement=applied.min_agreement)
        rows = []
        for i, (path, p) in enumerate(zip(paths, preds)):
            votes = {b: ensemble.classes[int(np.argmax(proba.per_backbone[b][i]))] for b in proba.backbones}
            rows.append({"file": str(path), "class": p.label, "top_class": p.top_class, "confidence": p.confidence,
                         "agreement": f"{p.agreement}/{p.n_backbones}", "abstained": p.abstained, "votes": votes,
                         "reason": p.reason or None, "reasons": p.reasons, "ood_score": p.ood_score,
                         "out_of_distribution": p.out_of_distribution, "best_guess_aligned": p.aligned})
            self.stdout.write(f"{path}\t{p.label}\t{p.confidence:.3f}\t{p.agreement}/{p.n_backbones}\t"
                              + " ".join(f"{b}={v}" for b, v in votes.items())
                              + (f"\treferred: {p.reason}" if p.abstained else "")
                              + ("\tbest guess on aligned features" if p.aligned else ""))
        aligned = sum(p.aligned for p in preds)
        if aligned:
            self.stderr.write(f"{aligned} of {len(preds)} images are unlike the training images, most of this batch: "
                              "they are referred, with best guesses read on features aligned to the training "
                              "images' (one source per call gives the best guesses).")
        shift = (ensemble.ood.batch_unlike(proba.ood_scores, [ensemble.classes.index(p.top_class) for p in preds])
                 if ensemble.ood_checked and proba.ood_scores is not None else None)
        if shift is not None and shift[0] > shift[1]:
            batch = sum("batch_unlike" in p.reasons for p in preds)
            floor = max(applied.value, ensemble.batch_confidence)
            self.stderr.write(f"These {len(preds)} images, as a batch, are unlike the training images (their scores "
                              f"rank {shift[0]:.2f} on average among the validation cells', over {shift[1]:.2f}; "
                              "about 0.5 at home; one source per call: a blur or another camera scale moves a "
                              f"whole batch): a call is accepted only at {floor:.2f} confidence or more; {batch} "
                              "not flagged one by one are referred for it.")
        if not ensemble.ood_checked:
            self.stderr.write(f"Model version {version.pk} has no out-of-distribution score (trained before it "
                              "existed): retrain it to have cells unlike its training images flagged.")
        if json_out:
            Path(json_out).write_text(json.dumps({"model_version": version.pk, "ood_checked": ensemble.ood_checked,
                                                  "results": rows}, indent=2))
