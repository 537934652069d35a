"""REST API for evaluations, agreement over time and the retraining schedule. Thin views."""
from django.http import Http404
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema, extend_schema_field, extend_schema_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.generics import ListAPIView
from rest_framework.response import Response
from rest_framework.views import APIView

from annotations.models import LabSettings, Source
from classifier.models import ModelVersion
from leukoportal.api import validated_input
from leukoportal.roles import IsLabAdmin, IsReviewer

from . import learning_curve, selectors, services
from .models import Evaluation


class EvaluationOutputSerializer(serializers.ModelSerializer):
    overall_accuracy = serializers.SerializerMethodField()

    class Meta:
        model = Evaluation
        fields = ["id", "model_version", "status", "trigger", "n_cells", "snapshot_hash", "threshold", "min_agreement",
                  "overall_accuracy", "error", "created_at", "finished_at"]

    @extend_schema_field(serializers.FloatField(read_only=True, allow_null=True))
    def get_overall_accuracy(self, obj) -> float | None:
        if hasattr(obj, "vote_overall_accuracy"):  # a list's rows (selectors.evaluations_summary_list)
            return obj.vote_overall_accuracy
        return obj.overall_accuracy


class EvaluationListApi(ListAPIView):
    """Evaluations of model versions on the held-out split, newest first (reviewers and lab admins)."""

    permission_classes = [IsReviewer]
    serializer_class = EvaluationOutputSerializer

    def get_queryset(self):
        version = self.request.query_params.get("model_version")
        if version and not version.isdigit():
            raise ValidationError({"model_version": "Give a model version id."})
        return selectors.evaluations_summary_list(model_version_id=int(version) if version else None)


class EvaluationRequestApi(APIView):
    """Queue an evaluation of a model version on the current held-out snapshot (lab admins)."""

    permission_classes = [IsLabAdmin]

    class InputSerializer(serializers.Serializer):
        model_version = serializers.IntegerField()

    @extend_schema(request=InputSerializer, responses={202: EvaluationOutputSerializer})
    def post(self, request):
        v = validated_input(self.InputSerializer, request.data)
        version = ModelVersion.objects.filter(pk=v["model_version"]).first()
        if version is None:
            raise ValidationError({"model_version": "No such model version."})
        evaluation = services.evaluation_request(model_version=version, user=request.user, trigger="api")
        return Response(EvaluationOutputSerializer(evaluation).data, status=status.HTTP_202_ACCEPTED)


class EvaluationDetailApi(APIView):
    """One evaluation with every figure (``?cells=true`` adds the per-cell readings)."""

    permission_classes = [IsReviewer]

    def get(self, request, pk: int):
        evaluation = get_object_or_404(Evaluation, pk=pk)
        data = EvaluationOutputSerializer(evaluation).data
        results = dict(evaluation.results or {})
        if request.query_params.get("cells") != "true":
            results.pop("cells", None)
        if results.get("vote"):
            results["table_ii"] = selectors.confusion_table_ii(evaluation, "vote")
            results["table_ii"].pop("rows_with_labels", None)
        data["results"] = results
        return Response(data)


class EvaluationTableApi(APIView):
    """One table of an evaluation: summary, per_class, confusion, abstention, baselines, cells, history."""

    permission_classes = [IsReviewer]

    def get(self, request, pk: int, table: str):
        evaluation = get_object_or_404(Evaluation, pk=pk, status=Evaluation.Status.SUCCEEDED)
        if table not in selectors.TABLES:
            raise Http404(f"Unknown table; use one of {', '.join(selectors.TABLES)}.")
        model = request.query_params.get("model") or "vote"
        if model not in dict(selectors.model_names(evaluation)):
            raise ValidationError({"model": f"Unknown classifier; use one of "
                                            f"{', '.join(k for k, _ in selectors.model_names(evaluation))}."})
        t = selectors.evaluation_table(evaluation, table, model)
        return Response(dict(t, records=[dict(zip(t["columns"], row)) for row in t["rows"]]))


class AgreementApi(APIView):
    """Agreement of the model with the experts' final class, per class by week and by model version."""

    permission_classes = [IsReviewer]

    class InputSerializer(serializers.Serializer):
        weeks = serializers.IntegerField(min_value=1, max_value=520, default=26)
        model_version = serializers.IntegerField(required=False)
        source = serializers.ChoiceField(choices=Source.choices, required=False)

    @extend_schema(parameters=[InputSerializer])
    def get(self, request):
        v = validated_input(self.InputSerializer, request.query_params)
        result = selectors.agreement_over_time(weeks=v["weeks"], model_version_id=v.get("model_version"),
                                               source=v.get("source"))
        for part in result.values():
            for row in part["rows"]:
                row["key"] = row["key"].date().isoformat() if hasattr(row["key"], "date") else row["key"]
        return Response(result)


class SourceLearningCurveApi(APIView):
    """Each source's learning curve: per model version, the verified cells of that source it did not
    train on, the share it referred, the accuracy of its accepted calls, its accepted-and-wrong share and
    its best guess's accuracy on the referred cells (shares are null where nothing was counted)."""

    permission_classes = [IsReviewer]

    def get(self, request):
        return Response({"sources": learning_curve.source_learning_curves()})


def _retrain_schedule() -> dict:
    task = services.retrain_periodic_task()
    return {"enabled": task.enabled, "hour": task.crontab.hour, "minute": task.crontab.minute,
            "timezone": str(task.crontab.timezone), "min_new_labels": LabSettings.get().retrain_min_new_labels,
            "new_final_labels": services.new_final_labels_count(),
            "last_run_at": task.last_run_at}


class RetrainScheduleApi(APIView):
    """The nightly retraining schedule (lab admins)."""

    permission_classes = [IsLabAdmin]

    def get(self, request):
        return Response(_retrain_schedule())


class RetrainScheduleUpdateApi(APIView):
    """Change the nightly retraining schedule (hour, minute, enabled, min_new_labels). Lab admins."""

    permission_classes = [IsLabAdmin]

    @extend_schema_serializer(component_name="RetrainScheduleApiInput")
    class InputSerializer(serializers.Serializer):
        hour = serializers.IntegerField(min_value=0, max_value=23)
        minute = serializers.IntegerField(min_value=0, max_value=59)
        enabled = serializers.BooleanField()
        min_new_labels = serializers.IntegerField(min_value=1, max_value=1_000_000)

    @extend_schema(request=InputSerializer)
    def post(self, request):
        v = validated_input(self.InputSerializer, request.data)
        services.retrain_schedule_update(actor=request.user, **v)
        return Response(_retrain_schedule())
