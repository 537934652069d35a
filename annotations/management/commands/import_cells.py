from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from annotations import imports, services
from annotations.archives import ArchiveRejected
from annotations.models import Split


class Command(BaseCommand):
    help = ("Import cells: an ImageFolder tree of cell images (folder name = class code) with their labels, or an "
            "export of LeukoPortal (a zip, or its unpacked folder with manifest.csv) with its readings.")

    def add_arguments(self, parser):
        parser.add_argument("directory", help="An ImageFolder tree, or an export (.zip or unpacked folder).")
        parser.add_argument("--split", choices=Split.values, default=None,
                            help="The split of an ImageFolder tree (default train); an export carries its own.")
        parser.add_argument("--labelled-by", dest="labelled_by",
                            help="Username the labels are recorded under. For an export: every final class becomes "
                                 "one reading by this user (the export's own readings are not kept).")
        parser.add_argument("--create-readers", action="store_true",
                            help="Export: create an inactive account (no login, no role) for each reader who is not "
                                 "a user here, so that every reading keeps its reader.")
        parser.add_argument("--source", dest="acquisition_source", default=None,
                            help="The source (microscope/camera; its name or id, an active one) every new cell "
                                 "comes from; default: for an export, the source its manifest names for each cell "
                                 "(a name this portal does not know refuses the import), else the lab's default "
                                 "source.")
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args, directory, split, labelled_by, create_readers, no_progress, acquisition_source=None,
               **options):
        try:  # a name of no user refuses the import, audited as every refused import is
            user = imports.labelled_by_resolve(
                name=labelled_by or "", importer=None, channel="cli",
                kind="export" if imports.is_cell_export(directory) else "folder")
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from None
        bar = None

        def progress(done, total, desc="Importing"):
            nonlocal bar
            if no_progress:
                return
            if bar is None:
                bar = tqdm(total=total, unit="img", desc=desc)
            bar.update(done - bar.n)  # redrawn at most every 0.1 s

        try:
            if imports.is_cell_export(directory):
                if split:
                    raise CommandError("An export carries the split of each cell; --split applies to an "
                                       "ImageFolder tree only.")
                self._export(directory, user, create_readers, acquisition_source=acquisition_source,
                             progress=lambda stage, done, total: progress(done, total, "Checking"))
                return
            if create_readers:
                raise CommandError("--create-readers applies to an export (a zip or a folder with manifest.csv).")
            summary = services.cells_import_tree(root=directory, split=split or Split.TRAIN,
                                                 labelled_by=user or services.import_user(), progress=progress,
                                                 acquisition_source=acquisition_source)
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from None
        finally:
            if bar is not None:
                bar.close()
        for path, reason in summary.refused:
            self.stderr.write(f"refused {path}: {reason}")
        for path, message in summary.other_split:
            self.stderr.write(f"{path}: {message}")
        self.stdout.write(
            f"stored {summary.stored}, duplicates {summary.duplicates}, labels {summary.labels_created}, "
            f"refused {len(summary.refused)}"
        )

    def _export(self, path, user, create_readers, *, progress, acquisition_source=None):
        try:
            summary = imports.cells_import_export(
                source=path, importer=user or services.import_user(), channel="cli", create_readers=create_readers,
                labelled_by=user, progress=progress, max_entries=10_000_000, max_uncompressed=1 << 42,
                acquisition_source=acquisition_source)
        except imports.ImportRefused as exc:
            for problem in exc.problems:
                self.stderr.write(problem)
            raise CommandError(f"The export was refused ({len(exc.problems)} problem(s) above); nothing was "
                               "imported.") from None
        except ArchiveRejected as exc:
            raise CommandError(exc.message) from None
        for kept in summary.kept:
            self.stderr.write(f"kept manifest line {kept['line']} (cell {kept['sha256'][:12]}): {kept['reason']}")
        for cell in summary.redecided:
            self.stderr.write(f"manifest line {cell['line']} (cell {cell['sha256'][:12]}): {cell['reason']}")
        self.stdout.write(
            f"cells {summary.images_created} new, {summary.images_present} already here; readings "
            f"{summary.readings_created}, adjudications {summary.adjudications_created}, reader accounts created "
            f"{len(summary.readers_created)}, kept as here {len(summary.kept)}, re-encoded {summary.reencoded}")
