"""Request and response shapes (spec section 7). Serializers validate shapes and types; the writes
themselves go through each app's services."""

import re
from decimal import Decimal

from django.core.exceptions import ValidationError as DjangoValidationError
from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from api.schema import (
    DECIMAL_STRING,
    ID_OR_DIGITS_SCHEMA,
    MAX_ID,
    TERM_NUMBER_SCHEMA,
    country_schema,
    currency_schema,
)
from core.money import as_minor_units
from invoicing import credit_notes
from invoicing.breakdown import as_api, detail_rows
from invoicing.models import (
    Coupon,
    CouponAttachment,
    CreditLedgerEntry,
    CreditNote,
    CreditNoteLine,
    Invoice,
    InvoiceLineItem,
)
from metering.models import Meter
from subscriptions.models import Charge, Customer, Plan, Subscription
from subscriptions.pricing_terms import normalized_charge_terms, validate_charge_terms
from subscriptions.services import validate_start_at


def plain(value: Decimal) -> str:
    """A decimal without trailing zeros or exponent: 1250.0000000000 -> "1250", 0.0020 -> "0.002"."""
    text = format(value.normalize(), "f")
    return text


def price(value: Decimal) -> str:
    """A unit price: trailing zeros dropped, but at least two places: "49.00", "0.002"."""
    normalized = value.normalize()
    return format(normalized if -normalized.as_tuple().exponent > 2 else value.quantize(Decimal("0.01")), "f")


def unique_in_organization(model, field: str):
    """A field validator: `field` is unique per organization (the database constraint says the same;
    checking first gives a 400 naming the field instead of an IntegrityError)."""
    noun = model._meta.verbose_name

    def validate(self, value):
        if model.objects.filter(organization=self.context["organization"], **{field: value}).exists():
            raise serializers.ValidationError(f"a {noun} with {field} {value!r} already exists")
        return value

    return validate


# Python's Decimal also reads " 12 ", "1_000", "1e3" and Arabic-Indic digits; the API takes plain ones.
PLAIN_DECIMAL = re.compile(r"^-?[0-9]+(\.[0-9]+)?$")


@extend_schema_field(TERM_NUMBER_SCHEMA)
class TermField(serializers.DecimalField):
    """A number of a charge's pricing terms (spec section 8): a decimal string ("7.00") or a JSON
    number (7, 2.9), read exactly (api.parsers.ExactNumbersJSONParser: never through a float),
    never negative. Answered as a decimal string; null where the model has none."""

    def __init__(self, max_digits: int, decimal_places: int, *, shown=plain, **kwargs):
        kwargs.setdefault("min_value", Decimal(0))
        kwargs.setdefault("required", False)
        kwargs.setdefault("allow_null", True)
        messages = {"min_value": "must not be negative", **kwargs.pop("error_messages", {})}
        super().__init__(
            max_digits=max_digits, decimal_places=decimal_places, error_messages=messages, **kwargs
        )
        self.shown = shown

    def to_representation(self, value):
        return None if value is None else self.shown(Decimal(value))


# DRF turns 12 into "12" for a text field, "5" into 5 for an integer, "yes" into true and 1.5 into a
# price; the schema says a string, an integer, a boolean, a decimal string, and so does StrictTypes:
# a value of another JSON type is a 400 naming the field (hostile review D18, negative data). (A
# comment, not a docstring: drf-spectacular would publish a docstring as each schema's description.)
@extend_schema_field(ID_OR_DIGITS_SCHEMA)
class IdField(serializers.IntegerField):
    """An id in a request: a JSON integer, or its digits in a string. Spec section 7 writes ids
    quoted (`"customer": "<customer id>"`), and clients built from it send them so."""


