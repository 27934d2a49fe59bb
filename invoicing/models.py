from django.db import models
from django.db.models import F, Q
from django.db.models.functions import Length, Round
from django.db.models.lookups import Exact
from django_countries.fields import CountryField

from core.control_characters import refuse_control_characters
from subscriptions.models import currency_is_three_letters

MONEY = {"max_digits": 19, "decimal_places": 4}


class TaxRate(models.Model):
    """A tax rate in force from `valid_from` until the next row for the same country and region."""

    country = CountryField()
    region = models.CharField(max_length=100, blank=True, help_text="Empty: the whole country")
    rate = models.DecimalField(max_digits=5, decimal_places=2, help_text="In percent, e.g. 19.00")
    name = models.CharField(max_length=100, blank=True)
    valid_from = models.DateField()

    class Meta:
        ordering = ["country", "region", "-valid_from"]
        constraints = [
            models.UniqueConstraint(
                fields=["country", "region", "valid_from"], name="tax_rate_one_per_start"
            ),
            models.CheckConstraint(condition=Q(rate__gte=0, rate__lte=100), name="tax_rate_is_a_percentage"),
        ]

    def __str__(self):
        where = f"{self.country}-{self.region}" if self.region else str(self.country)
        return f"{where} {self.rate}% from {self.valid_from}"


class InvoiceNumberSequence(models.Model):
    """The last number issued per organization, kind of document and year. Its row is locked while
    numbers are taken, so the sequence stays gapless when several runs bill at once."""

    class Kind(models.TextChoices):
        INVOICE = "INVOICE"  # INV-<year>-<n>
        CREDIT_NOTE = "CREDIT_NOTE"  # CN-<year>-<n>

    # Indexed by the unique (organization, kind, year).
    organization = models.ForeignKey("subscriptions.Organization", on_delete=models.CASCADE, db_index=False)
    kind = models.CharField(max_length=12, choices=Kind.choices, default=Kind.INVOICE)
    year = models.PositiveSmallIntegerField()
    last_number = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["organization", "kind", "year"], name="number_sequence_unique"),
            models.CheckConstraint(
                condition=Q(kind__in=["INVOICE", "CREDIT_NOTE"]), name="number_sequence_kind_valid"
            ),
        ]

    def __str__(self):
        return f"{self.organization_id}/{self.kind}/{self.year}: {self.last_number}"


class InvoiceLockedError(Exception):
    """A change that a finalized, paid or void invoice does not allow (spec section 4)."""


# The parties as they were when the invoice was issued (the run writes them with the draft, see
# invoicing.parties): the document shows these, never the live organization and customer rows.
PARTY_SNAPSHOT_FIELDS = (
    "seller_name",
    "seller_address",
    "seller_tax_id",
    "seller_country",
    "buyer_name",
    "buyer_address",
    "buyer_tax_id",
    "buyer_email",
    "buyer_external_id",
    "buyer_country",
    "subscription_external_id",
)


# What an invoice keeps for ever once it is no longer a draft. Migration 0005's database triggers
# enforce the same list (frozen there, as migrations must be); the guard below refuses in Python
# first, with a message naming the fields.
LOCKED_FIELDS = (
    "number",
    "organization_id",
    "customer_id",
    "subscription_id",
    "period_start",
    "period_end",
    "currency",
    "subtotal",
    "tax_rate",
    "tax_amount",
    "tax_reason",
    "total",
    "issued_at",
    "scheduled_finalize_at",
    "finalized_at",
    "credits_applied",
    *PARTY_SNAPSHOT_FIELDS,
    "discount_amount",
)
# The only ways out of FINALIZED, each setting its date once.
LOCKED_TRANSITIONS = {("FINALIZED", "PAID"): "paid_at", ("FINALIZED", "VOID"): "voided_at"}
# Where a draft may go (D20); migration 0009's trigger says the same.
DRAFT_EXITS = {"DRAFT", "FINALIZED", "VOID"}
_GUARDED = (*LOCKED_FIELDS, "status", "paid_at", "voided_at")


