"""The webhook API (spec section 11): endpoints with their secret and its rotation, and the messages
with their delivery attempts and replay. Scoped to the caller's organization like every resource."""

import json

from django.db.models import Prefetch
from django.utils import timezone
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field, extend_schema_view
from rest_framework import generics, serializers, status
from rest_framework.response import Response

from api.errors import Conflict
from api.idempotency import idempotent
from api.serializers import StrictTypes
from api.views import (
    BAD_REQUEST,
    IDEMPOTENCY,
    IDEMPOTENCY_ERRORS,
    NOT_FOUND,
    UNAUTHORIZED,
    OrganizationScoped,
    ScopedListCreate,
)
from webhooks import services
from webhooks.events import ALL_EVENTS, EventType
from webhooks.models import WebhookAttempt, WebhookEndpoint, WebhookMessage

TAG = "webhooks"
HTTP_URL = {
    "type": "string",
    "maxLength": 2000,
    "pattern": r"^https?://[^\s/?#@]+([/?#]\S*)?$",
    "example": "https://example.com/billing-webhooks",
}


@extend_schema_field(HTTP_URL)
class HttpUrlField(serializers.CharField):
    pass


class WebhookEndpointSerializer(StrictTypes, serializers.ModelSerializer):
    url = HttpUrlField(
        max_length=2000,
        help_text="http(s) URL; refused when its host resolves to a loopback, private, link-local or "
        "other non-public address",
    )
    events = serializers.ListField(
        child=serializers.ChoiceField(choices=[ALL_EVENTS, *EventType.values]),
        min_length=1,
        max_length=len(EventType.values) + 1,
        help_text='Event types, or ["*"] for all',
    )

    class Meta:
        model = WebhookEndpoint
        fields = [
            "id",
            "url",
            "events",
            "description",
            "enabled",
            "disabled_reason",
            "previous_secret_expires_at",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "disabled_reason", "previous_secret_expires_at", "created_at", "updated_at"]


class WebhookEndpointWithSecretSerializer(WebhookEndpointSerializer):
    secret = serializers.CharField(
        read_only=True, help_text="whsec_ + base64 of 32 random bytes; shown only here, keep it"
    )

    class Meta(WebhookEndpointSerializer.Meta):
        fields = [*WebhookEndpointSerializer.Meta.fields, "secret"]
        read_only_fields = [*WebhookEndpointSerializer.Meta.read_only_fields, "secret"]


class WebhookAttemptSerializer(serializers.ModelSerializer):
    class Meta:
        model = WebhookAttempt
        fields = ["attempted_at", "outcome", "status_code", "duration_ms", "response_excerpt", "error"]
        read_only_fields = fields


class WebhookMessageSerializer(serializers.ModelSerializer):
    endpoint = serializers.IntegerField(source="endpoint_id")
    payload = serializers.SerializerMethodField()
    attempts = WebhookAttemptSerializer(many=True, read_only=True)

    class Meta:
        model = WebhookMessage
        fields = [
            "id",
            "webhook_id",
            "endpoint",
            "event_type",
            "object_id",
            "status",
            "attempt_count",
            "next_attempt_at",
            "delivered_at",
            "created_at",
            "payload",
            "attempts",
        ]
        read_only_fields = fields

    @extend_schema_field(
        {
            "type": "object",
            "nullable": True,
            "additionalProperties": {},
            "description": "The body sent: {type, timestamp, data}. null for an invoice run's message until "
            "a sender first claims it (it is rendered then, once)",
        }
    )
    def get_payload(self, message) -> dict | None:
        return json.loads(message.body) if message.body else None


class DeletedSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    deleted = serializers.BooleanField()


def endpoints_of(organization):
    return WebhookEndpoint.objects.filter(organization=organization)


