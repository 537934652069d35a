"""A source: one microscope/camera set-up of the lab, named by the lab. Never deleted: deactivate it."""
from django.conf import settings
from django.db import IntegrityError, models, transaction
from django.db.models import Q
from django.db.models.functions import Lower

#: The name of the source made for the lab when none exists (the data migration, a fresh database).
DEFAULT_NAME = "Default"


class Source(models.Model):
    name = models.CharField(max_length=60, help_text="How the lab calls this microscope/camera (unique).")
    description = models.CharField(max_length=300, blank=True)
    active = models.BooleanField(default=True, help_text="Uploads and new slides may name it.")
    is_default = models.BooleanField(default=False, help_text="Uploads that name no source come from this one.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name", "id"]
        constraints = [
            models.UniqueConstraint(Lower("name"), name="source_name_unique"),
            models.UniqueConstraint(fields=["is_default"], condition=Q(is_default=True), name="one_default_source"),
            models.CheckConstraint(condition=Q(is_default=False) | Q(active=True), name="default_source_active"),
        ]

    def __str__(self):
        return self.name


def default_source_id() -> int:
    """The pk of the lab's default source: the default of every cell image's and slide's source, so
    that a row made without naming one (a test, an order from the LIS) still comes from a source.
    Made on first need where none exists (a database flushed by a test)."""
    pk = Source.objects.filter(is_default=True).values_list("pk", flat=True).first()
    if pk is not None:
        return pk
    try:
        with transaction.atomic():
            return Source.objects.create(name=DEFAULT_NAME, is_default=True).pk
    except IntegrityError:  # made a moment ago by another request
        return Source.objects.get(is_default=True).pk
