from datetime import UTC

from django import forms
from django_filters import rest_framework as filters
from django_filters.fields import IsoDateTimeField
from drf_spectacular.utils import extend_schema_field

from api.schema import ID_SCHEMA, MAX_ID
from invoicing.models import CreditNote, Invoice


@extend_schema_field(ID_SCHEMA)
class IdFilter(filters.NumberFilter):
    field_class = forms.IntegerField


class UTCDateTimeField(IsoDateTimeField):
    """Converted to UTC here: PostgreSQL refuses offsets beyond +/-15:59 that ISO 8601 allows."""

    def clean(self, value):
        value = super().clean(value)
        if value is None:
            return None
        try:
            return value.astimezone(UTC)
        except (OverflowError, ValueError):
            raise forms.ValidationError("is out of range once converted to UTC") from None


class UTCDateTimeFilter(filters.IsoDateTimeFilter):
    field_class = UTCDateTimeField


class NoEmptyValues(filters.FilterSet):
    def is_valid(self):
        # django-filter reads `?customer=` as "no filter"; the schema (and a client) says an id goes
        # there: an empty value is refused like any other value that is not one.
        valid = super().is_valid()
        for name in self.filters:
            if self.data.get(name) == "":
                self.form.add_error(name, "must not be empty; leave the parameter out instead")
                valid = False
        return valid


class InvoiceFilter(NoEmptyValues):
    subscription = IdFilter(
        field_name="subscription_id", min_value=1, max_value=MAX_ID, help_text="Subscription id"
    )
    customer = IdFilter(field_name="customer_id", min_value=1, max_value=MAX_ID, help_text="Customer id")
    status = filters.ChoiceFilter(choices=Invoice.Status.choices)
    period = UTCDateTimeFilter(
        method="filter_period",
        help_text="An ISO 8601 instant: invoices whose period contains it (period_start <= t < period_end)",
    )
    period_start_after = UTCDateTimeFilter(
        field_name="period_start", lookup_expr="gte", help_text="period_start >= this instant"
    )
    period_start_before = UTCDateTimeFilter(
        field_name="period_start", lookup_expr="lt", help_text="period_start < this instant"
    )

    class Meta:
        model = Invoice
        fields = ["subscription", "customer", "status", "period", "period_start_after", "period_start_before"]

    def filter_period(self, queryset, name, value):
        return queryset.filter(period_start__lte=value, period_end__gt=value)


class CreditNoteFilter(NoEmptyValues):
    invoice = IdFilter(field_name="invoice_id", min_value=1, max_value=MAX_ID, help_text="Invoice id")

    class Meta:
        model = CreditNote
        fields = ["invoice"]
