from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import F, Q
from django.db.models.functions import Length
from django.db.models.lookups import Exact
from django_countries.fields import CountryField

from billing_project.control_characters import refuse_control_characters
from subscriptions.tier_constraint import TiersWellFormed


class Address(models.Model):
    address_line1 = models.CharField(max_length=200, blank=True)
    address_line2 = models.CharField(max_length=200, blank=True)
    city = models.CharField(max_length=100, blank=True)
    postal_code = models.CharField(max_length=20, blank=True)
    state = models.CharField(max_length=100, blank=True, help_text="State or region code, e.g. TX")
    country = CountryField()

    class Meta:
        abstract = True

    def address_lines(self) -> list[str]:
        city_line = " ".join(p for p in (self.postal_code, self.city, self.state) if p)
        parts = [self.address_line1, self.address_line2, city_line, self.country.name]
        return [p for p in parts if p]


def currency_is_three_letters(field: str) -> models.CheckConstraint:
    return models.CheckConstraint(
        condition=Exact(Length(field), 3), name=f"%(app_label)s_%(class)s_{field}_iso4217"
    )


class Organization(Address):
    name = models.CharField(max_length=200, validators=[refuse_control_characters])
    slug = models.SlugField(max_length=100, unique=True)
    tax_id = models.CharField(max_length=50, blank=True, validators=[refuse_control_characters])
    default_currency = models.CharField(max_length=3, default="EUR")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [currency_is_three_letters("default_currency")]

    def __str__(self):
        return self.name


class Customer(Address):
    # Indexed by the unique (organization, external_id): a second index on the column alone only
    # costs writes. The same holds for each `db_index=False` foreign key below.
    organization = models.ForeignKey(
        Organization, on_delete=models.PROTECT, related_name="customers", db_index=False
    )
    external_id = models.CharField(max_length=200, validators=[refuse_control_characters])
    name = models.CharField(max_length=200, validators=[refuse_control_characters])
    email = models.EmailField(blank=True)
    tax_id = models.CharField(
        max_length=50,
        blank=True,
        help_text="VAT number, with its country prefix",
        validators=[refuse_control_characters],
    )
    tax_exempt = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "external_id"], name="customer_external_id_unique_per_org"
            ),
        ]

    def __str__(self):
        return self.name


class Plan(models.Model):
    """A price list. Once a subscription uses it, its organization, currency and interval are what
    that subscription was sold and is billed in: they never change (a change goes through a new
    plan). `save` and `clean` refuse it here; on PostgreSQL a trigger refuses it for every client
    (subscriptions 0005). Name and charges stay editable: a new price applies from the next
    invoice on (drafts keep the unit price they were written with)."""

    LOCKED_WHEN_IN_USE = ("organization", "currency", "interval")

    class Interval(models.TextChoices):
        DAY = "day"
        WEEK = "week"
        MONTH = "month"
        QUARTER = "quarter"
        YEAR = "year"

    organization = models.ForeignKey(  # indexed by the unique (organization, code)
        Organization, on_delete=models.PROTECT, related_name="plans", db_index=False
    )
    code = models.CharField(max_length=100, validators=[refuse_control_characters])
    name = models.CharField(max_length=200, validators=[refuse_control_characters])
    interval = models.CharField(max_length=10, choices=Interval.choices)
    currency = models.CharField(max_length=3)
    minimum_commitment = models.DecimalField(
        max_digits=19,
        decimal_places=4,
        null=True,
        blank=True,
        help_text="A period whose lines add up to less gets a true-up line for the difference",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["organization", "code"], name="plan_code_unique_per_org"),
            models.CheckConstraint(
                condition=Q(minimum_commitment__gte=0), name="plan_minimum_commitment_not_negative"
            ),
            models.CheckConstraint(
                condition=Q(interval__in=["day", "week", "month", "quarter", "year"]),
                name="plan_interval_valid",
            ),
            currency_is_three_letters("currency"),
        ]

    def __str__(self):
        return f"{self.name} ({self.code})"

    def save(self, *args, **kwargs):
        self.clean()
        super().save(*args, **kwargs)

    def locked_changes(self) -> list[str]:
        """The LOCKED_WHEN_IN_USE fields this instance would change while the plan has
        subscriptions (two queries; plans are saved rarely)."""
        if self._state.adding or self.pk is None:
            return []
        columns = [self._meta.get_field(name).attname for name in self.LOCKED_WHEN_IN_USE]
        stored = Plan.objects.filter(pk=self.pk).values(*columns).first()
        if stored is None:
            return []
        changed = [
            name
            for name, column in zip(self.LOCKED_WHEN_IN_USE, columns, strict=True)
            if getattr(self, column) != stored[column]
        ]
        if changed and self.subscriptions.exists():
            return changed
        return []

    def clean(self):
        changed = self.locked_changes()
        if changed:
            raise ValidationError(
                f"{self.code} has subscriptions: its {', '.join(changed)} cannot change; "
                f"create a new plan instead"
            )


