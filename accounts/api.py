"""REST API of sessions: the lab's idle timeout (lab admins read and set it) and logging a user out everywhere."""
from django.contrib.auth import get_user_model
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema, extend_schema_serializer
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from leukoportal.api import validated_input
from leukoportal.roles import IsLabAdmin

from . import selectors, services
from .models import AccessSettings


class AccessSettingsOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = AccessSettings
        fields = ["idle_timeout_minutes", "idle_warning_minutes", "require_otp_for_signers", "updated_at"]


class AccessSettingsApi(APIView):
    """The lab's idle timeout and warning (lab admins). POST sets both (audited); 400 for a bad pair."""

    permission_classes = [IsLabAdmin]

    @extend_schema_serializer(component_name="AccessSettingsInput")
    class InputSerializer(serializers.Serializer):
        idle_timeout_minutes = serializers.IntegerField(min_value=2, max_value=720)
        idle_warning_minutes = serializers.IntegerField(min_value=1, max_value=30)
        require_otp_for_signers = serializers.BooleanField(required=False, default=None, allow_null=True)

    @extend_schema(responses=AccessSettingsOutputSerializer)
    def get(self, request):
        return Response(AccessSettingsOutputSerializer(selectors.access_settings_get()).data)

    @extend_schema(request=InputSerializer, responses=AccessSettingsOutputSerializer)
    def post(self, request):
        v = validated_input(self.InputSerializer, request.data)
        return Response(AccessSettingsOutputSerializer(services.access_settings_update(actor=request.user, **v)).data)


class LogoutEverywhereOutputSerializer(serializers.Serializer):
    sessions = serializers.IntegerField(help_text="Browser sessions ended.")
    tokens = serializers.IntegerField(help_text="API tokens revoked.")


class LogoutEverywhereApi(APIView):
    """End every session of a user and revoke their API token (lab admins; audited)."""

    permission_classes = [IsLabAdmin]

    @extend_schema(request=None, responses=LogoutEverywhereOutputSerializer)
    def post(self, request, pk: int):
        user = get_object_or_404(get_user_model(), pk=pk)
        return Response(services.sessions_end_for_user(user=user, actor=request.user))


class DirectoryGroupOutputSerializer(serializers.Serializer):
    group_dn = serializers.CharField()
    role = serializers.CharField()


class DirectoryGroupsOutputSerializer(serializers.Serializer):
    source = serializers.CharField(help_text="'environment' (LDAP_GROUP_* variables, read-only here) or 'lab settings'.")
    groups = DirectoryGroupOutputSerializer(many=True)


class DirectoryGroupsApi(APIView):
    """The directory group -> role mapping in force (lab admins). POST maps a group (role null removes
    its mapping; audited); 409 while the environment sets the mapping."""

    permission_classes = [IsLabAdmin]

    @extend_schema_serializer(component_name="DirectoryGroupInput")
    class InputSerializer(serializers.Serializer):
        group_dn = serializers.CharField(max_length=500)
        role = serializers.ChoiceField(choices=["labeller", "reviewer", "lab_admin"], allow_null=True)

    def _answer(self):
        mapping, source = selectors.directory_role_groups()
        return Response({"source": source, "groups": [{"group_dn": dn, "role": r} for dn, r in sorted(mapping.items())]})

    @extend_schema(responses=DirectoryGroupsOutputSerializer)
    def get(self, request):
        return self._answer()

    @extend_schema(request=InputSerializer, responses={200: DirectoryGroupsOutputSerializer})
    def post(self, request):
        v = validated_input(self.InputSerializer, request.data)
        if selectors.directory_role_groups()[1] == "environment":
            return Response({"detail": "The environment sets the directory mapping (LDAP_GROUP_* variables)."},
                            status=409)
        services.directory_group_role_set(actor=request.user, **v)
        return self._answer()