class InvoiceQuerySet(models.QuerySet):
    def delete(self):
        locked = self.exclude(status="DRAFT").values_list("number", flat=True)[:5]
        if locked:
            raise InvoiceLockedError(f"{', '.join(locked)}: only drafts can be deleted (void it instead)")
        return super().delete()


class Invoice(models.Model):
    class Status(models.TextChoices):
        DRAFT = "DRAFT"
        FINALIZED = "FINALIZED"
        PAID = "PAID"
        VOID = "VOID"

    class TaxReason(models.TextChoices):
        EXEMPT = "exempt"
        DOMESTIC = "domestic"
        REVERSE_CHARGE = "reverse charge"
        EU_B2C = "EU B2C"
        OUTSIDE_SCOPE = "outside scope"

    number = models.CharField(max_length=32)
    # organization and subscription are indexed by the unique (organization, number) and
    # (subscription, period_start): the invoice run inserts thousands of invoices a batch, and an
    # index on either column alone would only cost it writes.
    # On PostgreSQL the three are checked by ONE foreign key, (subscription, organization,
    # customer) -> the subscription's (id, organization, customer): an invoice belongs to its
    # subscription's organization and customer, at a third of the cost of three checks. So an
    # AlterField of these fields must recreate that constraint (see invoicing 0007).
    organization = models.ForeignKey(
        "subscriptions.Organization", on_delete=models.PROTECT, related_name="invoices", db_index=False
    )
    customer = models.ForeignKey("subscriptions.Customer", on_delete=models.PROTECT, related_name="invoices")
    subscription = models.ForeignKey(
        "subscriptions.Subscription", on_delete=models.PROTECT, related_name="invoices", db_index=False
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DRAFT)
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()
    currency = models.CharField(max_length=3)
    subtotal = models.DecimalField(**MONEY)
    # The coupons' discounts (InvoiceDiscount rows), before tax: tax is on subtotal - discount_amount.
    discount_amount = models.DecimalField(**MONEY, default=0)
    tax_rate = models.DecimalField(max_digits=5, decimal_places=2, help_text="In percent")
    tax_amount = models.DecimalField(**MONEY)
    tax_reason = models.CharField(max_length=20, choices=TaxReason.choices)
    total = models.DecimalField(**MONEY)
    issued_at = models.DateTimeField()
    scheduled_finalize_at = models.DateTimeField()
    finalized_at = models.DateTimeField(null=True, blank=True)
    paid_at = models.DateTimeField(null=True, blank=True)
    voided_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # The snapshot (PARTY_SNAPSHOT_FIELDS): addresses as printed, one line a part, the country
    # by name last; the countries as codes too (the seller's picks the document's number format).
    seller_name = models.CharField(max_length=200, blank=True, default="")
    seller_address = models.TextField(blank=True, default="")
    seller_tax_id = models.CharField(max_length=50, blank=True, default="")
    seller_country = models.CharField(max_length=2, blank=True, default="")
    buyer_name = models.CharField(max_length=200, blank=True, default="")
    buyer_address = models.TextField(blank=True, default="")
    buyer_tax_id = models.CharField(max_length=50, blank=True, default="")
    buyer_email = models.CharField(max_length=254, blank=True, default="")
    buyer_external_id = models.CharField(max_length=200, blank=True, default="")
    buyer_country = models.CharField(max_length=2, blank=True, default="")
    subscription_external_id = models.CharField(max_length=200, blank=True, default="")
    # Prepaid credits taken from the customer's balance when the invoice was finalized (spec 10:
    # min(balance in the invoice's currency, total)); set in the UPDATE that finalizes it, then
    # locked with the rest. What is left to pay is derived (invoicing.credits.amount_due).
    credits_applied = models.DecimalField(**MONEY, default=0, db_default=0)

    objects = InvoiceQuerySet.as_manager()

    class Meta:
        ordering = ["-issued_at", "-id"]
        constraints = [
            # The last line of defence against double billing.
            models.UniqueConstraint(fields=["subscription", "period_start"], name="invoice_one_per_period"),
            models.UniqueConstraint(fields=["organization", "number"], name="invoice_number_unique"),
            models.CheckConstraint(
                condition=Q(period_end__gt=F("period_start")), name="invoice_period_not_empty"
            ),
            models.CheckConstraint(
                condition=Q(subtotal__gte=0, tax_amount__gte=0), name="invoice_amounts_not_negative"
            ),
            # Rounded to the column's 4 places: SQLite keeps decimals as binary floats, where
            # 262.87 + 56.48 != 319.35; on PostgreSQL's exact numeric the rounding changes nothing.
            models.CheckConstraint(
                condition=Q(total=Round(F("subtotal") - F("discount_amount") + F("tax_amount"), 4)),
                name="invoice_total_adds_up",
            ),
            models.CheckConstraint(
                condition=Q(discount_amount__gte=0, discount_amount__lte=F("subtotal")),
                name="invoice_discount_within_subtotal",
            ),
            models.CheckConstraint(
                condition=Q(tax_rate__gte=0, tax_rate__lte=100), name="invoice_tax_rate_percentage"
            ),
            models.CheckConstraint(
                condition=Q(credits_applied__gte=0, credits_applied__lte=F("total")),
                name="invoice_credits_applied_within_total",
            ),
            models.CheckConstraint(
                condition=Q(status__in=["DRAFT", "FINALIZED", "PAID", "VOID"]),
                name="invoice_status_valid",
            ),
            models.CheckConstraint(
                condition=Q(
                    tax_reason__in=[
                        "exempt",
                        "domestic",
                        "reverse charge",
                        "EU B2C",
                        "outside scope",
                    ]
                ),
                name="invoice_tax_reason_valid",
            ),
            models.CheckConstraint(
                condition=~Q(status__in=["FINALIZED", "PAID"]) | Q(finalized_at__isnull=False),
                name="invoice_finalized_has_date",
            ),
            models.CheckConstraint(
                condition=~Q(status="PAID") | Q(paid_at__isnull=False), name="invoice_paid_has_date"
            ),
            currency_is_three_letters("currency"),
        ]
        indexes = [
            models.Index(fields=["status", "scheduled_finalize_at"], name="invoice_due_finalize_idx"),
        ]

    def __str__(self):
        return self.number

    def save(self, *args, update_fields=None, **kwargs):
        if not self._state.adding and self.pk is not None:
            self.check_change_allowed(update_fields)
        super().save(*args, update_fields=update_fields, **kwargs)
        self._stored = {name: self.__dict__[name] for name in _GUARDED if name in self.__dict__}

    def delete(self, *args, **kwargs):
        if self._stored_values().get("status", self.Status.DRAFT) != self.Status.DRAFT:
            raise InvoiceLockedError(f"{self.number} is {self._stored['status']}: only drafts can be deleted")
        return super().delete(*args, **kwargs)

    # -- the guard: a finalized invoice never changes again ---------------------------------------

    @classmethod
    def from_db(cls, db, field_names, values):
        invoice = super().from_db(db, field_names, values)
        invoice._stored = {name: invoice.__dict__[name] for name in _GUARDED if name in invoice.__dict__}
        return invoice

    def check_change_allowed(self, update_fields=None) -> None:
        """Raise InvoiceLockedError if saving now would change what a non-draft keeps."""
        stored = self._stored_values()
        old = stored.get("status")
        written = None if update_fields is None else set(update_fields)

        def writes(attname):
            return written is None or attname in written or attname.removesuffix("_id") in written

        if old is None:
            return
        if old == self.Status.DRAFT:
            new = self.status if writes("status") else old
            if new not in DRAFT_EXITS:
                raise InvoiceLockedError(f"{self.number} cannot go from DRAFT to {new}: finalize it first")
            return

        changed = [f for f in LOCKED_FIELDS if f in stored and writes(f) and getattr(self, f) != stored[f]]
        if changed:
            raise InvoiceLockedError(
                f"{stored.get('number', self.number)} is {old}: {', '.join(changed)} cannot change"
            )
        new = self.status if writes("status") else old
        if new != old and (old, new) not in LOCKED_TRANSITIONS:
            raise InvoiceLockedError(f"{self.number} cannot go from {old} to {new}")
        for date_field in ("paid_at", "voided_at"):
            if writes(date_field) and getattr(self, date_field) != stored.get(date_field):
                if not (LOCKED_TRANSITIONS.get((old, new)) == date_field and stored.get(date_field) is None):
                    raise InvoiceLockedError(f"{self.number} is {old}: {date_field} cannot change")

    def _stored_values(self) -> dict:
        stored = getattr(self, "_stored", None)
        if stored is None or any(name not in stored for name in _GUARDED):
            # Built by hand or loaded with deferred fields: ask the database what is stored.
            stored = Invoice.objects.filter(pk=self.pk).values(*_GUARDED).first() or {}
            self._stored = stored
        return stored

    @property
    def is_editable(self) -> bool:
        return self.status == self.Status.DRAFT


