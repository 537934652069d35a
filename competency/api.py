"""REST API of the competency room. Thin: validate, call a service or a selector, respond.

Who sees what: a taker sees their own tests and results only (cells without reference labels until
they submit); reviewers see the lab's summary; lab admins build, assign, sign off and see everything."""
from django.contrib.auth import get_user_model
from django.shortcuts import get_object_or_404
from django.urls import reverse
from drf_spectacular.utils import extend_schema, extend_schema_serializer, inline_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import PermissionDenied
from rest_framework.response import Response
from rest_framework.views import APIView

from annotations.models import CellClass
from classifier.models import ModelVersion
from leukoportal.api import validated_input
from leukoportal.roles import LAB_ADMIN, IsLabAdmin, IsLabeller, IsReviewer, has_role
from sources.models import Source

from . import selectors, services
from .models import Assignment, ProficiencyTest


class TestOutputSerializer(serializers.ModelSerializer):
    created_by = serializers.CharField(source="created_by.username")
    acquisition_source = serializers.SlugRelatedField(slug_field="name", read_only=True)
    frozen = serializers.BooleanField(read_only=True)

    class Meta:
        model = ProficiencyTest
        fields = ["id", "name", "version", "previous", "size", "class_minimums", "acquisition_source", "decided_from",
                  "decided_to", "include_heldout", "seed", "pass_min_agreement", "critical_classes", "created_by",
                  "created_at", "frozen", "frozen_at"]


class TestCellSerializer(serializers.Serializer):
    position = serializers.IntegerField()
    image = serializers.IntegerField(source="image_id")
    reference = serializers.CharField(source="reference.code")
    decided_by = serializers.CharField()


class TestDetailSerializer(TestOutputSerializer):
    cells = TestCellSerializer(many=True, read_only=True)

    class Meta(TestOutputSerializer.Meta):
        fields = TestOutputSerializer.Meta.fields + ["cells"]


class AssignmentOutputSerializer(serializers.ModelSerializer):
    person = serializers.CharField(source="person.username")
    test_name = serializers.CharField(source="test.name")
    test_version = serializers.IntegerField(source="test.version")
    state = serializers.SerializerMethodField()
    signed_off_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = Assignment
        fields = ["id", "test", "test_name", "test_version", "person", "due_date", "status", "state", "started_at",
                  "submitted_at", "passed", "result", "signed_off_by", "signed_off_at", "sign_off_note"]

    def get_state(self, obj) -> str:
        return selectors.assignment_state(obj)


class DecidedCountsApi(APIView):
    """Each class with its number of decided cells (agreed or adjudicated) a test may draw from (lab admins)."""

    permission_classes = [IsLabAdmin]

    @extend_schema(responses={200: inline_serializer("DecidedCount", {
        "code": serializers.CharField(), "name": serializers.CharField(), "decided": serializers.IntegerField()},
        many=True)})
    def get(self, request):
        include_heldout = request.query_params.get("include_heldout") == "true"
        return Response(selectors.decided_counts(include_heldout=include_heldout))


class TestListApi(APIView):
    """Every test (reviewers and lab admins)."""

    permission_classes = [IsReviewer]

    @extend_schema(responses={200: TestOutputSerializer(many=True)})
    def get(self, request):
        return Response(TestOutputSerializer(selectors.tests_list(), many=True).data)


class TestCreateApi(APIView):
    """Build a test: a seeded, stratified draw of decided cells (lab admins). 400 names each class with
    too few decided cells; nothing is stored then."""

    permission_classes = [IsLabAdmin]

    @extend_schema_serializer(component_name="CompetencyTestInput")
    class InputSerializer(serializers.Serializer):
        name = serializers.CharField(max_length=120)
        size = serializers.IntegerField(min_value=1, max_value=services.MAX_SIZE)
        class_minimums = serializers.DictField(child=serializers.IntegerField(min_value=0), required=False, default=dict)
        critical_classes = serializers.ListField(child=serializers.CharField(), required=False, default=list)
        pass_min_agreement = serializers.FloatField(min_value=0, max_value=1, default=0.9)
        acquisition_source = serializers.PrimaryKeyRelatedField(queryset=Source.objects.all(), required=False,
                                                                allow_null=True, default=None)
        decided_from = serializers.DateField(required=False, allow_null=True, default=None)
        decided_to = serializers.DateField(required=False, allow_null=True, default=None)
        include_heldout = serializers.BooleanField(default=False)
        seed = serializers.IntegerField(required=False, allow_null=True, default=None, min_value=0)

    @extend_schema(request=InputSerializer, responses={201: TestDetailSerializer})
    def post(self, request):
        v = validated_input(self.InputSerializer, request.data)
        test = services.test_create(actor=request.user, **v)
        return Response(TestDetailSerializer(test).data, status=status.HTTP_201_CREATED)


