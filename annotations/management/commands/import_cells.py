from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from annotations import services
from annotations.models import Split


class Command(BaseCommand):
    help = "Import an ImageFolder tree of cell images (folder name = class code) with their labels."

    def add_arguments(self, parser):
        parser.add_argument("directory")
        parser.add_argument("--split", choices=Split.values, default=Split.TRAIN)
        parser.add_argument("--labelled-by", dest="labelled_by", help="Username the labels are recorded under.")
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args, directory, split, labelled_by, no_progress, **options):
        if labelled_by:
            try:
                user = get_user_model().objects.get(username=labelled_by)
            except get_user_model().DoesNotExist:
                raise CommandError(f"No user named {labelled_by!r}.") from None
        else:
            user = services.import_user()
        bar = None

        def progress(done, total):
            nonlocal bar
            if no_progress:
                return
            if bar is None:
                bar = tqdm(total=total, unit="img", desc="Importing")
            bar.n = done
            bar.refresh()

        try:
            summary = services.cells_import_tree(root=directory, split=split, labelled_by=user, progress=progress)
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from None
        finally:
            if bar is not None:
                bar.close()
        for path, reason in summary.refused:
            self.stderr.write(f"refused {path}: {reason}")
        self.stdout.write(
            f"stored {summary.stored}, duplicates {summary.duplicates}, labels {summary.labels_created}, "
            f"refused {len(summary.refused)}"
        )