class StrictTypes:
    JSON_TYPES = (
        (IdField, (int, str), "an integer id, or its digits in a string"),
        (serializers.BooleanField, (bool,), "a boolean (true or false)"),
        (serializers.IntegerField, (int,), "an integer"),
        (TermField, (str, int, Decimal), 'a decimal string or a JSON number, e.g. "12.50" or 12.5'),
        (serializers.DecimalField, (str,), 'a decimal string, e.g. "12.50"'),
        (serializers.CharField, (str,), "a string"),
        (serializers.ChoiceField, (str,), "a string"),
        (serializers.DateTimeField, (str,), "an ISO 8601 date-time string"),
    )

    def to_internal_value(self, data):
        if isinstance(data, dict):
            errors = {}
            for field in self._writable_fields:
                value = data.get(field.field_name)
                if value is None:
                    continue
                for kind, types, wanted in self.JSON_TYPES:
                    if isinstance(field, kind):
                        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
                            said = field.error_messages.get("invalid")
                            errors[field.field_name] = [
                                said if said and "{" not in said else f"must be {wanted}"
                            ]
                        break
                if isinstance(field, IdField) and isinstance(value, str):
                    if not (value.isascii() and value.isdigit()):
                        errors.setdefault(field.field_name, [field.error_messages["invalid"]])
                if isinstance(field, serializers.DecimalField) and isinstance(value, str):
                    if field.field_name not in errors and not PLAIN_DECIMAL.match(value):
                        errors[field.field_name] = [field.error_messages["invalid"]]
            if errors:
                raise serializers.ValidationError(errors)
        return super().to_internal_value(data)


class ErrorSerializer(serializers.Serializer):
    """`{"detail": "..."}`, or a field map `{"field": ["message"]}`."""

    detail = serializers.CharField(required=False)


# -- customers -------------------------------------------------------------------------------------


@extend_schema_field(country_schema("ISO 3166 alpha-2, e.g. DE (either case)"))
class CountryField(serializers.CharField):
    pass


@extend_schema_field(currency_schema("ISO 4217, e.g. USD (either case)"))
class CurrencyField(serializers.CharField):
    pass


class AddressSerializer(StrictTypes, serializers.Serializer):
    line1 = serializers.CharField(source="address_line1", max_length=200, required=False, allow_blank=True)
    line2 = serializers.CharField(source="address_line2", max_length=200, required=False, allow_blank=True)
    city = serializers.CharField(max_length=100, required=False, allow_blank=True)
    state = serializers.CharField(max_length=100, required=False, allow_blank=True)
    postal_code = serializers.CharField(max_length=20, required=False, allow_blank=True)
    country = CountryField(max_length=2, min_length=2, help_text="ISO 3166 alpha-2")


class CustomerSerializer(StrictTypes, serializers.ModelSerializer):
    address = AddressSerializer(source="*")

    class Meta:
        model = Customer
        fields = ["id", "external_id", "name", "email", "address", "tax_id", "tax_exempt", "created_at"]
        read_only_fields = ["id", "created_at"]
        # Uniqueness per organization is checked in validate_external_id, scoped to the caller.
        validators = []

    def to_representation(self, instance):
        data = super().to_representation(instance)
        data["address"]["country"] = str(instance.country)
        return data

    validate_external_id = unique_in_organization(Customer, "external_id")


# -- meters ----------------------------------------------------------------------------------------


class MeterSerializer(StrictTypes, serializers.ModelSerializer):
    field_name = serializers.CharField(
        max_length=100,
        required=False,
        allow_null=True,
        allow_blank=True,
        help_text="The event property it reads; null for COUNT",
    )

    class Meta:
        model = Meter
        fields = ["id", "code", "name", "aggregation_type", "field_name", "created_at"]
        read_only_fields = ["id", "created_at"]
        validators = []

    validate_code = unique_in_organization(Meter, "code")

    def validate(self, attrs):
        field_name = attrs.get("field_name") or None
        if attrs["aggregation_type"] == Meter.Aggregation.COUNT and field_name:
            raise serializers.ValidationError({"field_name": "must be null for a COUNT meter"})
        if attrs["aggregation_type"] != Meter.Aggregation.COUNT and not field_name:
            raise serializers.ValidationError(
                {"field_name": f"required for a {attrs['aggregation_type']} meter: the property it reads"}
            )
        attrs["field_name"] = field_name
        return attrs


# -- plans -----------------------------------------------------------------------------------------


