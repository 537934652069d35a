"""REST API of the LIS interface (lab admins): destinations (list, add, change; audited), the outbox
(list, one message, send again; audited), the order log."""
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_serializer
from rest_framework import serializers, status
from rest_framework.generics import ListAPIView
from rest_framework.response import Response
from rest_framework.views import APIView

from leukoportal.api import validated_input
from leukoportal.roles import IsLabAdmin

from . import selectors, services
from .models import Destination, InboundMessage, OutboxMessage


class DestinationOutputSerializer(serializers.ModelSerializer):
    bearer_token_set = serializers.SerializerMethodField()

    class Meta:
        model = Destination
        fields = ["id", "name", "kind", "active", "host", "port", "tls", "sending_application", "sending_facility",
                  "receiving_application", "receiving_facility", "base_url", "bearer_token_set", "timeout_s",
                  "max_attempts", "backoff_s", "backoff_max_s", "preset", "created_at", "updated_at"]

    def get_bearer_token_set(self, obj) -> bool:
        return bool(obj.bearer_token)


class DestinationInputSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=60, required=False)
    kind = serializers.ChoiceField(choices=Destination.Kind.choices, required=False)
    active = serializers.BooleanField(required=False, allow_null=True, default=None)
    host = serializers.CharField(max_length=255, required=False, allow_blank=True)
    port = serializers.IntegerField(min_value=1, max_value=65535, required=False, allow_null=True)
    tls = serializers.BooleanField(required=False, allow_null=True, default=None)
    sending_application = serializers.CharField(max_length=20, required=False, allow_blank=True)
    sending_facility = serializers.CharField(max_length=20, required=False, allow_blank=True)
    receiving_application = serializers.CharField(max_length=20, required=False, allow_blank=True)
    receiving_facility = serializers.CharField(max_length=20, required=False, allow_blank=True)
    base_url = serializers.CharField(max_length=500, required=False, allow_blank=True)
    bearer_token = serializers.CharField(max_length=500, required=False, allow_blank=True, write_only=True)
    timeout_s = serializers.FloatField(min_value=0.1, required=False)
    max_attempts = serializers.IntegerField(min_value=1, required=False)
    backoff_s = serializers.FloatField(min_value=0.1, required=False)
    backoff_max_s = serializers.FloatField(min_value=0.1, required=False)


class DestinationListApi(ListAPIView):
    """Every destination (the bearer token only as set or not)."""

    permission_classes = [IsLabAdmin]
    serializer_class = DestinationOutputSerializer
    pagination_class = None

    def get_queryset(self):
        return selectors.destinations_list()


class DestinationCreateApi(APIView):
    """Add a destination: 201 with it; 400 naming the fields that are missing or wrong."""

    permission_classes = [IsLabAdmin]

    @extend_schema_serializer(component_name="LisDestinationCreateInput")
    class InputSerializer(DestinationInputSerializer):
        name = serializers.CharField(max_length=60)
        kind = serializers.ChoiceField(choices=Destination.Kind.choices)

    @extend_schema(request=InputSerializer, responses={201: DestinationOutputSerializer})
    def post(self, request):
        v = validated_input(self.InputSerializer, request.data)
        destination = services.destination_create(actor=request.user, **v)
        return Response(DestinationOutputSerializer(destination).data, status=status.HTTP_201_CREATED)


class DestinationUpdateApi(APIView):
    """Change a destination; fields left out stay (a blank bearer token keeps the one set)."""

    permission_classes = [IsLabAdmin]

    @extend_schema_serializer(component_name="LisDestinationUpdateInput")
    class InputSerializer(DestinationInputSerializer):
        pass

    @extend_schema(request=InputSerializer, responses={200: DestinationOutputSerializer})
    def patch(self, request, pk: int):
        destination = get_object_or_404(Destination, pk=pk)
        v = validated_input(self.InputSerializer, request.data)
        destination = services.destination_update(actor=request.user, destination=destination, **v)
        return Response(DestinationOutputSerializer(destination).data)


class MessageOutputSerializer(serializers.ModelSerializer):
    destination = serializers.CharField(source="destination.name")

    class Meta:
        model = OutboxMessage
        fields = ["id", "control_id", "destination", "slide", "accession", "version", "event", "state", "attempts",
                  "next_attempt_at", "last_attempt_at", "acknowledged_at", "answer_code", "answer", "error",
                  "created_at"]


class MessageListApi(ListAPIView):
    """The outbox, newest first (?state=queued|sent|acknowledged|failed, ?accession=, ?destination=<id>)."""

    permission_classes = [IsLabAdmin]
    serializer_class = MessageOutputSerializer
    pagination_class = None

    @extend_schema(parameters=[
        OpenApiParameter("state", OpenApiTypes.STR, enum=OutboxMessage.State.values),
        OpenApiParameter("accession", OpenApiTypes.STR), OpenApiParameter("destination", OpenApiTypes.INT)])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        params = self.request.query_params
        state = params.get("state") if params.get("state") in OutboxMessage.State.values else None
        destination = params.get("destination")
        return selectors.messages_list(state=state, accession=params.get("accession") or None,
                                       destination_id=int(destination) if (destination or "").isdigit() else None)


class MessageDetailApi(APIView):
    """One message, with the payload as sent."""

    permission_classes = [IsLabAdmin]

    class OutputSerializer(MessageOutputSerializer):
        class Meta(MessageOutputSerializer.Meta):
            fields = MessageOutputSerializer.Meta.fields + ["payload"]

    @extend_schema(responses={200: OutputSerializer})
    def get(self, request, pk: int):
        return Response(self.OutputSerializer(get_object_or_404(OutboxMessage, pk=pk)).data)


class MessageResendApi(APIView):
    """Queue a failed message again under a new control ID (audited); 400 for any other state."""

    permission_classes = [IsLabAdmin]

    @extend_schema(request=None, responses={200: MessageOutputSerializer})
    def post(self, request, pk: int):
        message = services.message_resend(actor=request.user, message=get_object_or_404(OutboxMessage, pk=pk))
        return Response(MessageOutputSerializer(message).data)


class InboundOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = InboundMessage
        fields = ["id", "sending_application", "sending_facility", "control_id", "message_type", "order_control",
                  "accession", "order_code", "collected_at", "wbc_count", "slide", "ack_code", "error", "received_at"]


class InboundListApi(ListAPIView):
    """The orders received, newest first (at most 500)."""

    permission_classes = [IsLabAdmin]
    serializer_class = InboundOutputSerializer
    pagination_class = None

    def get_queryset(self):
        return selectors.inbound_list(limit=500)
