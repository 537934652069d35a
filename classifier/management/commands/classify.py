import json
from pathlib import Path

import numpy as np
from django.core.management.base import BaseCommand, CommandError

from classifier.models import ModelVersion
from classifier.selectors import model_version_resolve
from classifier.services import ensemble_load, lab_min_agreement, lab_threshold


class Command(BaseCommand):
    help = "Classify image files: class, confidence, agreement and each backbone's vote."

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
        threshold = lab_threshold(version)
        try:
            proba = ensemble.predict_proba(paths, threshold=threshold)
        except (OSError, ValueError) as exc:
            raise CommandError(f"Could not read an image: {exc}") from None
        preds = ensemble.decide(proba, threshold=threshold, min_agreement=lab_min_agreement())
        rows = []
        for i, (path, p) in enumerate(zip(paths, preds)):
            votes = {b: ensemble.classes[int(np.argmax(proba.per_backbone[b][i]))] for b in proba.backbones}
            rows.append({"file": str(path), "class": p.label, "top_class": p.top_class, "confidence": p.confidence,
                         "agreement": f"{p.agreement}/{p.n_backbones}", "abstained": p.abstained, "votes": votes})
            self.stdout.write(f"{path}\t{p.label}\t{p.confidence:.3f}\t{p.agreement}/{p.n_backbones}\t"
                              + " ".join(f"{b}={v}" for b, v in votes.items()))
        if json_out:
            Path(json_out).write_text(json.dumps({"model_version": version.pk, "results": rows}, indent=2))