class TestDetailApi(APIView):
    """One test with its cells and their reference labels (lab admins)."""

    permission_classes = [IsLabAdmin]

    @extend_schema(responses={200: TestDetailSerializer})
    def get(self, request, pk: int):
        test = get_object_or_404(ProficiencyTest, pk=pk)
        if test.assignments.filter(person=request.user).exclude(status=Assignment.Status.SUBMITTED).exists():
            raise PermissionDenied("You are sitting this test: its cells and reference labels stay hidden until you "
                                   "submit it.")
        return Response(TestDetailSerializer(test).data)


class TestAssignApi(APIView):
    """Assign a test to people with a due date (lab admins); the first assignment freezes the test."""

    permission_classes = [IsLabAdmin]

    @extend_schema_serializer(component_name="CompetencyAssignInput")
    class InputSerializer(serializers.Serializer):
        people = serializers.ListField(child=serializers.CharField(), min_length=1, help_text="User names.")
        due_date = serializers.DateField()

    @extend_schema(request=InputSerializer, responses={201: AssignmentOutputSerializer(many=True)})
    def post(self, request, pk: int):
        test = get_object_or_404(ProficiencyTest, pk=pk)
        v = validated_input(self.InputSerializer, request.data)
        users = {u.username: u for u in get_user_model().objects.filter(username__in=v["people"], is_active=True)}
        unknown = sorted(set(v["people"]) - set(users))
        if unknown:
            raise serializers.ValidationError({"people": f"Unknown user(s): {', '.join(unknown)}."})
        made = services.test_assign(actor=request.user, test=test, people=list(users.values()), due_date=v["due_date"])
        return Response(AssignmentOutputSerializer(made, many=True).data, status=status.HTTP_201_CREATED)


class TestNewVersionApi(APIView):
    """Draw the test's definition again as its next version (lab admins)."""

    permission_classes = [IsLabAdmin]

    @extend_schema(request=None, responses={201: TestDetailSerializer})
    def post(self, request, pk: int):
        test = services.test_new_version(actor=request.user, test=get_object_or_404(ProficiencyTest, pk=pk))
        return Response(TestDetailSerializer(test).data, status=status.HTTP_201_CREATED)


class ModelSittingSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    test = serializers.IntegerField(source="test_id")
    model_version = serializers.IntegerField(source="model_version_id")
    model_status = serializers.CharField()
    result = serializers.JSONField(allow_null=True, help_text="None while cells wait for the model's calls.")


class ModelSitApi(APIView):
    """The active model or a candidate version sits the test (lab admins); its referrals count as not
    correct and are reported apart. ``result`` stays null while cells wait for its calls: post again."""

    permission_classes = [IsLabAdmin]

    @extend_schema_serializer(component_name="CompetencyModelSitInput")
    class InputSerializer(serializers.Serializer):
        model_version = serializers.PrimaryKeyRelatedField(queryset=ModelVersion.objects.all())

    @extend_schema(request=InputSerializer, responses={200: ModelSittingSerializer})
    def post(self, request, pk: int):
        test = get_object_or_404(ProficiencyTest, pk=pk)
        v = validated_input(self.InputSerializer, request.data)
        sitting = services.model_sit(actor=request.user, test=test, model_version=v["model_version"])
        return Response(ModelSittingSerializer(sitting).data)


def _assignment_for(request, pk: int) -> Assignment:
    """The assignment, for its taker or a lab admin; anyone else gets 404 (not even its existence)."""
    assignment = get_object_or_404(Assignment.objects.select_related("test", "person"), pk=pk)
    if assignment.person_id != request.user.pk and not has_role(request.user, LAB_ADMIN):
        raise PermissionDenied("Only the taker and the lab admins see this test's results.")
    return assignment


class AssignmentListApi(APIView):
    """The caller's own tests; ``?all=true`` every person's (lab admins)."""

    permission_classes = [IsLabeller]

    @extend_schema(responses={200: AssignmentOutputSerializer(many=True)})
    def get(self, request):
        if request.query_params.get("all") == "true":
            if not has_role(request.user, LAB_ADMIN):
                raise PermissionDenied("Only lab admins see everyone's results.")
            qs = selectors.assignments_all()
        else:
            qs = selectors.assignments_of(person=request.user)
        return Response(AssignmentOutputSerializer(qs, many=True).data)


class ExamCellSerializer(serializers.Serializer):
    position = serializers.IntegerField()
    image = serializers.IntegerField()
    thumb_url = serializers.CharField()
    answer = serializers.CharField(allow_null=True)
    unsure = serializers.BooleanField()
    seconds = serializers.FloatField()
    reference = serializers.CharField(allow_null=True, help_text="Null until the attempt is submitted.")