class TierSerializer(StrictTypes, serializers.Serializer):
    """One tier: `up_to` (inclusive; null for the open last tier), `unit_price` (GRADUATED, VOLUME)
    or `rate` (percent, GRADUATED_PERCENTAGE), `flat_fee` (default 0)."""

    up_to = TermField(30, 10, required=True, help_text="Inclusive upper limit; null for the last tier")
    unit_price = TermField(24, 10, shown=price, help_text="GRADUATED, VOLUME")
    rate = TermField(12, 6, help_text="GRADUATED_PERCENTAGE: percent of the units in the tier")
    flat_fee = TermField(24, 10, shown=price, help_text="Billed once when the quantity reaches the tier")

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError(
                    {
                        key: ["not a tier field: a tier has up_to, unit_price or rate, flat_fee"]
                        for key in unknown
                    }
                )
        values = super().to_internal_value(data)
        return {key: value for key, value in values.items() if value is not None or key == "up_to"}

    def to_representation(self, tier):
        # Stored as decimal strings: the keys it has, in this order.
        return {
            key: (None if tier[key] is None else self.fields[key].to_representation(Decimal(tier[key])))
            for key in self.fields
            if key in tier
        }


class ChargeSerializer(StrictTypes, serializers.ModelSerializer):
    meter = serializers.CharField(
        source="meter.code", required=False, allow_null=True, help_text="The meter's code (USAGE only)"
    )
    pricing_model = serializers.ChoiceField(
        choices=Charge.PricingModel.choices, required=False, help_text="Default PER_UNIT (spec section 8)"
    )
    unit_price = TermField(24, 10, shown=price, help_text="FIXED, PER_UNIT: per unit; PACKAGE: per package")
    tiers = TierSerializer(
        many=True,
        required=False,
        allow_null=True,
        help_text="GRADUATED, VOLUME, GRADUATED_PERCENTAGE: up_to strictly increasing, the last null",
    )
    package_size = TermField(24, 10, help_text="PACKAGE: units per package, more than 0")
    free_units = TermField(30, 10, help_text="PACKAGE, PERCENTAGE: units (an amount) not billed; default 0")
    rate = TermField(12, 6, help_text="PERCENTAGE: percent of the quantity (a SUM meter of amounts)")
    fixed_fee = TermField(24, 10, shown=price, help_text="PERCENTAGE: per event in the period; default 0")
    min_amount = TermField(
        19, 4, shown=price, help_text="USAGE: a period billed below it gets a true-up line"
    )

    class Meta:
        model = Charge
        fields = [
            "id",
            "charge_type",
            "meter",
            "description",
            "pricing_model",
            "unit_price",
            "tiers",
            "package_size",
            "free_units",
            "rate",
            "fixed_fee",
            "min_amount",
        ]
        read_only_fields = ["id"]

    def to_representation(self, instance):
        data = super().to_representation(instance)
        data["meter"] = instance.meter.code if instance.meter_id else None
        return data

    def validate(self, attrs):
        code = (attrs.pop("meter", None) or {}).get("code")
        if attrs["charge_type"] == Charge.ChargeType.USAGE:
            if not code:
                raise serializers.ValidationError({"meter": "required for a USAGE charge: a meter code"})
            meter = Meter.objects.filter(organization=self.context["organization"], code=code).first()
            if meter is None:
                raise serializers.ValidationError({"meter": f"no meter has the code {code!r}"})
            attrs["meter"] = meter
        elif code:
            raise serializers.ValidationError({"meter": "a FIXED charge has no meter"})
        attrs.setdefault("pricing_model", Charge.PricingModel.PER_UNIT)
        meter = attrs.get("meter")
        errors = validate_charge_terms(attrs, meter_aggregation=meter.aggregation_type if meter else None)
        if errors:
            raise serializers.ValidationError(field_map_of(errors))
        attrs.update(normalized_charge_terms(attrs))
        return attrs


TIER_PATH = re.compile(r"^tiers\[(\d+)\](?:\.(\w+))?$")


def field_map_of(errors: dict[str, list[str]]) -> dict:
    """subscriptions.pricing_terms' errors by path ("tiers[1].up_to") as DRF answers a nested list's
    items, the index as a key (as for `charges`): {"tiers": {"1": {"up_to": ["..."]}}}."""
    answer: dict = {}
    for path, messages in errors.items():
        tier = TIER_PATH.match(path)
        if tier is None:
            if path == "tiers" and isinstance(answer.get("tiers"), dict):
                answer["tiers"]["non_field_errors"] = messages
            else:
                answer[path] = messages
            continue
        tiers = answer.setdefault("tiers", {})
        if isinstance(tiers, list):  # "tiers" has messages of its own too
            tiers = answer["tiers"] = {"non_field_errors": tiers}
        # "tiers[0]" alone (a null tier) is about the whole tier, as DRF says of a tier that is no object.
        tiers.setdefault(tier[1], {}).setdefault(tier[2] or "non_field_errors", []).extend(messages)
    return answer


