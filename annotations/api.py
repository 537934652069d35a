"""REST API for images, taxonomy and labels. Thin: validate, call a service, respond."""
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import FileResponse, Http404
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.generics import ListAPIView, RetrieveAPIView
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from leukoportal.roles import LAB_ADMIN, IsLabAdmin, IsLabeller, has_role

from . import selectors, services
from .archives import ArchiveRejected
from .imaging import ImageRejected
from .models import CellClass, CellImage, Split


class ImageOutputSerializer(serializers.ModelSerializer):
    final_label = serializers.SlugRelatedField(slug_field="code", read_only=True)
    file_url = serializers.SerializerMethodField()

    class Meta:
        model = CellImage
        fields = ["id", "sha256", "width", "height", "original_format", "source", "split", "sample_code",
                  "batch", "uploaded_at", "final_label", "needs_review", "file_url"]

    def get_file_url(self, obj) -> str:
        return f"/api/images/{obj.pk}/file/"


class ImageListCreateApi(ListAPIView):
    """GET: list images (paginated). POST: upload one image (multipart field `file`)."""

    permission_classes = [IsLabeller]
    serializer_class = ImageOutputSerializer
    parser_classes = [MultiPartParser, FormParser]

    class InputSerializer(serializers.Serializer):
        file = serializers.FileField()
        split = serializers.ChoiceField(choices=Split.choices, default=Split.TRAIN)
        sample_code = serializers.CharField(required=False, allow_blank=True, max_length=40, default="")

    def get_queryset(self):
        split = self.request.query_params.get("split")
        if split and split not in Split.values:
            raise ValidationError({"split": f"Unknown split; use one of {', '.join(Split.values)}."})
        labelled = self.request.query_params.get("labelled")
        labelled_flag = {"true": True, "false": False}.get(labelled) if labelled else None
        return selectors.images_list(split=split, labelled=labelled_flag, source=self.request.query_params.get("source"))

    @extend_schema(request=InputSerializer, responses={201: ImageOutputSerializer, 200: ImageOutputSerializer})
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        split = data.validated_data["split"]
        if split != Split.TRAIN and not has_role(request.user, LAB_ADMIN):
            raise PermissionDenied("Only a lab admin can upload to the held-out set.")
        try:
            outcome = services.image_upload(
                data=data.validated_data["file"].read(), uploaded_by=request.user, split=split,
                sample_code=data.validated_data.get("sample_code", ""),
            )
        except ImageRejected as exc:
            return Response({"file": [exc.message], "code": exc.code}, status=status.HTTP_400_BAD_REQUEST)
        body = ImageOutputSerializer(outcome.image).data
        body["duplicate"] = not outcome.created
        return Response(body, status=status.HTTP_201_CREATED if outcome.created else status.HTTP_200_OK)


class ImageDetailApi(RetrieveAPIView):
    permission_classes = [IsLabeller]
    serializer_class = ImageOutputSerializer
    queryset = CellImage.objects.select_related("final_label")


class ImageFileApi(APIView):
    permission_classes = [IsLabeller]

    @extend_schema(responses={(200, "image/png"): bytes})
    def get(self, request, pk: int):
        image = get_object_or_404(CellImage, pk=pk)
        try:
            handle = image.file.open("rb")
        except FileNotFoundError:
            raise Http404("The image file is missing.") from None
        response = FileResponse(handle, content_type="image/png")
        response["Cache-Control"] = "private, max-age=31536000, immutable"
        return response


class BatchUploadApi(APIView):
    """POST a zip archive (field `file`) or many images (field `files`); answers the batch summary."""

    permission_classes = [IsLabeller]
    parser_classes = [MultiPartParser]

    class InputSerializer(serializers.Serializer):
        file = serializers.FileField(required=False)
        files = serializers.ListField(child=serializers.FileField(), required=False)
        split = serializers.ChoiceField(choices=Split.choices, default=Split.TRAIN)
        sample_code = serializers.CharField(required=False, allow_blank=True, max_length=40, default="")

    @extend_schema(request=InputSerializer, responses={201: inline_serializer("BatchSummary", {
        "batch": serializers.IntegerField(), "stored": serializers.ListField(), "duplicates": serializers.ListField(),
        "refused": serializers.ListField(), "counts": serializers.DictField()})})
    def post(self, request):
        payload = {k: v for k, v in request.data.items() if k != "files"}
        payload["files"] = request.FILES.getlist("files")
        data = self.InputSerializer(data=payload)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        if v["split"] != Split.TRAIN and not has_role(request.user, LAB_ADMIN):
            raise PermissionDenied("Only a lab admin can upload to the held-out set.")
        try:
            if v.get("file") is not None:
                summary = services.zip_upload(fileobj=v["file"], uploaded_by=request.user, channel="api",
                                              split=v["split"], sample_code=v.get("sample_code", ""))
            elif v.get("files"):
                summary = services.files_upload(files=[(f.name, f.read()) for f in v["files"]], uploaded_by=request.user,
                                                 channel="api", split=v["split"], sample_code=v.get("sample_code", ""))
            else:
                raise ValidationError({"file": ["Send a zip archive as `file` or images as `files`."]})
        except ArchiveRejected as exc:
            return Response({"file": [exc.message], "code": exc.code}, status=status.HTTP_400_BAD_REQUEST)
        return Response(summary.as_dict(), status=status.HTTP_201_CREATED)


class CellClassSerializer(serializers.ModelSerializer):
    class Meta:
        model = CellClass
        fields = ["code", "name", "hotkey", "display_order", "active", "is_abstain", "is_leukocyte"]
        read_only_fields = ["is_abstain"]


class CellClassListApi(ListAPIView):
    permission_classes = [IsLabeller]
    serializer_class = CellClassSerializer
    pagination_class = None
    queryset = CellClass.objects.all()


class CellClassSaveApi(APIView):
    """Create a class, or rename / reorder / deactivate one (lab admins). Past labels are kept."""

    permission_classes = [IsLabAdmin]

    class InputSerializer(serializers.Serializer):
        code = serializers.SlugField(max_length=40)
        name = serializers.CharField(max_length=100)
        hotkey = serializers.CharField(max_length=1, required=False, allow_blank=True, default="")
        display_order = serializers.IntegerField(min_value=0, max_value=10000, default=100)
        active = serializers.BooleanField(default=True)
        is_leukocyte = serializers.BooleanField(default=True)

    @extend_schema(request=InputSerializer, responses={200: CellClassSerializer})
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            obj = services.cell_class_save(actor=request.user, **data.validated_data)
        except DjangoValidationError as exc:
            raise ValidationError(exc.message_dict) from None
        return Response(CellClassSerializer(obj).data)
