"""REST API for sources: labellers list them (an upload names one); lab admins add and change them."""
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema, extend_schema_serializer
from rest_framework import serializers, status
from rest_framework.generics import ListAPIView
from rest_framework.response import Response
from rest_framework.views import APIView

from leukoportal.api import validated_input
from leukoportal.roles import IsLabAdmin, IsLabeller

from . import selectors, services
from .models import Source


class SourceOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = Source
        fields = ["id", "name", "description", "active", "is_default", "created_at"]


class SourceListApi(ListAPIView):
    """Every source (?active=true|false), the default first named by ``is_default``."""

    permission_classes = [IsLabeller]
    serializer_class = SourceOutputSerializer
    pagination_class = None

    def get_queryset(self):
        active = {"true": True, "false": False}.get(self.request.query_params.get("active", ""))
        return selectors.sources_list(active=active)


class SourceCreateApi(APIView):
    """Add a source (lab admins): 201 with it; 400 when the name is missing or taken."""

    permission_classes = [IsLabAdmin]

    @extend_schema_serializer(component_name="SourceCreateInput")
    class InputSerializer(serializers.Serializer):
        name = serializers.CharField(max_length=60)
        description = serializers.CharField(max_length=300, required=False, allow_blank=True, default="")

    @extend_schema(request=InputSerializer, responses={201: SourceOutputSerializer})
    def post(self, request):
        v = validated_input(self.InputSerializer, request.data)
        source = services.source_create(actor=request.user, **v)
        return Response(SourceOutputSerializer(source).data, status=status.HTTP_201_CREATED)


class SourceUpdateApi(APIView):
    """Rename, describe, (de)activate a source or make it the default (lab admins); fields left out stay."""

    permission_classes = [IsLabAdmin]

    @extend_schema_serializer(component_name="SourceUpdateInput")
    class InputSerializer(serializers.Serializer):
        name = serializers.CharField(max_length=60, required=False)
        description = serializers.CharField(max_length=300, required=False, allow_blank=True)
        active = serializers.BooleanField(required=False, default=None, allow_null=True)
        make_default = serializers.BooleanField(required=False, default=False)

    @extend_schema(request=InputSerializer, responses={200: SourceOutputSerializer})
    def post(self, request, pk: int):
        source = get_object_or_404(Source, pk=pk)
        v = validated_input(self.InputSerializer, request.data)
        source = services.source_update(actor=request.user, source=source, **v)
        return Response(SourceOutputSerializer(source).data)
