from django.core.management.base import BaseCommand, CommandError

from annotations.audit import audit_record
from annotations.models import AuditAction


class Command(BaseCommand):
    help = "Put an offline copy of a backbone's ImageNet weights where the torch cache expects it (sha256 checked)."

    def add_arguments(self, parser):
        parser.add_argument("backbone")
        parser.add_argument("file")

    def handle(self, *args, backbone, file, **options):
        from classifier.ml import registry

        try:
            dest = registry.import_weights(backbone, file)
        except KeyError as exc:
            raise CommandError(str(exc).strip("'\"")) from None
        except (FileNotFoundError, registry.WeightsChecksumError, RuntimeError, ValueError) as exc:
            raise CommandError(f"{backbone}: {exc}") from None
        audit_record(actor=None, action=AuditAction.WEIGHTS_IMPORT, target=("Backbone", backbone), after={"path": str(dest)})
        self.stdout.write(f"{backbone}: weights installed at {dest}")
