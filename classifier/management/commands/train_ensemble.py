import sys
import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from classifier import services
from classifier.folders import folder_items
from classifier.ml.io import sha256_file


class Command(BaseCommand):
    help = "Train an ensemble on an ImageFolder tree and register a model version; prints its id on the last line."

    def add_arguments(self, parser):
        parser.add_argument("--data", required=True, help="ImageFolder tree: one folder per class code.")
        parser.add_argument("--ensemble", default=settings.CLASSIFIER_DEFAULT_ENSEMBLE, choices=["offline", "paper"])
        parser.add_argument("--mode", default="default", choices=["default", "frozen", "finetune"])
        parser.add_argument("--epochs", type=int, default=None)
        parser.add_argument("--activate", action="store_true", help="Make the new version the active one.")
        parser.add_argument("--seed", type=int, default=0)

    def handle(self, *args, data, ensemble, mode, epochs, activate, seed, **options):
        from classifier.ml import api

        pairs = folder_items(data)
        classes = sorted({code for _, code in pairs})
        if len(classes) < 2:
            raise CommandError("Training needs at least two class folders.")
        items = [api.TrainItem(path=p, sha256=sha256_file(p), label=code) for p, code in pairs]
        self.stderr.write(f"Training the {ensemble} ensemble ({mode}) on {len(items)} images in {len(classes)} classes")
        last = [0.0]

        def progress(info):
            now = time.monotonic()
            if now - last[0] < 2 and info.get("stage") != "done":
                return
            last[0] = now
            text = ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in info.items())
            sys.stderr.write(f"  {text}\n")

        out_dir = Path(settings.MODEL_DIR) / f"cli-{time.strftime('%Y%m%d-%H%M%S')}-{ensemble}-{mode}"
        t0 = time.time()
        try:
            result = api.train(
                items, classes=classes, ensemble=ensemble, mode=mode, epochs=epochs,
                cache_dir=Path(settings.FEATURE_CACHE_DIR), out_dir=out_dir, device=settings.CLASSIFIER_DEVICE,
                runtime=settings.CLASSIFIER_RUNTIME,
                progress=progress, seed=seed,
            )
        except api.MissingWeightsError as exc:
            raise CommandError(str(exc)) from None
        snapshot = {
            "source": "folder",
            "data": str(Path(data).resolve()),
            "items": [[str(p.relative_to(Path(data))), it.sha256, it.label] for (p, _), it in zip(pairs, items)],
        }
        version = services.model_version_from_training(result=result, ensemble=ensemble, mode=mode, snapshot=snapshot)
        if activate:
            services.model_version_activate(version=version, reason="promotion_cli")
        val = result.metrics.get("val_accuracy") or result.metrics.get("ensemble", {}).get("val_accuracy")
        self.stderr.write(
            f"Model version {version.pk} ({version.status}) trained in {time.time() - t0:.0f} s"
            + (f"; validation accuracy {val:.4f}" if isinstance(val, float) else "")
        )
        self.stdout.write(str(version.pk))