PRICING_MODELS = ["PER_UNIT", "GRADUATED", "VOLUME", "PACKAGE", "PERCENTAGE", "GRADUATED_PERCENTAGE"]


class InvoiceLineItem(models.Model):
    class Kind(models.TextChoices):
        CHARGE = "CHARGE"  # a charge priced by its model
        MINIMUM = "MINIMUM"  # the true-up of a USAGE charge billed below its min_amount
        COMMITMENT = "COMMITMENT"  # the true-up of a period billed below the plan's minimum_commitment

    invoice = models.ForeignKey(  # indexed by the unique (invoice, charge, kind)
        Invoice, on_delete=models.CASCADE, related_name="line_items", db_index=False
    )
    # NULL only on the COMMITMENT line, which belongs to the plan, not to one charge.
    charge = models.ForeignKey(
        "subscriptions.Charge", on_delete=models.PROTECT, related_name="line_items", null=True, blank=True
    )
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.CHARGE)
    charge_type = models.CharField(max_length=10)
    description = models.CharField(max_length=200)
    quantity = models.DecimalField(max_digits=30, decimal_places=10)
    # The model's per-unit price where it has one (PER_UNIT, PACKAGE: per package; FIXED), else NULL;
    # a true-up line is 1 x its amount.
    unit_price = models.DecimalField(max_digits=24, decimal_places=10, null=True, blank=True)
    amount = models.DecimalField(**MONEY)
    # CHARGE lines: the charge's model when billed; NULL (not "") on the true-up lines, which no
    # model priced.
    pricing_model = models.CharField(  # noqa: DJ001
        max_length=20, null=True, blank=True, default="PER_UNIT"
    )
    # The breakdown, exact decimals as strings: [{"from", "to", "units", "unit_price", "rate",
    # "flat_fee", "amount"}]; [] for PER_UNIT and FIXED.
    details = models.JSONField(default=list, blank=True)
    # The pricing terms the line was billed with (invoicing.pricing.terms.PricingTerms.snapshot), so
    # that it can be priced again from itself after the plan's prices change. {} on lines written
    # before pricing models existed: PER_UNIT at the line's unit_price.
    terms = models.JSONField(default=dict, blank=True)
    position = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["position", "id"]
        constraints = [
            models.UniqueConstraint(fields=["invoice", "charge", "kind"], name="invoice_line_one_per_charge"),
            models.UniqueConstraint(
                fields=["invoice"], condition=Q(kind="COMMITMENT"), name="invoice_line_one_commitment"
            ),
            models.CheckConstraint(
                condition=Q(quantity__gte=0, amount__gte=0, unit_price__gte=0),
                name="invoice_line_not_negative",
            ),
            models.CheckConstraint(
                # pricing_model NOT NULL spelled out: `NULL IN (...)` is NULL, which a CHECK lets pass.
                condition=Q(
                    kind="CHARGE",
                    charge__isnull=False,
                    pricing_model__isnull=False,
                    pricing_model__in=PRICING_MODELS,
                )
                | Q(kind="MINIMUM", charge__isnull=False, pricing_model__isnull=True)
                | Q(kind="COMMITMENT", charge__isnull=True, pricing_model__isnull=True),
                name="invoice_line_kind_matches_charge",
            ),
        ]

    def __str__(self):
        return self.description

    def save(self, *args, **kwargs):
        self._refuse_if_locked()
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        self._refuse_if_locked()
        return super().delete(*args, **kwargs)

    @property
    def meter(self):
        """The meter a usage line counts, through its charge (what invoicing.usage asks)."""
        return self.charge.meter

    def _refuse_if_locked(self) -> None:
        ids = {self.invoice_id}
        if self.pk is not None:  # a line moved to another invoice leaves its old one changed too
            ids |= set(InvoiceLineItem.objects.filter(pk=self.pk).values_list("invoice_id", flat=True))
        locked = Invoice.objects.filter(pk__in=ids).exclude(status=Invoice.Status.DRAFT).first()
        if locked is not None:
            raise InvoiceLockedError(f"{locked.number} is {locked.status}: its line items cannot change")


