"""Differential count of smear field image files (they need not be in the database).

    python manage.py differential FIELD [FIELD ...] [--model ID|active] --json OUT

Runs the same detection (each field's scale measured on its red cells, or --microns-per-pixel),
cropping and classification as the portal (slides.pipeline and the model version's ensemble with
the lab's abstention settings) and writes:
{"cells": [{"field", "box": [x0, y0, x1, y1], "class", "confidence", "agreement": "k/n"}],
 "counts": {code: n}, "percentages": {code: p}, "intervals": {code: [lo, hi]},
 "platelets": {"per_field": [n, ...], "mean": m, "interval": [lo, hi]}, "red_cells": {"per_field": [n, ...]}}
Percentages and 95% intervals (Wilson) are over the leukocyte classes; platelets per field in field order, their
mean and its 95% interval over the fields (slides.platelets.stats); red cells per field.
"""
import json
import sys
import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from PIL import Image, UnidentifiedImageError

from annotations.imaging import ImageRejected, sanitize_image
from annotations.models import CellClass
from classifier.models import ModelVersion
from classifier.selectors import model_version_resolve, threshold_applied
from classifier.services import ensemble_load
from slides import pipeline
from slides.platelets import stats as platelet_stats
from slides.detection.platelets import find_platelets_and_red_cells
from slides.detection.scale import RED_CELL_DIAMETER_UM


class Command(BaseCommand):
    help = "Detect, crop and classify the white cells of smear fields; write the differential as JSON."

    def add_arguments(self, parser):
        parser.add_argument("fields", nargs="+", help="Field image files (JPEG, PNG, TIFF).")
        parser.add_argument("--model", default="active", help="Model version id, or 'active' (default).")
        parser.add_argument("--json", dest="out", required=True, help="Output file ('-' for standard output).")
        parser.add_argument("--method", choices=["wilson", "clopper-pearson"], default="wilson")
        parser.add_argument("--microns-per-pixel", type=float, default=None,
                            help="The fields' scale; default: measured on each field's red cells.")

    def handle(self, *args, **opts):
        try:
            version = model_version_resolve(opts["model"])
        except ModelVersion.DoesNotExist as exc:
            raise CommandError(str(exc)) from None
        try:
            model = ensemble_load(version)
        except FileNotFoundError as exc:
            raise CommandError(str(exc)) from None
        applied = threshold_applied(version)

        t0 = time.perf_counter()
        found = []  # (field name, FoundCell)
        platelet_counts, red_cell_counts = [], []  # per field
        for name in opts["fields"]:
            path = Path(name)
            if not path.is_file():
                raise CommandError(f"{name}: no such file.")
            try:
                # The same decoding as an upload (pixel limit, orientation, metadata dropped).
                clean = sanitize_image(path.read_bytes(), max_pixels=settings.UPLOAD_MAX_PIXELS,
                                       max_bytes=settings.UPLOAD_MAX_BYTES)
                import io

                image = Image.open(io.BytesIO(clean.png_bytes))
                image.load()
            except (ImageRejected, UnidentifiedImageError, OSError) as exc:
                raise CommandError(f"{name}: {getattr(exc, 'message', exc)}") from None
            try:
                result = pipeline.find_cells(image, microns_per_pixel=opts["microns_per_pixel"])
            except ValueError as exc:  # a scale outside the plausible range
                raise CommandError(str(exc)) from None
            for cell in result.cells:
                found.append((name, cell))
            # Platelets and red cells of the same field, at its scale, its white cells left out.
            extra = find_platelets_and_red_cells(image, white_cell_boxes=[c.box for c in result.cells],
                                                 red_cell_diameter_px=RED_CELL_DIAMETER_UM / result.scale.microns_per_pixel)
            platelet_counts.append(extra.platelet_count)
            red_cell_counts.append(extra.red_cells.count)
        t_detect = time.perf_counter() - t0

        t0 = time.perf_counter()
        to_classify = [i for i, (_, c) in enumerate(found) if c.needs_model]
        crops = [pipeline.as_stored(found[i][1].crop) for i in to_classify]
        preds = dict(zip(to_classify, model.predict(crops, threshold=applied.value, min_agreement=applied.min_agreement)))
        t_classify = time.perf_counter() - t0
        n_b = len(model.backbones)
        cells = []
        for i, (name, cell) in enumerate(found):
            p = preds.get(i)
            if p is not None:
                cells.append(pipeline.cell_record(field=name, box=cell.box, label=p.label, confidence=p.confidence,
                                                  agreement=p.agreement, n_backbones=p.n_backbones))
            else:
                cells.append(pipeline.cell_record(field=name, box=cell.box, label=cell.kind, confidence=cell.score,
                                                  agreement=0, n_backbones=n_b))
        leuko = CellClass.objects.filter(is_leukocyte=True).values_list("code", flat=True)
        result = pipeline.differential_json(cells, leukocyte_codes=list(leuko), method=opts["method"])
        result.update(platelet_stats.command_json(platelet_counts, red_cell_counts))
        text = json.dumps(result, indent=2)
        if opts["out"] == "-":
            sys.stdout.write(text + "\n")
        else:
            Path(opts["out"]).write_text(text + "\n")
            self.stderr.write(
                f"{len(cells)} cell(s) in {len(opts['fields'])} field(s) with model v{version.pk}: "
                f"detection {t_detect:.2f} s, classification {t_classify:.2f} s -> {opts['out']}"
            )
