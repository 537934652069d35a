"""REST API for model versions (promotion, rollback) and training runs. Thin: validate, call a service."""
from django.core.exceptions import ValidationError as DjangoValidationError
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.generics import ListAPIView, RetrieveAPIView
from rest_framework.response import Response
from rest_framework.views import APIView

from annotations.models import LabSettings
from leukoportal.api import Conflict, validated_input
from leukoportal.roles import IsLabAdmin, IsReviewer

from . import selectors, services
from .models import ModelVersion, TrainingRun
from .progress import training_run_status


class ModelVersionOutputSerializer(serializers.ModelSerializer):
    """``threshold``: what the version applies now (the lab's threshold when it set one, else the
    version's own); ``default_threshold``: the version's own (fitted on validation, or the
    conservative default; never 0), with ``threshold_source`` and ``threshold_why``."""

    training_cells = serializers.SerializerMethodField()
    gate = serializers.SerializerMethodField()
    threshold = serializers.SerializerMethodField()

    class Meta:
        model = ModelVersion
        fields = ["id", "status", "ensemble", "mode", "backbones", "classes", "checkpoint_sha256", "snapshot_hash",
                  "training_cells", "threshold", "default_threshold", "threshold_source", "threshold_why", "metrics",
                  "created_at", "activated_at", "gate"]

    def get_threshold(self, obj) -> dict:
        return selectors.threshold_applied(obj, lab=self.context.get("lab")).as_dict()

    def get_training_cells(self, obj) -> int:
        return len((obj.snapshot or {}).get("items", []))

    def get_gate(self, obj) -> dict | None:
        decision = next(iter(obj.gate_decisions.all()), None)  # the newest (ordered by -id), prefetched in lists
        if decision is None:
            return None
        return {"outcome": decision.outcome, "reasons": decision.reasons, "evaluation": decision.evaluation_id,
                "compared_with": decision.compared_with_id}


class ModelVersionListApi(ListAPIView):
    permission_classes = [IsReviewer]
    serializer_class = ModelVersionOutputSerializer
    queryset = ModelVersion.objects.order_by("-id").prefetch_related("gate_decisions")  # one query, not one a row

    def get_serializer_context(self):
        return dict(super().get_serializer_context(), lab=LabSettings.get())  # read once, not once a row


class ModelVersionDetailApi(RetrieveAPIView):
    permission_classes = [IsReviewer]
    serializer_class = ModelVersionOutputSerializer
    queryset = ModelVersion.objects.all()


class _ModelVersionSwitchApi(APIView):
    """Make a version active by a lab admin's explicit decision, audited with the reason.
    Needs ``{"confirm": true, "reason": "..."}``."""

    permission_classes = [IsLabAdmin]
    not_confirmed = ""

    class InputSerializer(serializers.Serializer):
        confirm = serializers.BooleanField()
        reason = serializers.CharField(max_length=500, help_text="Why (kept in the audit log).")

    def switch(self, *, version: ModelVersion, actor, reason: str) -> None:
        raise NotImplementedError

    @extend_schema(request=InputSerializer, responses={200: ModelVersionOutputSerializer})
    def post(self, request, pk: int):
        version = get_object_or_404(ModelVersion, pk=pk)
        v = validated_input(self.InputSerializer, request.data)
        if not v["confirm"]:
            raise ValidationError({"confirm": self.not_confirmed})
        self.switch(version=version, actor=request.user, reason=v["reason"])
        version.refresh_from_db()
        return Response(ModelVersionOutputSerializer(version).data)


class ModelVersionPromoteApi(_ModelVersionSwitchApi):
    """Activate a candidate explicitly, whatever the gate said (audited with the reason).
    Needs ``{"confirm": true, "reason": "..."}``."""

    not_confirmed = "Send confirm=true to promote this version."

    def switch(self, *, version, actor, reason):
        services.model_version_promote(version=version, actor=actor, reason=reason)


class ModelVersionRollbackApi(_ModelVersionSwitchApi):
    """Make a version that was active before (retired) active again, audited with the reason.
    Needs ``{"confirm": true, "reason": "..."}``."""

    not_confirmed = "Send confirm=true to make this version active again."

    def switch(self, *, version, actor, reason):
        services.model_version_rollback(version=version, actor=actor, reason=reason)


class TrainingRunOutputSerializer(serializers.Serializer):
    def to_representation(self, instance):
        return training_run_status(instance)


class TrainingRunListApi(ListAPIView):
    """Training runs, newest first, with their progress."""

    permission_classes = [IsLabAdmin]
    serializer_class = TrainingRunOutputSerializer

    def get_queryset(self):
        return selectors.training_runs_list()


class TrainingRunStartApi(APIView):
    """Start training (one run at a time); poll ``/api/training-runs/<id>/`` for progress."""

    permission_classes = [IsLabAdmin]
    conflicts = (services.TrainingBusy,)
    invalid = (ValueError,)

    class InputSerializer(serializers.Serializer):
        ensemble = serializers.CharField(max_length=20, default="offline")
        mode = serializers.ChoiceField(choices=["default", "frozen", "finetune"], default="default")
        epochs = serializers.IntegerField(min_value=1, max_value=500, required=False, allow_null=True, default=None)

    @extend_schema(request=InputSerializer)
    def post(self, request):
        v = validated_input(self.InputSerializer, request.data)
        run = services.training_run_start(user=request.user, trigger="api", **v)
        return Response(training_run_status(run), status=status.HTTP_201_CREATED)


class TrainingRunDetailApi(APIView):
    permission_classes = [IsLabAdmin]

    def get(self, request, pk: int):
        run = get_object_or_404(TrainingRun.objects.select_related("model_version"), pk=pk)
        return Response(training_run_status(run))


class TrainingRunCancelApi(APIView):
    permission_classes = [IsLabAdmin]

    @extend_schema(request=None)
    def post(self, request, pk: int):
        run = get_object_or_404(TrainingRun, pk=pk)
        if run.status not in (TrainingRun.Status.QUEUED, TrainingRun.Status.RUNNING):
            raise Conflict(f"Training run {run.pk} is {run.status}; nothing to cancel.")
        run = services.training_run_cancel(run=run, user=request.user)
        return Response(training_run_status(run))


class TrainingRunRetryApi(APIView):
    permission_classes = [IsLabAdmin]
    conflicts = (services.TrainingBusy, ValueError, DjangoValidationError)  # a run that cannot be retried

    @extend_schema(request=None)
    def post(self, request, pk: int):
        run = get_object_or_404(TrainingRun, pk=pk)
        new = services.training_run_retry(run=run, user=request.user, trigger="api")
        return Response(training_run_status(new), status=status.HTTP_201_CREATED)