class Coupon(models.Model):
    """A discount an organization offers (spec section 10): percent_off, or amount_off in a currency;
    for the next invoice (ONCE), the next `duration_in_periods` (REPEATING) or every one (FOREVER).
    A coupon is never edited once created: the invoices it discounted keep its terms on their
    InvoiceDiscount rows anyway."""

    class Duration(models.TextChoices):
        ONCE = "ONCE"
        REPEATING = "REPEATING"
        FOREVER = "FOREVER"

    # Indexed by the unique (organization, code).
    organization = models.ForeignKey(
        "subscriptions.Organization", on_delete=models.PROTECT, related_name="coupons", db_index=False
    )
    code = models.CharField(max_length=100, validators=[refuse_control_characters])
    name = models.CharField(max_length=200, blank=True, validators=[refuse_control_characters])
    percent_off = models.DecimalField(
        max_digits=7, decimal_places=4, null=True, blank=True, help_text="In percent, above 0, at most 100"
    )
    amount_off = models.DecimalField(**MONEY, null=True, blank=True)
    currency = models.CharField(
        max_length=3, blank=True, default="", help_text="amount_off's; empty for percent"
    )
    duration = models.CharField(max_length=10, choices=Duration.choices)
    duration_in_periods = models.PositiveIntegerField(null=True, blank=True, help_text="REPEATING only")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["code"]
        constraints = [
            models.UniqueConstraint(fields=["organization", "code"], name="coupon_code_unique"),
            models.CheckConstraint(
                condition=Q(
                    percent_off__isnull=False,
                    percent_off__gt=0,
                    percent_off__lte=100,
                    amount_off__isnull=True,
                    currency="",
                )
                | (
                    Q(percent_off__isnull=True, amount_off__isnull=False, amount_off__gt=0)
                    & Exact(Length("currency"), 3)
                ),
                name="coupon_percent_or_amount",
            ),
            models.CheckConstraint(
                condition=Q(duration__in=["ONCE", "FOREVER"], duration_in_periods__isnull=True)
                | Q(duration="REPEATING", duration_in_periods__isnull=False, duration_in_periods__gte=1),
                name="coupon_duration_periods",
            ),
        ]

    def __str__(self):
        return self.code

    @property
    def max_uses(self) -> int | None:
        """How many invoices it discounts: 1, n, or None (no end)."""
        return {"ONCE": 1, "FOREVER": None}.get(self.duration, self.duration_in_periods)