@extend_schema_view(
    get=extend_schema(
        tags=[TAG],
        summary="List webhook endpoints",
        responses={
            200: WebhookEndpointSerializer(many=True),
            400: BAD_REQUEST,
            401: UNAUTHORIZED,
            404: NOT_FOUND,
        },
    ),
    post=extend_schema(
        tags=[TAG],
        summary="Create a webhook endpoint",
        description="201 with the endpoint's `secret`, shown only in this answer (and after a rotation).",
        parameters=[IDEMPOTENCY],
        request=WebhookEndpointSerializer,
        responses={
            201: WebhookEndpointWithSecretSerializer,
            400: BAD_REQUEST,
            401: UNAUTHORIZED,
            **IDEMPOTENCY_ERRORS,
        },
    ),
)
class WebhookEndpointList(ScopedListCreate):
    queryset = WebhookEndpoint.objects.all()
    serializer_class = WebhookEndpointSerializer

    @idempotent
    def post(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        data.pop("enabled", None)  # a new endpoint is enabled
        endpoint = services.create_endpoint(organization=self.organization(), **data)
        return Response(WebhookEndpointWithSecretSerializer(endpoint).data, status=status.HTTP_201_CREATED)


@extend_schema_view(
    get=extend_schema(
        tags=[TAG],
        summary="Read a webhook endpoint",
        responses={200: WebhookEndpointSerializer, 401: UNAUTHORIZED, 404: NOT_FOUND},
    ),
    patch=extend_schema(
        tags=[TAG],
        summary="Update a webhook endpoint",
        description="Any of url, events, description, enabled. Enabling an endpoint that a 410 disabled "
        "delivers the messages it kept pending.",
        responses={200: WebhookEndpointSerializer, 400: BAD_REQUEST, 401: UNAUTHORIZED, 404: NOT_FOUND},
    ),
    delete=extend_schema(
        tags=[TAG],
        summary="Delete a webhook endpoint",
        description="Its messages and their attempts go with it. The answer is JSON like every other.",
        responses={200: DeletedSerializer, 401: UNAUTHORIZED, 404: NOT_FOUND},
    ),
)
class WebhookEndpointDetail(OrganizationScoped, generics.RetrieveUpdateDestroyAPIView):
    queryset = WebhookEndpoint.objects.all()
    serializer_class = WebhookEndpointSerializer
    http_method_names = ["get", "patch", "delete", "head", "options"]

    def get_queryset(self):
        return endpoints_of(self.organization())

    def delete(self, request, *args, **kwargs):
        endpoint = self.get_object()
        deleted = {"id": endpoint.id, "deleted": True}
        endpoint.delete()
        return Response(DeletedSerializer(deleted).data)

    def patch(self, request, *args, **kwargs):
        endpoint = self.get_object()
        serializer = self.get_serializer(endpoint, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        endpoint = services.update_endpoint(endpoint, **serializer.validated_data)
        return Response(WebhookEndpointSerializer(endpoint).data)


class RotateSecret(OrganizationScoped, generics.GenericAPIView):
    queryset = WebhookEndpoint.objects.all()
    serializer_class = WebhookEndpointWithSecretSerializer

    def get_queryset(self):
        return endpoints_of(self.organization())

    @extend_schema(
        tags=[TAG],
        summary="Rotate an endpoint's secret",
        description="A new secret, shown only in this answer. The previous one stays valid for 24 hours: "
        "until `previous_secret_expires_at` every message carries both signatures.",
        request=None,
        parameters=[IDEMPOTENCY],
        responses={
            200: WebhookEndpointWithSecretSerializer,
            401: UNAUTHORIZED,
            404: NOT_FOUND,
            400: IDEMPOTENCY_ERRORS[400],
            409: IDEMPOTENCY_ERRORS[409],
            422: IDEMPOTENCY_ERRORS[422],
        },
    )
    @idempotent
    def post(self, request, *args, **kwargs):
        endpoint = services.rotate_secret(self.get_object().id, timezone.now())
        return Response(WebhookEndpointWithSecretSerializer(endpoint).data)


def messages_of(organization):
    return (
        WebhookMessage.objects.filter(endpoint__organization=organization)
        .prefetch_related(
            Prefetch("attempts", queryset=WebhookAttempt.objects.order_by("attempted_at", "id"))
        )
        .order_by("-created_at", "-id")
    )


@extend_schema_view(
    get=extend_schema(
        tags=[TAG],
        summary="List webhook messages",
        description="Newest first, each with its delivery attempts.",
        responses={
            200: WebhookMessageSerializer(many=True),
            400: BAD_REQUEST,
            401: UNAUTHORIZED,
            404: NOT_FOUND,
        },
    )
)
class WebhookMessageList(OrganizationScoped, generics.ListAPIView):
    queryset = WebhookMessage.objects.all()
    serializer_class = WebhookMessageSerializer

    def get_queryset(self):
        return messages_of(self.organization())


@extend_schema_view(
    get=extend_schema(
        tags=[TAG],
        summary="Read a webhook message",
        responses={200: WebhookMessageSerializer, 401: UNAUTHORIZED, 404: NOT_FOUND},
    )
)
class WebhookMessageDetail(OrganizationScoped, generics.RetrieveAPIView):
    queryset = WebhookMessage.objects.all()
    serializer_class = WebhookMessageSerializer

    def get_queryset(self):
        return messages_of(self.organization())


class RetryMessage(OrganizationScoped, generics.GenericAPIView):
    queryset = WebhookMessage.objects.all()
    serializer_class = WebhookMessageSerializer

    def get_queryset(self):
        return messages_of(self.organization())

    @extend_schema(
        tags=[TAG],
        summary="Replay a webhook message",
        description="Sends the message again (same webhook-id and body) as soon as a sender runs, with "
        "the retry schedule started afresh. 409 while it is being delivered, or when its endpoint is "
        "disabled.",
        request=None,
        parameters=[IDEMPOTENCY],
        responses={
            202: WebhookMessageSerializer,
            400: IDEMPOTENCY_ERRORS[400],
            401: UNAUTHORIZED,
            404: NOT_FOUND,
            409: OpenApiResponse(
                IDEMPOTENCY_ERRORS[409].response,
                description="Being delivered now, its endpoint is disabled, or the Idempotency-Key is in use",
            ),
            422: IDEMPOTENCY_ERRORS[422],
        },
    )
    @idempotent
    def post(self, request, *args, **kwargs):
        message = self.get_object()
        try:
            services.replay_message(message.id, timezone.now())
        except services.ReplayRefused as exc:
            raise Conflict(exc.message) from exc
        return Response(
            WebhookMessageSerializer(self.get_queryset().get(id=message.id)).data,
            status=status.HTTP_202_ACCEPTED,
        )
