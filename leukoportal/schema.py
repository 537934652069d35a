"""OpenAPI schema generation tuned to this codebase's API views.

* Nested ``InputSerializer`` / ``OutputSerializer`` classes are named after the view they live in
  (``TrainingRunStartApiInput``), so that components of different views never collide.
* A plain APIView that answers a JSON document built by a selector is documented as a free-form
  object instead of being dropped from the schema.
"""
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from rest_framework.generics import GenericAPIView


class LeukoAutoSchema(AutoSchema):
    def get_serializer_name(self, serializer, direction):
        cls = serializer if isinstance(serializer, type) else type(serializer)
        parts = cls.__qualname__.split(".")
        if len(parts) > 1 and parts[-1] in ("InputSerializer", "OutputSerializer", "FilterSerializer"):
            return parts[-2] + parts[-1]
        return super().get_serializer_name(serializer, direction)

    def _get_serializer(self):
        view = self.view
        if (
            not isinstance(view, GenericAPIView)
            and not callable(getattr(view, "get_serializer", None))
            and not callable(getattr(view, "get_serializer_class", None))
            and not hasattr(view, "serializer_class")
        ):
            return OpenApiTypes.OBJECT
        return super()._get_serializer()