# Which of the pricing fields each model uses: required ones must be set, every field no model
# of the charge uses must be NULL (constraint charge_pricing_fields_match_model).
PRICING_REQUIRED_FIELDS = {
    "PER_UNIT": ("unit_price",),
    "GRADUATED": ("tiers",),
    "VOLUME": ("tiers",),
    "PACKAGE": ("unit_price", "package_size"),
    "PERCENTAGE": ("rate",),
    "GRADUATED_PERCENTAGE": ("tiers",),
}
PRICING_OPTIONAL_FIELDS = {  # NULL means 0
    "PACKAGE": ("free_units",),
    "PERCENTAGE": ("free_units", "fixed_fee"),
}
PRICING_FIELDS = ("unit_price", "tiers", "package_size", "free_units", "rate", "fixed_fee")
TIERED_MODELS = ("GRADUATED", "VOLUME", "GRADUATED_PERCENTAGE")


def _pricing_fields_match_model(required, optional, fields) -> Q:
    """One branch per model: its required fields set, the fields it does not use NULL."""
    condition = Q()
    for model, needed in required.items():
        unused = [name for name in fields if name not in needed and name not in optional.get(model, ())]
        condition |= Q(
            pricing_model=model,
            **{f"{name}__isnull": False for name in needed},
            **{f"{name}__isnull": True for name in unused},
        )
    return condition


class Charge(models.Model):
    class ChargeType(models.TextChoices):
        FIXED = "FIXED"
        USAGE = "USAGE"

    class PricingModel(models.TextChoices):
        """Spec section 8; each is a module in invoicing.pricing, registered in charges.MODELS."""

        PER_UNIT = "PER_UNIT"
        GRADUATED = "GRADUATED"
        VOLUME = "VOLUME"
        PACKAGE = "PACKAGE"
        PERCENTAGE = "PERCENTAGE"
        GRADUATED_PERCENTAGE = "GRADUATED_PERCENTAGE"

    REQUIRED_FIELDS = PRICING_REQUIRED_FIELDS
    OPTIONAL_FIELDS = PRICING_OPTIONAL_FIELDS
    PRICING_FIELDS = PRICING_FIELDS
    TIERED = TIERED_MODELS

    plan = models.ForeignKey(Plan, on_delete=models.CASCADE, related_name="charges")
    charge_type = models.CharField(max_length=10, choices=ChargeType.choices)
    meter = models.ForeignKey(
        "metering.Meter", on_delete=models.PROTECT, null=True, blank=True, related_name="charges"
    )
    unit_price = models.DecimalField(
        max_digits=24,
        decimal_places=10,
        null=True,
        blank=True,
        help_text="FIXED, PER_UNIT: per unit; PACKAGE: per package. Empty for the other models.",
    )
    description = models.CharField(max_length=200, blank=True, validators=[refuse_control_characters])
    pricing_model = models.CharField(
        max_length=20, choices=PricingModel.choices, default=PricingModel.PER_UNIT
    )
    # Ordered tiers, decimals as strings: [{"up_to": "5" | null, "unit_price" (or "rate" for
    # GRADUATED_PERCENTAGE): "7.00", "flat_fee": "0"}]; see subscriptions.tier_constraint.
    tiers = models.JSONField(null=True, blank=True)
    package_size = models.DecimalField(max_digits=24, decimal_places=10, null=True, blank=True)
    free_units = models.DecimalField(
        max_digits=30, decimal_places=10, null=True, blank=True, help_text="PACKAGE, PERCENTAGE; empty = 0"
    )
    rate = models.DecimalField(
        max_digits=12, decimal_places=6, null=True, blank=True, help_text="PERCENTAGE: percent, e.g. 2.9"
    )
    fixed_fee = models.DecimalField(
        max_digits=24, decimal_places=10, null=True, blank=True, help_text="PERCENTAGE: per event; empty = 0"
    )
    min_amount = models.DecimalField(
        max_digits=19,
        decimal_places=4,
        null=True,
        blank=True,
        help_text="USAGE: a period billed below it gets a true-up line for the difference",
    )
    position = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["position", "id"]
        constraints = [
            models.CheckConstraint(condition=Q(unit_price__gte=0), name="charge_unit_price_not_negative"),
            models.CheckConstraint(
                condition=Q(charge_type="FIXED", meter__isnull=True)
                | Q(charge_type="USAGE", meter__isnull=False),
                name="charge_meter_only_for_usage",
            ),
            models.CheckConstraint(
                condition=Q(
                    pricing_model__in=[
                        "PER_UNIT",
                        "GRADUATED",
                        "VOLUME",
                        "PACKAGE",
                        "PERCENTAGE",
                        "GRADUATED_PERCENTAGE",
                    ]
                ),
                name="charge_pricing_model_known",
            ),
            models.CheckConstraint(
                condition=Q(charge_type="USAGE") | Q(pricing_model="PER_UNIT", min_amount__isnull=True),
                name="charge_fixed_is_per_unit",
            ),
            models.CheckConstraint(
                condition=_pricing_fields_match_model(
                    PRICING_REQUIRED_FIELDS, PRICING_OPTIONAL_FIELDS, PRICING_FIELDS
                ),
                name="charge_pricing_fields_match_model",
            ),
            models.CheckConstraint(
                condition=Q(package_size__gt=0)
                & Q(free_units__gte=0)
                & Q(rate__gte=0)
                & Q(fixed_fee__gte=0)
                & Q(min_amount__gte=0),
                name="charge_pricing_numbers_not_negative",
            ),
            models.CheckConstraint(
                condition=~Q(pricing_model__in=["GRADUATED", "VOLUME"]) | TiersWellFormed("unit_price"),
                name="charge_tiers_priced_per_unit",
            ),
            models.CheckConstraint(
                condition=~Q(pricing_model="GRADUATED_PERCENTAGE") | TiersWellFormed("rate"),
                name="charge_tiers_priced_by_rate",
            ),
        ]

    def __str__(self):
        return self.description or f"{self.charge_type} charge"

    # What an invoice line of this charge was billed as: a draft recounts its usage through the
    # charge's meter until it is finalized, so these cannot change once the charge has billed.
    LOCKED_WHEN_BILLED = ("charge_type", "meter")

    def save(self, *args, **kwargs):
        self.clean()
        super().save(*args, **kwargs)

    def clean(self):
        self.check_pricing_terms()
        if self._state.adding or self.pk is None:
            return
        columns = [self._meta.get_field(name).attname for name in self.LOCKED_WHEN_BILLED]
        stored = Charge.objects.filter(pk=self.pk).values(*columns).first()
        if stored is None:
            return
        changed = [
            name
            for name, column in zip(self.LOCKED_WHEN_BILLED, columns, strict=True)
            if getattr(self, column) != stored[column]
        ]
        if changed and self.line_items.exists():
            raise ValidationError(
                f"charge '{self}' has been billed: its {' and '.join(changed)} cannot change; "
                "add a new charge instead"
            )

    def pricing_fields(self) -> dict:
        return {
            "charge_type": self.charge_type,
            "pricing_model": self.pricing_model,
            "min_amount": self.min_amount,
            **{name: getattr(self, name) for name in PRICING_FIELDS},
        }

    def check_pricing_terms(self) -> None:
        """ValidationError when the pricing terms are invalid (spec section 8,
        subscriptions.pricing_terms): messages naming their field path ("tiers[1].up_to: ..."), not
        keyed by field -- a ModelForm without that field (e.g. an admin inline without `tiers`) would
        raise ValueError on a key it does not have. The API and forms that want field-keyed errors call
        validate_charge_terms themselves. Valid tiers are rewritten in their stored form (numbers as
        canonical decimal strings, flat_fee spelled out)."""
        from subscriptions.pricing_terms import canonical_tiers, error_messages, validate_charge_terms

        meter = self.meter if self.meter_id is not None else None
        errors = validate_charge_terms(
            self.pricing_fields(), meter_aggregation=meter.aggregation_type if meter else None
        )
        if errors:
            raise ValidationError(error_messages(errors))
        if self.tiers is not None:  # as the database's check expects them: canonical decimal strings
            self.tiers = canonical_tiers(self.tiers, self.pricing_model)


