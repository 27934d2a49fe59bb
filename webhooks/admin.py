"""Staff screens for webhooks: endpoints (created through the API, which shows the secret once),
messages with their attempts and a replay action, and the attempts themselves. Read-only except an
endpoint's description and enabled flag: the URL is checked against SSRF by the API only."""

from django.contrib import admin, messages
from django.utils import timezone

from webhooks.models import WebhookAttempt, WebhookEndpoint, WebhookMessage
from webhooks.services import ReplayRefused, replay_message


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    list_display = ["url", "organization", "enabled", "events", "created_at"]
    list_filter = ["enabled", "organization"]
    list_select_related = ["organization"]
    search_fields = ["url", "description"]
    fields = [
        "organization",
        "url",
        "events",
        "description",
        "enabled",
        "disabled_reason",
        "previous_secret_expires_at",
        "created_at",
        "updated_at",
    ]
    readonly_fields = [
        "organization",
        "url",
        "events",
        "disabled_reason",
        "previous_secret_expires_at",
        "created_at",
        "updated_at",
    ]

    def has_add_permission(self, request):
        return False


class AttemptInline(admin.TabularInline):
    model = WebhookAttempt
    fields = ["attempted_at", "outcome", "status_code", "duration_ms", "response_excerpt", "error"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    ordering = ["attempted_at", "id"]

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(WebhookMessage)
class WebhookMessageAdmin(admin.ModelAdmin):
    list_display = [
        "webhook_id",
        "event_type",
        "object_id",
        "endpoint",
        "status",
        "attempt_count",
        "created_at",
    ]
    list_filter = ["status", "event_type"]
    list_select_related = ["endpoint"]
    search_fields = ["webhook_id"]
    readonly_fields = [
        "endpoint",
        "webhook_id",
        "event_type",
        "object_id",
        "status",
        "attempt_count",
        "next_attempt_at",
        "lease_expires_at",
        "created_at",
        "delivered_at",
        "body",
    ]
    inlines = [AttemptInline]
    actions = ["replay"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.action(description="Replay selected messages (same webhook-id)", permissions=["view"])
    def replay(self, request, queryset):
        now, replayed = timezone.now(), 0
        for message_id in queryset.values_list("id", flat=True):
            try:
                replay_message(message_id, now)
                replayed += 1
            except ReplayRefused as exc:
                self.message_user(request, exc.message, messages.WARNING)
        self.message_user(
            request, f"{replayed} message{'' if replayed == 1 else 's'} will be sent again.", messages.SUCCESS
        )


@admin.register(WebhookAttempt)
class WebhookAttemptAdmin(admin.ModelAdmin):
    list_display = ["message", "attempted_at", "outcome", "status_code", "duration_ms"]
    list_filter = ["outcome"]
    list_select_related = ["message"]
    readonly_fields = [
        "message",
        "attempted_at",
        "outcome",
        "status_code",
        "duration_ms",
        "response_excerpt",
        "error",
    ]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