class CouponAttachment(models.Model):
    """A coupon attached to a subscription: it discounts the subscription's invoices issued from
    `attached_at` on, in attachment order (attached_at, id), until `uses_counted` reaches
    `max_uses` (copied from the coupon: 1 for ONCE, n for REPEATING, NULL for FOREVER). A use is
    one InvoiceDiscount row on an invoice that is not VOID; the CHECK below refuses a use past the
    coupon's duration, whoever writes it (two runs racing included)."""

    # Indexed by the unique (subscription, coupon).
    subscription = models.ForeignKey(
        "subscriptions.Subscription",
        on_delete=models.CASCADE,
        related_name="coupon_attachments",
        db_index=False,
    )
    coupon = models.ForeignKey(Coupon, on_delete=models.PROTECT, related_name="attachments")
    attached_at = models.DateTimeField()
    max_uses = models.PositiveIntegerField(null=True, blank=True, help_text="NULL: FOREVER")
    uses_counted = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["attached_at", "id"]
        constraints = [
            # D: the same coupon twice on one subscription is refused (409), not stacked.
            models.UniqueConstraint(fields=["subscription", "coupon"], name="coupon_attached_once"),
            models.CheckConstraint(
                condition=Q(max_uses__isnull=True) | Q(uses_counted__lte=F("max_uses")),
                name="coupon_uses_within_duration",
            ),
            models.CheckConstraint(
                condition=Q(max_uses__isnull=True) | Q(max_uses__gte=1), name="coupon_max_uses_positive"
            ),
        ]

    def __str__(self):
        return f"{self.coupon} on {self.subscription_id}"