class PlanSerializer(StrictTypes, serializers.ModelSerializer):
    charges = ChargeSerializer(many=True)
    currency = CurrencyField(min_length=3, max_length=3, help_text="ISO 4217, e.g. USD")
    minimum_commitment = TermField(
        19, 4, shown=price, help_text="A period whose lines add up to less gets a true-up line for the rest"
    )

    class Meta:
        model = Plan
        fields = ["id", "code", "name", "interval", "currency", "minimum_commitment", "charges", "created_at"]
        read_only_fields = ["id", "created_at"]
        validators = []

    validate_code = unique_in_organization(Plan, "code")

    def validate_charges(self, value):
        if not value:
            raise serializers.ValidationError("a plan needs at least one charge")
        if len(value) > 100:
            raise serializers.ValidationError("a plan has at most 100 charges")
        return value


# -- subscriptions ---------------------------------------------------------------------------------


class SubscriptionSerializer(StrictTypes, serializers.ModelSerializer):
    customer = IdField(source="customer_id", min_value=1, max_value=MAX_ID, help_text="Customer id")
    plan = serializers.CharField(source="plan.code", max_length=100, help_text="The plan's code")
    start_at = serializers.DateTimeField(
        write_only=True,
        required=False,
        help_text="Start of the first period and billing anchor (default: now); from "
        "2000-01-01T00:00:00Z to one year ahead",
    )

    class Meta:
        model = Subscription
        fields = [
            "id",
            "customer",
            "plan",
            "external_id",
            "status",
            "start_at",
            "billing_anchor",
            "current_period_start",
            "current_period_end",
            "cancel_at_period_end",
            "created_at",
            "canceled_at",
        ]
        read_only_fields = [
            "id",
            "status",
            "billing_anchor",
            "current_period_start",
            "current_period_end",
            "cancel_at_period_end",
            "created_at",
            "canceled_at",
        ]
        validators = []

    def validate_customer(self, value):
        customer = Customer.objects.filter(organization=self.context["organization"], id=value).first()
        if customer is None:
            raise serializers.ValidationError(f"no customer has the id {value}")
        return customer

    def validate_plan(self, code):
        plan = Plan.objects.filter(organization=self.context["organization"], code=code).first()
        if plan is None:
            raise serializers.ValidationError(f"no plan has the code {code!r}")
        return plan

    validate_external_id = unique_in_organization(Subscription, "external_id")

    def validate_start_at(self, value):
        try:
            return validate_start_at(value, timezone.now())
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.message_dict["start_at"]) from exc


class CancelSerializer(StrictTypes, serializers.Serializer):
    at_period_end = serializers.BooleanField(
        help_text="Ended periods are billed first. true: bill the current period at its end, then "
        "cancel; false: cancel now, bill nothing more"
    )


# -- events ----------------------------------------------------------------------------------------


class EventInSerializer(serializers.Serializer):
    """Documentation only: events are checked by metering.services.ingest_events, by hand, for speed."""

    transaction_id = serializers.CharField(
        max_length=200, help_text="Idempotency key, unique per organization"
    )
    external_customer_id = serializers.CharField(max_length=200)
    code = serializers.CharField(max_length=200, help_text="The meter's code")
    timestamp = serializers.DateTimeField(help_text="When it happened; at most 5 minutes in the future")
    properties = serializers.DictField(required=False, allow_null=True)
    external_subscription_id = serializers.CharField(
        max_length=200,
        required=False,
        allow_null=True,
        allow_blank=True,
        help_text="Required when the customer has several active subscriptions charging this meter",
    )


class EventBatchInSerializer(serializers.Serializer):
    events = EventInSerializer(many=True, help_text="1 to 1000 events")


class EventSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    transaction_id = serializers.CharField()
    external_customer_id = serializers.CharField(source="customer.external_id")
    external_subscription_id = serializers.CharField(source="subscription.external_id", allow_null=True)
    code = serializers.CharField()
    timestamp = serializers.DateTimeField()
    properties = serializers.DictField()
    received_at = serializers.DateTimeField()

    def to_representation(self, instance):
        data = super().to_representation(instance)
        if instance.subscription_id is None:
            data["external_subscription_id"] = None
        return data


class EventResultSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    status = serializers.ChoiceField(choices=["created", "duplicate", "rejected"])
    transaction_id = serializers.CharField(allow_null=True)
    id = serializers.IntegerField(source="event_id", allow_null=True, help_text="The stored event")
    errors = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()), required=False, help_text="rejected only"
    )


class EventBatchResultSerializer(serializers.Serializer):
    created = serializers.IntegerField()
    duplicates = serializers.IntegerField()
    rejected = serializers.IntegerField()
    results = EventResultSerializer(many=True)


# -- invoices --------------------------------------------------------------------------------------


def money(value, currency) -> str:
    return str(as_minor_units(Decimal(value), currency))


@extend_schema_field(DECIMAL_STRING)
class DecimalText(serializers.CharField):
    """A decimal string in an answer."""


# One row of a line's breakdown, as invoicing.breakdown.as_api writes it (documentation only).
# Built with type(): "from" is a Python keyword.
DetailSerializer = type(
    "DetailSerializer",
    (serializers.Serializer,),
    {
        "from": DecimalText(
            allow_null=True, help_text="The tier covers the quantities (from, to]; null on a per-event fee"
        ),
        "to": DecimalText(allow_null=True, help_text="null: the open last tier"),
        "units": DecimalText(help_text="The part of the quantity in this tier (a per-event fee: the events)"),
        "packages": DecimalText(allow_null=True, help_text="PACKAGE: the packages the units make"),
        "unit_price": DecimalText(allow_null=True, help_text="null where a rate applies"),
        "rate": DecimalText(allow_null=True, help_text="Percent, for the percentage models"),
        "flat_fee": DecimalText(),
        "amount": DecimalText(
            help_text="To the currency's minor unit, for reading: the line is rounded once, "
            "from the exact sum"
        ),
    },
)


class LineItemSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(
        choices=InvoiceLineItem.Kind.choices,
        help_text="CHARGE; MINIMUM: a charge's min_amount true-up; "
        "COMMITMENT: the plan's minimum_commitment true-up",
    )
    charge_type = serializers.CharField()
    pricing_model = serializers.CharField(allow_null=True, help_text="null on true-up lines")
    description = serializers.CharField()
    quantity = serializers.SerializerMethodField()
    unit_price = serializers.SerializerMethodField()
    amount = serializers.SerializerMethodField()
    details = serializers.SerializerMethodField()

    @extend_schema_field(DECIMAL_STRING)
    def get_quantity(self, line) -> str:
        return plain(line.quantity)

    @extend_schema_field({**DECIMAL_STRING, "nullable": True})
    def get_unit_price(self, line) -> str | None:
        return None if line.unit_price is None else price(line.unit_price)

    @extend_schema_field(DECIMAL_STRING)
    def get_amount(self, line) -> str:
        return money(line.amount, self.context["currency"])

    @extend_schema_field(DetailSerializer(many=True))
    def get_details(self, line) -> list:
        currency = self.context["currency"]
        return [as_api(row, currency) for row in detail_rows(line.details)]


class InvoiceLineSerializer(LineItemSerializer):
    """A stored line: with its id, which a credit note's lines name (spec section 10)."""

    id = serializers.IntegerField()

    class Meta:
        fields = ["id"]

    def to_representation(self, line):
        data = super().to_representation(line)
        return {"id": data.pop("id"), **data}


class DiscountSerializer(serializers.Serializer):
    coupon = serializers.CharField(help_text="The coupon's code")
    amount = DecimalText(help_text="What it took off, before tax")


def discounts_of(invoice) -> list[dict]:
    """An invoice's discount rows, or a draft's Discounts (the upcoming-invoice preview), in the
    order they applied."""
    if isinstance(invoice, Invoice):
        return [
            {"coupon": d.coupon_code, "amount": money(d.amount, invoice.currency)}
            for d in invoice.discounts.all()
        ]
    return [{"coupon": d.coupon.code, "amount": money(d.amount, invoice.currency)} for d in invoice.discounts]


