from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from annotations import exports
from classifier.ml.io import atomic_write


class Command(BaseCommand):
    help = ("Export cells as a zip: an ImageFolder tree of the stored de-identified images (<class code>/<sha256>.png), "
            "manifest.csv (every reading, the final class and how it was decided) and classes.csv. Audited.")

    def add_arguments(self, parser):
        parser.add_argument("output", help="The zip file to write (written whole, then moved into place).")
        parser.add_argument("--split", choices=["all", "train", "heldout"], default="all")
        parser.add_argument("--status", choices=exports.CellSelection.STATUSES, default="final",
                            help="final: cells with a final class; adjudicated: decided by a reviewer; "
                                 "all: also the undecided ones (folder undecided/).")
        parser.add_argument("--classes", default="", help="Class codes, comma-separated (default: every class).")
        parser.add_argument("--source", dest="sources", default="cell,slide_cell",
                            help="cell (uploads) and/or slide_cell (cells verified on slides), comma-separated.")
        parser.add_argument("--from", dest="start", help="First date (YYYY-MM-DD), inclusive.")
        parser.add_argument("--to", dest="end", help="Last date (YYYY-MM-DD), inclusive.")
        parser.add_argument("--date-field", choices=exports.CellSelection.DATE_FIELDS, default="uploaded",
                            help="Whether the dates are of the upload or of the final decision.")
        parser.add_argument("--include-reader-names", dest="include_names", action="store_true",
                            help="User names instead of pseudonymous reader ids.")
        parser.add_argument("--include-accession-codes", dest="include_accessions", action="store_true",
                            help="Sample and accession codes (left out by default).")
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args, output, no_progress, **options):
        arguments = {k: options[k] for k in ("split", "status", "classes", "sources", "start", "end", "date_field",
                                             "include_names", "include_accessions")}
        bar = None

        def progress(done, total):
            nonlocal bar
            if no_progress:
                return
            if bar is None:
                bar = tqdm(total=total, unit="file", desc="Exporting")
            bar.update(done - bar.n)  # redrawn at most every 0.1 s

        try:
            selection = exports.cell_selection_clean(**arguments)
            export = exports.cells_export(selection=selection, actor=None, channel="cli", progress=progress)
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from None
        target = Path(output)

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as out:
                for chunk in export.chunks:
                    out.write(chunk)

        try:
            atomic_write(target, write, suffix=".part")
        finally:
            if bar is not None:
                bar.close()
        c = export.counts
        self.stdout.write(f"exported {c['images']} cells, {c['readings']} readings, {c['bytes']} bytes to {target} "
                          f"(manifest sha256 {c['manifest_sha256']})")