class InvoiceDiscount(models.Model):
    """One coupon's discount on one invoice, with the coupon's terms as applied (so it can be
    recomputed from itself: the finalization refresh, verify_invoices)."""

    invoice = models.ForeignKey(  # indexed by the unique (invoice, attachment)
        Invoice, on_delete=models.CASCADE, related_name="discounts", db_index=False
    )
    attachment = models.ForeignKey(CouponAttachment, on_delete=models.PROTECT, related_name="discounts")
    coupon_code = models.CharField(max_length=100)
    percent_off = models.DecimalField(max_digits=7, decimal_places=4, null=True, blank=True)
    amount_off = models.DecimalField(**MONEY, null=True, blank=True)
    amount = models.DecimalField(**MONEY)
    position = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["position", "id"]
        constraints = [
            # A coupon use is counted once per invoice.
            models.UniqueConstraint(
                fields=["invoice", "attachment"], name="invoice_discount_once_per_coupon"
            ),
            models.CheckConstraint(condition=Q(amount__gte=0), name="invoice_discount_not_negative"),
            models.CheckConstraint(
                condition=Q(percent_off__isnull=False, amount_off__isnull=True)
                | Q(percent_off__isnull=True, amount_off__isnull=False),
                name="invoice_discount_percent_or_amount",
            ),
        ]

    def __str__(self):
        return f"{self.coupon_code}: {self.amount}"

    def save(self, *args, **kwargs):
        self._refuse_if_locked()
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        self._refuse_if_locked()
        return super().delete(*args, **kwargs)

    def _refuse_if_locked(self) -> None:
        """As a line's: a finalized, paid or void invoice's discounts never change (the model's
        guard only; the invoice's own discount_amount is locked by the database's trigger)."""
        locked = Invoice.objects.filter(pk=self.invoice_id).exclude(status=Invoice.Status.DRAFT).first()
        if locked is not None:
            raise InvoiceLockedError(f"{locked.number} is {locked.status}: its discounts cannot change")


class WorkerRun(models.Model):
    class Status(models.TextChoices):
        RUNNING = "RUNNING"
        SUCCEEDED = "SUCCEEDED"
        FAILED = "FAILED"
        INTERRUPTED = "INTERRUPTED"
        # Its process died without recording an end (invoicing.run_lease closes such rows).
        ABANDONED = "ABANDONED"

    worker = models.CharField(max_length=50)
    run_id = models.CharField(max_length=8, unique=True)
    scope = models.CharField(
        max_length=20, default="all", help_text="all: a full run; subscription: one subscription"
    )
    billed_at = models.DateTimeField(help_text="The moment the run billed as (--now replays it)")
    started_at = models.DateTimeField(help_text="Wall-clock time")
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(
        null=True, blank=True, help_text="Wall-clock time the run last showed signs of life"
    )
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.RUNNING)
    processed = models.PositiveIntegerField(default=0)
    successful = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    skipped = models.PositiveIntegerField(default=0)
    invoices_created = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-started_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(processed=F("successful") + F("failed") + F("skipped")),
                name="worker_run_counts_add_up",
            ),
            models.CheckConstraint(
                condition=Q(status="RUNNING") | Q(finished_at__isnull=False),
                name="worker_run_finished_has_date",
            ),
            models.CheckConstraint(
                condition=Q(status__in=["RUNNING", "SUCCEEDED", "FAILED", "INTERRUPTED", "ABANDONED"]),
                name="worker_run_status_known",
            ),
        ]
        indexes = [models.Index(fields=["worker", "status", "-finished_at"], name="worker_run_health_idx")]

    def __str__(self):
        return f"{self.worker} {self.run_id}"