class AmountsMixin(serializers.Serializer):
    currency = serializers.CharField()
    period_start = serializers.DateTimeField()
    period_end = serializers.DateTimeField()
    subtotal = serializers.SerializerMethodField()
    discount_amount = serializers.SerializerMethodField(
        help_text="The coupons' discounts, before tax: tax_amount is on subtotal - discount_amount"
    )
    tax_rate = serializers.SerializerMethodField(help_text='In percent, e.g. "19.00"')
    tax_amount = serializers.SerializerMethodField()
    tax_reason = serializers.CharField()
    total = serializers.SerializerMethodField()

    @extend_schema_field(DECIMAL_STRING)
    def get_subtotal(self, invoice) -> str:
        return money(invoice.subtotal, invoice.currency)

    @extend_schema_field(DECIMAL_STRING)
    def get_discount_amount(self, invoice) -> str:
        return money(invoice.discount_amount, invoice.currency)

    @extend_schema_field(DECIMAL_STRING)
    def get_tax_rate(self, invoice) -> str:
        return str(Decimal(invoice.tax_rate).quantize(Decimal("0.01")))

    @extend_schema_field(DECIMAL_STRING)
    def get_tax_amount(self, invoice) -> str:
        return money(invoice.tax_amount, invoice.currency)

    @extend_schema_field(DECIMAL_STRING)
    def get_total(self, invoice) -> str:
        return money(invoice.total, invoice.currency)


class InvoiceSerializer(AmountsMixin, serializers.ModelSerializer):
    customer = serializers.IntegerField(source="customer_id")
    subscription = serializers.IntegerField(source="subscription_id")

    class Meta:
        model = Invoice
        fields = [
            "id",
            "number",
            "status",
            "customer",
            "subscription",
            "currency",
            "period_start",
            "period_end",
            "subtotal",
            "discount_amount",
            "tax_rate",
            "tax_amount",
            "tax_reason",
            "total",
            "issued_at",
            "scheduled_finalize_at",
            "finalized_at",
            "paid_at",
            "voided_at",
        ]
        read_only_fields = fields


def _after(fields: list[str], anchor: str, *added: str) -> list[str]:
    at = fields.index(anchor) + 1
    return [*fields[:at], *added, *fields[at:]]


class InvoiceDetailSerializer(InvoiceSerializer):
    credits_applied = serializers.SerializerMethodField(
        help_text="Prepaid credits taken from the customer's balance at finalization"
    )
    credited_amount = serializers.SerializerMethodField(
        help_text="The total (tax included) of the credit notes issued against it"
    )
    amount_due = serializers.SerializerMethodField(
        help_text="total - credits_applied - the credit notes' part that lowered it; 0 once PAID or VOID"
    )
    discounts = serializers.SerializerMethodField()
    line_items = serializers.SerializerMethodField()

    class Meta(InvoiceSerializer.Meta):
        # Spec section 10's order: the discounts after their amount, the credits after the total,
        # then the lines.
        fields = [
            *_after(
                _after(InvoiceSerializer.Meta.fields, "discount_amount", "discounts"),
                "total",
                "credits_applied",
                "credited_amount",
                "amount_due",
            ),
            "line_items",
        ]
        read_only_fields = fields

    @extend_schema_field(DiscountSerializer(many=True))
    def get_discounts(self, invoice):
        return discounts_of(invoice)

    @extend_schema_field(DECIMAL_STRING)
    def get_credits_applied(self, invoice) -> str:
        return money(invoice.credits_applied, invoice.currency)

    @extend_schema_field(DECIMAL_STRING)
    def get_credited_amount(self, invoice) -> str:
        return money(credit_notes.credited_amount(invoice), invoice.currency)

    @extend_schema_field(DECIMAL_STRING)
    def get_amount_due(self, invoice) -> str:
        return money(credit_notes.amount_due(invoice), invoice.currency)

    @extend_schema_field(InvoiceLineSerializer(many=True))
    def get_line_items(self, invoice):
        return InvoiceLineSerializer(
            invoice.line_items.all(), many=True, context={"currency": invoice.currency}
        ).data


class GeneratedInvoicesSerializer(serializers.Serializer):
    invoices = InvoiceDetailSerializer(many=True)
    more_due = serializers.BooleanField(
        required=False,
        help_text="201 only. true: more periods have ended than one request bills; call again for the next",
    )
    detail = serializers.CharField(
        required=False, help_text="Why nothing was billed (200), or that more periods are due (201)"
    )