class Subscription(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "ACTIVE"
        CANCELED = "CANCELED"

    organization = models.ForeignKey(  # indexed by the unique (organization, external_id)
        Organization, on_delete=models.PROTECT, related_name="subscriptions", db_index=False
    )
    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="subscriptions")
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="subscriptions")
    external_id = models.CharField(max_length=200, validators=[refuse_control_characters])
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACTIVE)
    billing_anchor = models.DateTimeField()
    current_period_start = models.DateTimeField()
    current_period_end = models.DateTimeField()
    cancel_at_period_end = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    canceled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "external_id"], name="subscription_external_id_unique_per_org"
            ),
            models.CheckConstraint(
                condition=Q(current_period_end__gt=F("current_period_start")),
                name="subscription_period_not_empty",
            ),
            models.CheckConstraint(
                condition=Q(current_period_start__gte=F("billing_anchor")),
                name="subscription_period_after_anchor",
            ),
            models.CheckConstraint(
                condition=Q(status="ACTIVE", canceled_at__isnull=True)
                | Q(status="CANCELED", canceled_at__isnull=False),
                name="subscription_canceled_at_iff_canceled",
            ),
            # Unique anyway (id is): what an invoice's one composite foreign key points at, so
            # that its organization and customer are its subscription's (invoicing 0007).
            models.UniqueConstraint(
                fields=["id", "organization", "customer"], name="subscription_id_organization_customer"
            ),
        ]
        indexes = [
            # The invoice run's claim query: ACTIVE and current_period_end <= now, in the claim
            # order (current_period_end, id), so that a batch reads its own rows straight off the
            # index instead of sorting every due row for each batch.
            models.Index(fields=["status", "current_period_end", "id"], name="subscription_due_claim_idx"),
        ]

    def __str__(self):
        return self.external_id


class ApiKey(models.Model):
    """An organization's API key. Only a SHA-256 digest is stored: the keys are long random
    strings, so a fast hash is enough and lookups stay cheap."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100, blank=True)
    prefix = models.CharField(max_length=16, db_index=True)
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self):
        return f"{self.prefix}… ({self.organization})"