class AssignmentDetailApi(APIView):
    """One assignment (its taker or a lab admin): the cells with the taker's answers; reference labels
    and the score only once it is submitted."""

    permission_classes = [IsLabeller]

    @extend_schema(responses={200: inline_serializer("CompetencyAssignmentDetail", {
        "assignment": AssignmentOutputSerializer(), "cells": ExamCellSerializer(many=True)})})
    def get(self, request, pk: int):
        assignment = _assignment_for(request, pk)
        show = assignment.status == Assignment.Status.SUBMITTED
        answers = {a.cell_id: a for a in assignment.answers.select_related("answer")}
        cells = []
        for c in selectors.test_cells(test=assignment.test):
            a = answers.get(c.pk)
            cells.append({"position": c.position, "image": c.image_id,
                          "thumb_url": reverse("annotations:image_thumb", args=[c.image_id]),
                          "answer": a.answer.code if a and a.answer_id else None, "unsure": bool(a and a.unsure),
                          "seconds": a.seconds if a else 0.0, "reference": c.reference.code if show else None})
        return Response({"assignment": AssignmentOutputSerializer(assignment).data,
                         "cells": ExamCellSerializer(cells, many=True).data})


class AnswerApi(APIView):
    """Save the taker's answer on one cell of their open test (the last answer counts); ``cell_class``
    null clears it. 409 once submitted."""

    permission_classes = [IsLabeller]
    conflicts = (services.CompetencyConflict,)

    @extend_schema_serializer(component_name="CompetencyAnswerInput")
    class InputSerializer(serializers.Serializer):
        image = serializers.IntegerField()
        cell_class = serializers.SlugRelatedField(slug_field="code", queryset=CellClass.objects.filter(active=True),
                                                  allow_null=True)
        unsure = serializers.BooleanField(default=False)
        seconds = serializers.FloatField(min_value=0, default=0)

    @extend_schema(request=InputSerializer, responses={200: inline_serializer("CompetencyAnswerSaved", {
        "image": serializers.IntegerField(), "answer": serializers.CharField(allow_null=True),
        "unsure": serializers.BooleanField(), "seconds": serializers.FloatField()})})
    def post(self, request, pk: int):
        assignment = get_object_or_404(Assignment, pk=pk)
        v = validated_input(self.InputSerializer, request.data)
        answer = services.answer_save(assignment=assignment, user=request.user, image_id=v["image"],
                                      cell_class=v["cell_class"], unsure=v["unsure"], seconds=v["seconds"])
        return Response({"image": v["image"], "answer": answer.answer.code if answer.answer_id else None,
                         "unsure": answer.unsure, "seconds": answer.seconds})


class SubmitApi(APIView):
    """Submit the taker's one attempt: it is scored and closed (409 when already submitted)."""

    permission_classes = [IsLabeller]
    conflicts = (services.CompetencyConflict,)

    @extend_schema(request=None, responses={200: AssignmentOutputSerializer})
    def post(self, request, pk: int):
        assignment = services.attempt_submit(assignment=get_object_or_404(Assignment, pk=pk), user=request.user)
        return Response(AssignmentOutputSerializer(assignment).data)


class SignOffApi(APIView):
    """A lab admin signs a submitted attempt's record off (409 when not submitted or signed already)."""

    permission_classes = [IsLabAdmin]
    conflicts = (services.CompetencyConflict,)

    @extend_schema_serializer(component_name="CompetencySignOffInput")
    class InputSerializer(serializers.Serializer):
        note = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")

    @extend_schema(request=InputSerializer, responses={200: AssignmentOutputSerializer})
    def post(self, request, pk: int):
        v = validated_input(self.InputSerializer, request.data)
        assignment = services.attempt_sign_off(assignment=get_object_or_404(Assignment, pk=pk), actor=request.user,
                                               note=v["note"])
        return Response(AssignmentOutputSerializer(assignment).data)


class SummaryApi(APIView):
    """The lab's summary (reviewers and lab admins): counts due, overdue, passed, failed; each
    assignment's state; the classes the staff confuse most, across people."""

    permission_classes = [IsReviewer]

    @extend_schema(responses={200: inline_serializer("CompetencySummary", {
        "counts": serializers.DictField(child=serializers.IntegerField()),
        "assignments": inline_serializer("CompetencySummaryRow", {
            "id": serializers.IntegerField(), "person": serializers.CharField(), "test": serializers.CharField(),
            "due_date": serializers.DateField(), "state": serializers.CharField(),
            "agreement": serializers.FloatField(allow_null=True)}, many=True),
        "confusions": inline_serializer("CompetencyConfusion", {
            "reference": serializers.CharField(), "called": serializers.CharField(),
            "count": serializers.IntegerField()}, many=True)})})
    def get(self, request):
        s = selectors.lab_summary()
        rows = [{"id": a.pk, "person": a.person.username, "test": str(a.test), "due_date": a.due_date,
                 "state": a.state, "agreement": a.result["agreement"] if a.result else None} for a in s["assignments"]]
        return Response({"counts": s["counts"], "assignments": rows, "confusions": s["confusions"]})