class UpcomingInvoiceSerializer(AmountsMixin):
    subscription = serializers.IntegerField(source="subscription.id")
    customer = serializers.IntegerField(source="subscription.customer_id")
    as_of = serializers.DateTimeField(help_text="When this preview was computed")
    discounts = serializers.SerializerMethodField(
        help_text="As the next invoice would take them; none is used up"
    )
    line_items = serializers.SerializerMethodField()

    @extend_schema_field(DiscountSerializer(many=True))
    def get_discounts(self, draft):
        return discounts_of(draft)

    @extend_schema_field(LineItemSerializer(many=True))
    def get_line_items(self, draft):
        return LineItemSerializer(draft.lines, many=True, context={"currency": draft.currency}).data


class WorkerRunSerializer(serializers.Serializer):
    run_id = serializers.CharField()
    status = serializers.CharField()
    started_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)
    processed = serializers.IntegerField()
    successful = serializers.IntegerField()
    failed = serializers.IntegerField()


class WorkerHealthSerializer(serializers.Serializer):
    worker = serializers.CharField()
    healthy = serializers.BooleanField()
    last_success_at = serializers.DateTimeField(allow_null=True)
    last_run = WorkerRunSerializer(allow_null=True)
    error = serializers.CharField(
        required=False, help_text="Why the check itself failed (database unreachable)"
    )


# -- credit notes ----------------------------------------------------------------------------------


class CreditLineInSerializer(StrictTypes, serializers.Serializer):
    line_item = IdField(min_value=1, max_value=MAX_ID, help_text="The id of one of the invoice's line items")
    amount = serializers.DecimalField(
        max_digits=19,
        decimal_places=4,
        help_text="Before tax; more than 0, at most what is left uncredited of the line",
    )


class IssueCreditNoteSerializer(StrictTypes, serializers.Serializer):
    reason = serializers.ChoiceField(choices=CreditNote.Reason.choices)
    method = serializers.ChoiceField(choices=CreditNote.Method.choices)
    description = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")
    lines = CreditLineInSerializer(many=True, allow_empty=False, min_length=1, max_length=500)


class CreditNoteLineSerializer(serializers.ModelSerializer):
    line_item = serializers.IntegerField(source="invoice_line_id")
    amount = serializers.SerializerMethodField()

    class Meta:
        model = CreditNoteLine
        fields = ["line_item", "amount"]
        read_only_fields = fields

    @extend_schema_field(DECIMAL_STRING)
    def get_amount(self, line) -> str:
        return money(line.amount, self.context.get("currency") or line.credit_note.currency)


class CreditNoteSerializer(serializers.ModelSerializer):
    invoice = serializers.IntegerField(source="invoice_id")
    subtotal = serializers.SerializerMethodField()
    tax_rate = serializers.SerializerMethodField(help_text="The invoice's, in percent")
    tax_amount = serializers.SerializerMethodField()
    total = serializers.SerializerMethodField()
    applied_to_invoice = serializers.SerializerMethodField(help_text="The part that lowered the amount due")
    credited_to_balance = serializers.SerializerMethodField(
        help_text="CREDIT_BALANCE: the part added to the customer's credit balance"
    )
    refund_amount = serializers.SerializerMethodField(help_text="REFUND: the part to be paid out")
    lines = serializers.SerializerMethodField()

    class Meta:
        model = CreditNote
        fields = [
            "id",
            "number",
            "invoice",
            "reason",
            "method",
            "description",
            "currency",
            "subtotal",
            "tax_rate",
            "tax_amount",
            "total",
            "applied_to_invoice",
            "credited_to_balance",
            "refund_amount",
            "refunded_at",
            "issued_at",
            "lines",
        ]
        read_only_fields = fields

    def _money(self, value, note) -> str:
        return money(value, note.currency)

    @extend_schema_field(DECIMAL_STRING)
    def get_subtotal(self, note) -> str:
        return self._money(note.subtotal, note)

    @extend_schema_field(DECIMAL_STRING)
    def get_tax_rate(self, note) -> str:
        return str(Decimal(note.tax_rate).quantize(Decimal("0.01")))

    @extend_schema_field(DECIMAL_STRING)
    def get_tax_amount(self, note) -> str:
        return self._money(note.tax_amount, note)

    @extend_schema_field(DECIMAL_STRING)
    def get_total(self, note) -> str:
        return self._money(note.total, note)

    @extend_schema_field(DECIMAL_STRING)
    def get_applied_to_invoice(self, note) -> str:
        return self._money(note.applied_to_invoice, note)

    @extend_schema_field(DECIMAL_STRING)
    def get_credited_to_balance(self, note) -> str:
        return self._money(note.credited_to_balance, note)

    @extend_schema_field(DECIMAL_STRING)
    def get_refund_amount(self, note) -> str:
        return self._money(note.refund_amount, note)

    @extend_schema_field(CreditNoteLineSerializer(many=True))
    def get_lines(self, note):
        return CreditNoteLineSerializer(note.lines.all(), many=True, context={"currency": note.currency}).data


