"""Staff screens for meters and usage events. The events table holds millions of rows, so its
list never counts the whole table, filters only on indexed columns and loads no dropdowns."""

from django.contrib import admin
from django.core.paginator import Paginator
from django.utils.functional import cached_property

from metering.models import Meter, UsageEvent


class CappedCountPaginator(Paginator):
    """Counts at most a few pages beyond the one shown: COUNT(*) over a LIMITed subquery costs
    the same on a thousand rows as on a billion, so "Next" works without a full count."""

    def __init__(self, object_list, per_page, *, page_number: int = 1, pages_ahead: int = 5, **kwargs):
        super().__init__(object_list, per_page, **kwargs)
        self.cap = (max(page_number, 1) + pages_ahead) * per_page

    @cached_property
    def count(self):
        return self.object_list[: self.cap + 1].count()

    @property
    def is_capped(self) -> bool:
        return self.count > self.cap


@admin.register(Meter)
class MeterAdmin(admin.ModelAdmin):
    list_display = ["code", "name", "aggregation_type", "field_name", "organization", "created_at"]
    list_filter = ["organization", "aggregation_type"]
    list_select_related = ["organization"]
    search_fields = ["code", "name"]

    def get_readonly_fields(self, request, obj=None):
        # Events find their meter by code: renaming it would orphan every event already stored.
        return ["organization", "code"] if obj is not None else []


@admin.register(UsageEvent)
class UsageEventAdmin(admin.ModelAdmin):
    list_display = ["transaction_id", "code", "timestamp", "customer", "value", "value_text", "received_at"]
    # Filters on foreign keys only: each has its own index (and customer leads the period index).
    list_filter = ["organization"]
    list_select_related = ["customer"]
    raw_id_fields = ["organization", "customer", "subscription"]
    show_full_result_count = False
    list_per_page = 100
    ordering = ["-id"]
    paginator = CappedCountPaginator

    def get_paginator(self, request, queryset, per_page, orphans=0, allow_empty_first_page=True):
        try:
            page_number = int(request.GET.get("p", 1))
        except ValueError:
            page_number = 1
        return self.paginator(
            queryset,
            per_page,
            page_number=page_number,
            orphans=orphans,
            allow_empty_first_page=allow_empty_first_page,
        )

    def lookup_allowed(self, lookup, value, request=None):
        # One customer's or subscription's events (linked from their pages): both are indexed.
        if lookup in {"customer__id__exact", "subscription__id__exact"}:
            return True
        return super().lookup_allowed(lookup, value, request)

    def has_add_permission(self, request):
        return False  # events arrive through ingestion, which types their value

    def has_change_permission(self, request, obj=None):
        return False  # usage is a record of fact

    def has_delete_permission(self, request, obj=None):
        return False
