"""Staff screens for API keys: a new key is shown once, keys are revoked, never edited."""

from django import forms
from django.contrib import admin, messages
from django.template.response import TemplateResponse
from django.utils import timezone

from api.models import ApiKey
from api.services import create_api_key


class ApiKeyForm(forms.ModelForm):
    class Meta:
        model = ApiKey
        fields = ["organization", "name"]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["prefix", "name", "organization", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["organization"]
    list_select_related = ["organization"]
    search_fields = ["prefix", "name"]
    actions = ["revoke"]
    form = ApiKeyForm

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["organization", "name"]
        return ["organization", "name", "prefix", "created_at", "last_used_at", "revoked_at"]

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        return ["organization", "prefix", "created_at", "last_used_at", "revoked_at"]

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
            return
        api_key, key = create_api_key(form.cleaned_data["organization"], form.cleaned_data["name"])
        obj.pk, obj.prefix, obj.key_hash, obj.created_at = (
            api_key.pk,
            api_key.prefix,
            api_key.key_hash,
            api_key.created_at,
        )
        obj.shown_once = key

    def response_add(self, request, obj, post_url_continue=None):
        # The key is on this page and nowhere else: not in a message (those travel in a cookie),
        # not in the database (only its hash is stored).
        context = {
            **self.admin_site.each_context(request),
            "title": "API key created",
            "api_key": obj,
            "key": obj.shown_once,
            "opts": self.model._meta,
        }
        response = TemplateResponse(request, "admin/api/apikey/created.html", context)
        response["Cache-Control"] = "no-store"
        return response

    @admin.action(description="Revoke selected keys", permissions=["change"])
    def revoke(self, request, queryset):
        count = queryset.filter(revoked_at=None).update(revoked_at=timezone.now())
        self.message_user(request, f"Revoked {count} key{'' if count == 1 else 's'}.", messages.SUCCESS)