# -- prepaid credits -------------------------------------------------------------------------------


class CreditGrantSerializer(StrictTypes, serializers.Serializer):
    amount = serializers.DecimalField(max_digits=19, decimal_places=4, help_text="More than 0")
    currency = CurrencyField(min_length=3, max_length=3, help_text="ISO 4217, e.g. EUR")
    description = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")
    expires_at = serializers.DateTimeField(
        required=False, allow_null=True, default=None, help_text="null: never expires"
    )


# -- coupons ---------------------------------------------------------------------------------------


class CouponSerializer(StrictTypes, serializers.ModelSerializer):
    code = serializers.CharField(max_length=100)
    name = serializers.CharField(max_length=200, required=False, allow_blank=True)
    percent_off = TermField(
        7,
        4,
        max_value=Decimal(100),
        help_text='In percent, above 0 and at most 100, e.g. "10"; or amount_off',
    )
    amount_off = TermField(19, 4, shown=price, help_text='A fixed amount, e.g. "20.00", with its currency')
    currency = CurrencyField(
        min_length=3, max_length=3, required=False, allow_blank=True, help_text="amount_off's; ISO 4217"
    )
    duration = serializers.ChoiceField(choices=Coupon.Duration.choices)
    duration_in_periods = serializers.IntegerField(
        required=False,
        allow_null=True,
        min_value=1,
        max_value=10_000,
        help_text="REPEATING only: how many invoices",
    )

    class Meta:
        model = Coupon
        fields = [
            "id",
            "code",
            "name",
            "percent_off",
            "amount_off",
            "currency",
            "duration",
            "duration_in_periods",
            "created_at",
        ]
        read_only_fields = ["id", "created_at"]
        validators = []

    validate_code = unique_in_organization(Coupon, "code")

    def validate_currency(self, value):
        return value.upper()


class CreditEntrySerializer(serializers.ModelSerializer):
    amount = serializers.SerializerMethodField(help_text="Signed: + grants and credit notes, - the rest")
    invoice = serializers.IntegerField(source="invoice_id", allow_null=True)
    credit_note = serializers.IntegerField(source="credit_note_id", allow_null=True)

    class Meta:
        model = CreditLedgerEntry
        fields = [
            "id",
            "kind",
            "currency",
            "amount",
            "description",
            "expires_at",
            "invoice",
            "credit_note",
            "created_at",
        ]
        read_only_fields = fields

    @extend_schema_field(DECIMAL_STRING)
    def get_amount(self, entry) -> str:
        return money(entry.amount, entry.currency)


class CreditBalanceSerializer(serializers.Serializer):
    currency = serializers.CharField()
    amount = DecimalText()


class CustomerCreditsSerializer(serializers.Serializer):
    balances = CreditBalanceSerializer(many=True)
    entries = CreditEntrySerializer(many=True)


class AttachCouponSerializer(StrictTypes, serializers.Serializer):
    coupon = serializers.CharField(max_length=100, help_text="The coupon's code")


class CouponAttachmentSerializer(serializers.ModelSerializer):
    coupon = serializers.CharField(source="coupon.code", help_text="The coupon's code")
    duration = serializers.CharField(source="coupon.duration")
    uses_left = serializers.SerializerMethodField(help_text="null: FOREVER")

    class Meta:
        model = CouponAttachment
        fields = ["id", "coupon", "duration", "attached_at", "max_uses", "uses_counted", "uses_left"]
        read_only_fields = fields

    def get_uses_left(self, attachment) -> int | None:
        return None if attachment.max_uses is None else attachment.max_uses - attachment.uses_counted