class CreditNote(models.Model):
    """A correction of a FINALIZED or PAID invoice (spec section 10): lines crediting the invoice's
    lines before tax, tax at the invoice's own rate. The invoice itself never changes; its
    credited_amount and amount_due are derived from its credit notes (invoicing.credits).

    The total splits in three, by what the credit does (CHECK: they add up to the total):
    `applied_to_invoice` lowers what is still due on an unpaid invoice; the rest goes, by `method`,
    to the customer's credit balance (`credited_to_balance`, a CREDIT_NOTE ledger entry) or is a
    refund to be paid out (`refund_amount`, `refunded_at` NULL until it has been)."""

    class Reason(models.TextChoices):
        DUPLICATE = "DUPLICATE"
        ORDER_CHANGE = "ORDER_CHANGE"
        PRODUCT_UNSATISFACTORY = "PRODUCT_UNSATISFACTORY"
        OTHER = "OTHER"

    class Method(models.TextChoices):
        CREDIT_BALANCE = "CREDIT_BALANCE"
        REFUND = "REFUND"

    organization = models.ForeignKey(  # indexed by the unique (organization, number)
        "subscriptions.Organization", on_delete=models.PROTECT, related_name="credit_notes", db_index=False
    )
    invoice = models.ForeignKey(Invoice, on_delete=models.PROTECT, related_name="credit_notes")
    number = models.CharField(max_length=32)
    reason = models.CharField(max_length=30, choices=Reason.choices)
    method = models.CharField(max_length=20, choices=Method.choices)
    description = models.CharField(max_length=500, blank=True, default="")
    currency = models.CharField(max_length=3)
    subtotal = models.DecimalField(**MONEY)
    tax_rate = models.DecimalField(max_digits=5, decimal_places=2, help_text="The invoice's, in percent")
    tax_amount = models.DecimalField(**MONEY)
    total = models.DecimalField(**MONEY)
    applied_to_invoice = models.DecimalField(**MONEY, default=0)
    credited_to_balance = models.DecimalField(**MONEY, default=0)
    refund_amount = models.DecimalField(**MONEY, default=0)
    refunded_at = models.DateTimeField(null=True, blank=True)
    issued_at = models.DateTimeField()

    class Meta:
        ordering = ["-issued_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["organization", "number"], name="credit_note_number_unique"),
            models.CheckConstraint(
                condition=Q(subtotal__gt=0, tax_amount__gte=0), name="credit_note_amounts_positive"
            ),
            models.CheckConstraint(
                condition=Q(total=Round(F("subtotal") + F("tax_amount"), 4)), name="credit_note_total_adds_up"
            ),
            models.CheckConstraint(
                condition=Q(applied_to_invoice__gte=0, credited_to_balance__gte=0, refund_amount__gte=0)
                & Q(total=Round(F("applied_to_invoice") + F("credited_to_balance") + F("refund_amount"), 4)),
                name="credit_note_split_adds_up",
            ),
            models.CheckConstraint(
                condition=Q(method="CREDIT_BALANCE", refund_amount=0)
                | Q(method="REFUND", credited_to_balance=0),
                name="credit_note_split_follows_method",
            ),
            models.CheckConstraint(
                condition=Q(reason__in=["DUPLICATE", "ORDER_CHANGE", "PRODUCT_UNSATISFACTORY", "OTHER"]),
                name="credit_note_reason_valid",
            ),
            currency_is_three_letters("currency"),
        ]

    def __str__(self):
        return self.number


class CreditNoteLine(models.Model):
    """`amount` (before tax) credited on one line of the credit note's invoice. The database refuses
    a line of another invoice and more than is left uncredited of the invoice line (triggers of
    the migration `credit_notes_and_prepaid_credits`, which lock the invoice line first)."""

    credit_note = models.ForeignKey(CreditNote, on_delete=models.CASCADE, related_name="lines")
    invoice_line = models.ForeignKey(InvoiceLineItem, on_delete=models.PROTECT, related_name="credit_lines")
    amount = models.DecimalField(**MONEY)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["credit_note", "invoice_line"], name="credit_note_line_once"),
            models.CheckConstraint(condition=Q(amount__gt=0), name="credit_note_line_positive"),
        ]

    def __str__(self):
        return f"{self.credit_note_id}: {self.amount}"


class CreditLedgerEntry(models.Model):
    """One movement of a customer's prepaid credits in one currency; the balance is the sum of the
    entries (never below 0: the migration's triggers refuse an insert that would make it so), and
    entries are never changed.

    GRANT (+, an optional expires_at), CREDIT_NOTE (+, a credit note's credited_to_balance),
    APPLICATION (-, taken by an invoice at finalization: at most one per invoice), EXPIRY (-, the
    unused remainder of a grant once it has expired: at most one per grant), REVERSAL (+, what a
    voided invoice had taken, given back: at most one per invoice; it never expires)."""

    class Kind(models.TextChoices):
        GRANT = "GRANT"
        CREDIT_NOTE = "CREDIT_NOTE"
        APPLICATION = "APPLICATION"
        EXPIRY = "EXPIRY"
        REVERSAL = "REVERSAL"

    customer = models.ForeignKey(  # indexed by (customer, currency)
        "subscriptions.Customer", on_delete=models.PROTECT, related_name="credit_entries", db_index=False
    )
    currency = models.CharField(max_length=3)
    kind = models.CharField(max_length=12, choices=Kind.choices)
    amount = models.DecimalField(**MONEY)
    description = models.CharField(max_length=500, blank=True, default="")
    expires_at = models.DateTimeField(null=True, blank=True)
    invoice = models.ForeignKey(  # indexed by the unique application per invoice
        Invoice,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="credit_entries",
        db_index=False,
    )
    credit_note = models.ForeignKey(
        CreditNote, on_delete=models.PROTECT, null=True, blank=True, related_name="credit_entries"
    )
    # EXPIRY: the grant whose remainder expired.
    grant = models.ForeignKey(
        "self", on_delete=models.PROTECT, null=True, blank=True, related_name="expiries", db_index=False
    )
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["customer", "currency"], name="credit_entry_customer_idx")]
        constraints = [
            models.UniqueConstraint(
                fields=["invoice"], condition=Q(kind="APPLICATION"), name="credit_application_once"
            ),
            models.UniqueConstraint(fields=["grant"], condition=Q(kind="EXPIRY"), name="credit_expiry_once"),
            models.UniqueConstraint(
                fields=["invoice"], condition=Q(kind="REVERSAL"), name="credit_reversal_once"
            ),
            models.UniqueConstraint(
                fields=["credit_note"], condition=Q(kind="CREDIT_NOTE"), name="credit_note_entry_once"
            ),
            models.CheckConstraint(
                condition=Q(kind="GRANT", amount__gt=0, invoice__isnull=True, credit_note__isnull=True)
                | Q(kind="CREDIT_NOTE", amount__gt=0, credit_note__isnull=False, expires_at__isnull=True)
                | Q(kind="APPLICATION", amount__lt=0, invoice__isnull=False, expires_at__isnull=True)
                | Q(kind="EXPIRY", amount__lt=0, grant__isnull=False, expires_at__isnull=True)
                | Q(kind="REVERSAL", amount__gt=0, invoice__isnull=False, expires_at__isnull=True),
                name="credit_entry_kind_shape",
            ),
            currency_is_three_letters("currency"),
        ]

    def __str__(self):
        return f"{self.kind} {self.amount} {self.currency}"
