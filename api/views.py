"""The HTTP API (spec sections 5 and 7). Views are thin: they scope every query to the caller's
organization, validate shapes with serializers and call the services and selectors."""

from datetime import UTC

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Prefetch
from django.http import HttpResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema,
    extend_schema_view,
)
from rest_framework import generics, status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from api import serializers as s
from api.errors import Conflict, Unprocessable, field_map
from api.filters import CreditNoteFilter, InvoiceFilter
from api.idempotency import HEADER, idempotent
from api.parsers import ExactNumbersJSONParser
from api.schema import IDEMPOTENCY_KEY_SCHEMA, MAX_ID
from core.money import AmountTooLarge
from invoicing import credits as prepaid_credits
from invoicing import services as invoice_services
from invoicing.coupons import CouponConflict, attach_coupon, create_coupon
from invoicing.credit_notes import LineCredit, issue_credit_note, with_credit_totals
from invoicing.documents import (
    credit_note_pdf_filename,
    pdf_filename,
    render_credit_note_pdf,
    render_invoice_pdf,
)
from invoicing.manual_trigger import bill_subscription_now
from invoicing.models import (
    Coupon,
    CouponAttachment,
    CreditLedgerEntry,
    CreditNote,
    Invoice,
    InvoiceDiscount,
    InvoiceLineItem,
)
from invoicing.pricing import CouponCurrencyMismatch
from invoicing.run import MAX_PERIODS_PER_SUBSCRIPTION
from invoicing.selectors import upcoming_invoice, worker_health
from metering.models import Meter
from metering.selectors import stored_event
from metering.services import MAX_BATCH, create_meter, ingest_events
from subscriptions.models import Charge, Customer, Plan, Subscription
from subscriptions.services import (
    CancelRefused,
    cancel_subscription,
    create_customer,
    create_plan,
    start_subscription,
)

E = s.ErrorSerializer
UNAUTHORIZED = OpenApiResponse(E, description="No API key, or an unknown or revoked one")
NOT_FOUND = OpenApiResponse(E, description="No such object in your organization")
BAD_REQUEST = OpenApiResponse(E, description="Malformed JSON or invalid fields; the message names the field")
IDEMPOTENCY = OpenApiParameter(
    HEADER,
    IDEMPOTENCY_KEY_SCHEMA,
    OpenApiParameter.HEADER,
    description="Optional; 1 to 255 characters, not only spaces (else a 400). The same key with the same "
    "body within 24 hours replays the first answer; with another body it is a 422. While the first "
    "request runs (a 5-minute lease) a retry is a 409 with Retry-After.",
)
IDEMPOTENCY_ERRORS = {
    400: OpenApiResponse(
        E, description="Invalid input, or an Idempotency-Key that is empty, only spaces or too long"
    ),
    409: OpenApiResponse(
        E, description="A request with this Idempotency-Key is still running, or a conflict"
    ),
    422: OpenApiResponse(
        E, description="Idempotency-Key reused with another body, or the request cannot be processed"
    ),
}


class OrganizationScoped:
    """Every queryset is the caller's organization's: another organization's object is a 404."""

    def organization(self):
        return self.request.auth.organization

    def get_serializer_context(self):
        context = super().get_serializer_context()
        if getattr(self.request, "auth", None) is not None:
            context["organization"] = self.organization()
        return context

    def get_object(self):
        # A path id that is not a database integer cannot name anything: 404, not a database error.
        raw = self.kwargs.get("pk", "")
        if not (raw.isascii() and raw.isdigit()) or not 0 < int(raw) <= MAX_ID:
            raise NotFound(f"no {self.queryset.model._meta.verbose_name} has the id {raw[:40]!r}")
        return super().get_object()


def list_create(name, serializer, tag):
    return extend_schema_view(
        get=extend_schema(
            tags=[tag],
            summary=f"List {name}s",
            responses={200: serializer(many=True), 400: BAD_REQUEST, 401: UNAUTHORIZED, 404: NOT_FOUND},
        ),
        post=extend_schema(
            tags=[tag],
            summary=f"Create a {name}",
            parameters=[IDEMPOTENCY],
            responses={201: serializer, 400: BAD_REQUEST, 401: UNAUTHORIZED, **IDEMPOTENCY_ERRORS},
        ),
    )


def retrieve(name, serializer, tag):
    return extend_schema_view(
        get=extend_schema(
            tags=[tag],
            summary=f"Read a {name}",
            responses={200: serializer, 401: UNAUTHORIZED, 404: NOT_FOUND},
        )
    )


class ScopedListCreate(OrganizationScoped, generics.ListCreateAPIView):
    def get_queryset(self):
        return self.queryset.filter(organization=self.organization()).order_by("id")

    @idempotent
    def post(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        instance = self.create_object(serializer.validated_data)
        return Response(self.get_serializer(self.reread(instance)).data, status=status.HTTP_201_CREATED)

    def reread(self, instance):
        return instance


class ScopedRetrieve(OrganizationScoped, generics.RetrieveAPIView):
    def get_queryset(self):
        return self.queryset.filter(organization=self.organization())


# -- customers -------------------------------------------------------------------------------------


@list_create("customer", s.CustomerSerializer, "customers")
class CustomerList(ScopedListCreate):
    queryset = Customer.objects.all()
    serializer_class = s.CustomerSerializer

    def create_object(self, data):
        return create_customer(organization=self.organization(), **data)


@retrieve("customer", s.CustomerSerializer, "customers")
class CustomerDetail(ScopedRetrieve):
    queryset = Customer.objects.all()
    serializer_class = s.CustomerSerializer


# -- meters ----------------------------------------------------------------------------------------


@list_create("meter", s.MeterSerializer, "meters")
class MeterList(ScopedListCreate):
    queryset = Meter.objects.all()
    serializer_class = s.MeterSerializer

    def create_object(self, data):
        return create_meter(organization=self.organization(), **data)


@retrieve("meter", s.MeterSerializer, "meters")
class MeterDetail(ScopedRetrieve):
    queryset = Meter.objects.all()
    serializer_class = s.MeterSerializer


# -- plans -----------------------------------------------------------------------------------------

CHARGES = Prefetch("charges", queryset=Charge.objects.select_related("meter"))


@list_create("plan", s.PlanSerializer, "plans")
class PlanList(ScopedListCreate):
    queryset = Plan.objects.prefetch_related(CHARGES)
    serializer_class = s.PlanSerializer
    # Prices may come as JSON numbers (spec section 8): read exactly, never through a float.
    parser_classes = [ExactNumbersJSONParser]

    def create_object(self, data):
        return create_plan(organization=self.organization(), **data)

    def reread(self, instance):
        return self.get_queryset().get(id=instance.id)


@retrieve("plan", s.PlanSerializer, "plans")
class PlanDetail(ScopedRetrieve):
    queryset = Plan.objects.prefetch_related(CHARGES)
    serializer_class = s.PlanSerializer


# -- subscriptions ---------------------------------------------------------------------------------


@list_create("subscription", s.SubscriptionSerializer, "subscriptions")
class SubscriptionList(ScopedListCreate):
    queryset = Subscription.objects.select_related("plan")
    serializer_class = s.SubscriptionSerializer

    def create_object(self, data):
        return start_subscription(
            customer=data["customer_id"],
            plan=data["plan"]["code"],
            external_id=data["external_id"],
            start_at=data.get("start_at") or timezone.now(),
        )


@retrieve("subscription", s.SubscriptionSerializer, "subscriptions")
class SubscriptionDetail(ScopedRetrieve):
    queryset = Subscription.objects.select_related("plan")
    serializer_class = s.SubscriptionSerializer


class SubscriptionAction(OrganizationScoped, generics.GenericAPIView):
    queryset = Subscription.objects.select_related("plan", "customer", "organization")

    def get_queryset(self):
        return self.queryset.filter(organization=self.organization())


class CancelSubscription(SubscriptionAction):
    serializer_class = s.CancelSerializer

    @extend_schema(
        tags=["subscriptions"],
        summary="Cancel a subscription",
        description="Periods that already ended are billed first (as generate-invoice does). Then "
        "`at_period_end: true` bills the current period at its end, then cancels; `false` cancels now "
        "and bills nothing more. 409 for a canceled subscription, and when ended periods are still "
        "unbilled (more than one request bills, billing failed): nothing is canceled then.",
        request=s.CancelSerializer,
        parameters=[IDEMPOTENCY],
        responses={
            200: s.SubscriptionSerializer,
            400: BAD_REQUEST,
            401: UNAUTHORIZED,
            404: NOT_FOUND,
            **IDEMPOTENCY_ERRORS,
        },
    )
    @idempotent
    def post(self, request, *args, **kwargs):
        subscription = self.get_object()
        serializer = s.CancelSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        if subscription.status == Subscription.Status.CANCELED:
            raise Conflict(f"subscription {subscription.external_id} is already canceled")
        try:
            subscription = cancel_subscription(
                subscription, at_period_end=serializer.validated_data["at_period_end"], now=timezone.now()
            )
        except CancelRefused as exc:
            raise Conflict(exc.message) from exc
        return Response(s.SubscriptionSerializer(subscription).data)


class GenerateInvoice(SubscriptionAction):
    serializer_class = s.GeneratedInvoicesSerializer

    @extend_schema(
        tags=["subscriptions"],
        summary="Bill a subscription now (the manual trigger)",
        description="Runs the invoice run for this subscription alone: the same service as the worker. "
        "201 with the invoices it created (one per ended period, at most the "
        f"{MAX_PERIODS_PER_SUBSCRIPTION} oldest: `more_due: true` and a detail when more have ended), "
        "or 200 with an empty list and a detail saying why nothing was billed. 422 when billing failed "
        "(the detail says why).",
        request=None,
        parameters=[IDEMPOTENCY],
        responses={
            201: s.GeneratedInvoicesSerializer,
            200: s.GeneratedInvoicesSerializer,
            401: UNAUTHORIZED,
            404: NOT_FOUND,
            **IDEMPOTENCY_ERRORS,
        },
    )
    @idempotent
    def post(self, request, *args, **kwargs):
        subscription = self.get_object()
        result = bill_subscription_now(subscription, timezone.now())
        if result.failed:
            raise Unprocessable(result.detail)
        if result.invoices:
            invoices = (
                invoice_detail_queryset()
                .filter(id__in=[i.id for i in result.invoices])
                .order_by("period_start")
            )
            body = {
                "invoices": s.InvoiceDetailSerializer(invoices, many=True).data,
                "more_due": result.more_due,
            }
            if result.more_due:
                body["detail"] = result.detail
            return Response(body, status=status.HTTP_201_CREATED)
        return Response({"invoices": [], "detail": result.detail})


@extend_schema_view(
    get=extend_schema(
        tags=["subscriptions"],
        summary="Preview the current period's invoice",
        description="What the current period would bill if it ended now (fixed charges plus the usage "
        "recorded so far), priced and taxed as the invoice run will. Writes nothing. 409 for a canceled "
        "subscription or when no tax rate applies.",
        responses={
            200: s.UpcomingInvoiceSerializer,
            401: UNAUTHORIZED,
            404: NOT_FOUND,
            409: OpenApiResponse(E, description="Canceled subscription, or no tax rate configured"),
            422: OpenApiResponse(
                E,
                description="An amount too large for an invoice, or a coupon in another currency than "
                "the plan's (the detail says which)",
            ),
        },
    )
)
class UpcomingInvoice(SubscriptionAction):
    serializer_class = s.UpcomingInvoiceSerializer

    def get(self, request, *args, **kwargs):
        subscription = self.get_object()
        if subscription.status == Subscription.Status.CANCELED:
            raise Conflict(f"subscription {subscription.external_id} is canceled: nothing is upcoming")
        try:
            draft = upcoming_invoice(subscription, timezone.now())
        except (AmountTooLarge, CouponCurrencyMismatch) as exc:  # the run fails it with the same reason
            raise Unprocessable(str(exc)) from None
        return Response(s.UpcomingInvoiceSerializer(draft).data)


# -- coupons ---------------------------------------------------------------------------------------


@list_create("coupon", s.CouponSerializer, "coupons")
class CouponList(ScopedListCreate):
    queryset = Coupon.objects.all()
    serializer_class = s.CouponSerializer
    parser_classes = [ExactNumbersJSONParser]

    def create_object(self, data):
        # The serializer refuses what the schema states (400); the rules across fields (percent or
        # amount, a currency with an amount, duration_in_periods for REPEATING only) are a 422
        # naming the field.
        try:
            return create_coupon(organization=self.organization(), **data)
        except DjangoValidationError as exc:
            raise Unprocessable(field_map(exc)) from None


@retrieve("coupon", s.CouponSerializer, "coupons")
class CouponDetail(ScopedRetrieve):
    queryset = Coupon.objects.all()
    serializer_class = s.CouponSerializer


@extend_schema_view(
    get=extend_schema(
        tags=["subscriptions"],
        summary="List a subscription's coupons",
        description="In attachment order: the order they apply in, each to what the ones before left.",
        responses={
            200: s.CouponAttachmentSerializer(many=True),
            400: BAD_REQUEST,
            401: UNAUTHORIZED,
            404: NOT_FOUND,
        },
    ),
    post=extend_schema(
        tags=["subscriptions"],
        summary="Attach a coupon to a subscription",
        description="It discounts the invoices issued from now on (ONCE: the next; REPEATING: the next "
        "n; FOREVER: all), after the coupons attached before it. 422 for an unknown coupon or a fixed "
        "amount in another currency than the plan's; 409 when the coupon is already attached.",
        request=s.AttachCouponSerializer,
        parameters=[IDEMPOTENCY],
        responses={
            201: s.CouponAttachmentSerializer,
            400: BAD_REQUEST,
            401: UNAUTHORIZED,
            404: NOT_FOUND,
            **IDEMPOTENCY_ERRORS,
        },
    ),
)
class SubscriptionCoupons(SubscriptionAction):
    serializer_class = s.CouponAttachmentSerializer

    def get(self, request, *args, **kwargs):
        subscription = self.get_object()
        attachments = CouponAttachment.objects.filter(subscription=subscription).select_related("coupon")
        page = self.paginate_queryset(attachments.order_by("attached_at", "id"))
        return self.get_paginated_response(s.CouponAttachmentSerializer(page, many=True).data)

    @idempotent
    def post(self, request, *args, **kwargs):
        subscription = self.get_object()
        serializer = s.AttachCouponSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        code = serializer.validated_data["coupon"]
        coupon = Coupon.objects.filter(organization=self.organization(), code=code).first()
        if coupon is None:
            raise Unprocessable({"coupon": [f"unknown coupon {code!r}"]})
        try:
            attachment = attach_coupon(subscription, coupon, timezone.now())
        except DjangoValidationError as exc:
            raise Unprocessable(field_map(exc)) from None
        except CouponConflict as exc:
            raise Conflict(str(exc)) from None
        return Response(s.CouponAttachmentSerializer(attachment).data, status=status.HTTP_201_CREATED)


# -- events ----------------------------------------------------------------------------------------


class Events(OrganizationScoped, APIView):
    # Ingestion is idempotent by transaction_id: an Idempotency-Key's retry learns the stored events
    # anyway, so events are not held in the key's transaction (see api.idempotency).
    idempotency_in_transaction = False

    @extend_schema(
        tags=["events"],
        summary="Ingest one usage event or a batch of up to 1000",
        description="One event: 201 with the stored event, 200 with the stored event when its "
        "transaction_id was seen before (never stored twice), 422 when it is invalid. "
        '`{"events": [...]}`: 200 with one result per event (index, status created / duplicate / '
        "rejected, errors); valid events are stored even when a neighbour is rejected.",
        request=PolymorphicProxySerializer(
            component_name="EventOrBatch",
            serializers=[s.EventInSerializer, s.EventBatchInSerializer],
            resource_type_field_name=None,
        ),
        parameters=[IDEMPOTENCY],
        responses={
            200: OpenApiResponse(
                PolymorphicProxySerializer(
                    component_name="EventOrBatchResult",
                    serializers=[s.EventSerializer, s.EventBatchResultSerializer],
                    resource_type_field_name=None,
                ),
                description="A replayed event (the stored one), or a batch's results",
            ),
            201: s.EventSerializer,
            400: BAD_REQUEST,
            401: UNAUTHORIZED,
            409: IDEMPOTENCY_ERRORS[409],
            422: OpenApiResponse(E, description="The event is invalid; the message names the field"),
        },
    )
    @idempotent
    def post(self, request, *args, **kwargs):
        data = request.data
        if isinstance(data, dict) and "events" in data:
            events = data["events"]
            if not isinstance(events, list) or not 0 < len(events) <= MAX_BATCH:
                raise ValidationError({"events": [f"must be a list of 1 to {MAX_BATCH} events"]})
            results = ingest_events(self.organization(), events, timezone.now())
            return Response(batch_answer(results))
        if not isinstance(data, dict):
            raise ValidationError({"non_field_errors": ['an event object or {"events": [...]}']})
        result = ingest_events(self.organization(), [data], timezone.now())[0]
        if result.status == "rejected":
            return Response(
                {
                    name: [message] if isinstance(message, str) else message
                    for name, message in result.errors.items()
                },
                status=status.HTTP_422_UNPROCESSABLE_ENTITY,
            )
        event = stored_event(self.organization().id, result.event_id)
        code = status.HTTP_201_CREATED if result.status == "created" else status.HTTP_200_OK
        return Response(event_answer(event), status=code)


def event_answer(event: dict) -> dict:
    """s.EventSerializer's output, built by hand: the serializer's per-call field copies cost more
    than the rest of a single-event POST's answer."""
    return {
        **event,
        "timestamp": iso_timestamp(event["timestamp"]),
        "properties": {str(key): value for key, value in event["properties"].items()},
        "received_at": iso_timestamp(event["received_at"]),
    }


def iso_timestamp(value) -> str:
    """As DRF's DateTimeField writes it: ISO 8601 in UTC with a Z."""
    text = value.astimezone(UTC).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def batch_answer(results) -> dict:
    """Built by hand, not by a serializer: a batch answers up to 1000 results."""
    counts = {"created": 0, "duplicate": 0, "rejected": 0}
    rows = []
    for r in results:
        counts[r.status] += 1
        row = {"index": r.index, "status": r.status, "transaction_id": r.transaction_id, "id": r.event_id}
        if r.errors:
            row["errors"] = r.errors
        rows.append(row)
    return {
        "created": counts["created"],
        "duplicates": counts["duplicate"],
        "rejected": counts["rejected"],
        "results": rows,
    }


# -- invoices --------------------------------------------------------------------------------------


def invoice_detail_queryset():
    return with_credit_totals(Invoice.objects.all()).prefetch_related(
        Prefetch("line_items", queryset=InvoiceLineItem.objects.order_by("position", "id")),
        Prefetch("discounts", queryset=InvoiceDiscount.objects.order_by("position", "id")),
    )


@extend_schema_view(
    get=extend_schema(
        tags=["invoices"],
        summary="List invoices",
        description="Newest first. Filters: subscription, customer, status, period (an instant inside "
        "the period), period_start_after, period_start_before.",
        responses={200: s.InvoiceSerializer(many=True), 400: BAD_REQUEST, 401: UNAUTHORIZED, 404: NOT_FOUND},
    )
)
class InvoiceList(OrganizationScoped, generics.ListAPIView):
    serializer_class = s.InvoiceSerializer
    filterset_class = InvoiceFilter
    queryset = Invoice.objects.all()

    def get_queryset(self):
        return Invoice.objects.filter(organization=self.organization()).order_by("-issued_at", "-id")


@retrieve("invoice", s.InvoiceDetailSerializer, "invoices")
class InvoiceDetail(ScopedRetrieve):
    serializer_class = s.InvoiceDetailSerializer
    queryset = invoice_detail_queryset()


@extend_schema(
    tags=["invoices"],
    summary="Download an invoice as PDF",
    description="The printable invoice (the same template as the admin's print view) as a PDF file.",
    responses={
        (200, "application/pdf"): OpenApiTypes.BINARY,
        (401, "application/json"): UNAUTHORIZED,
        (404, "application/json"): NOT_FOUND,
    },
)
class PdfDownload(OrganizationScoped, generics.GenericAPIView):
    """A document of the key's organization (`queryset`'s model) as a PDF file: `render` makes the
    bytes, `filename` names the download."""

    render = None
    filename = None

    def perform_content_negotiation(self, request, force=False):
        # The PDF is written directly; errors (401, 404) answer JSON whatever Accept asked for,
        # instead of a 406 for a client that only accepts application/pdf.
        return super().perform_content_negotiation(request, force=True)

    def get_queryset(self):
        return self.queryset.model.objects.filter(organization=self.organization())

    def get(self, request, *args, **kwargs):
        document = self.get_object()
        response = HttpResponse(self.render(document), content_type="application/pdf")
        response["Content-Disposition"] = f'attachment; filename="{self.filename(document)}"'
        return response


class InvoicePdf(PdfDownload):
    queryset = Invoice.objects.all()
    render = staticmethod(render_invoice_pdf)
    filename = staticmethod(pdf_filename)


class InvoiceTransition(OrganizationScoped, generics.GenericAPIView):
    serializer_class = s.InvoiceDetailSerializer
    queryset = Invoice.objects.all()
    action_name = ""

    def get_queryset(self):
        return Invoice.objects.filter(organization=self.organization())

    def transition(self, invoice_id, now):
        raise NotImplementedError

    @idempotent
    def post(self, request, *args, **kwargs):
        invoice = self.get_object()
        self.transition(invoice.id, timezone.now())
        return Response(s.InvoiceDetailSerializer(invoice_detail_queryset().get(id=invoice.id)).data)


def transition_schema(summary, description):
    return extend_schema(
        tags=["invoices"],
        summary=summary,
        description=description,
        request=None,
        parameters=[IDEMPOTENCY],
        responses={
            200: s.InvoiceDetailSerializer,
            400: IDEMPOTENCY_ERRORS[400],
            401: UNAUTHORIZED,
            404: NOT_FOUND,
            409: OpenApiResponse(
                E, description="The invoice's status does not allow it (the message says why)"
            ),
            422: IDEMPOTENCY_ERRORS[422],
        },
    )


@extend_schema_view(
    post=transition_schema(
        "Finalize a draft",
        "Refreshes the draft's usage one last time, applies the customer's prepaid credits in the "
        "invoice's currency (credits_applied), then finalizes it; it never changes again.",
    )
)
class FinalizeInvoice(InvoiceTransition):
    def transition(self, invoice_id, now):
        invoice_services.finalize_invoice(invoice_id, now)


@extend_schema_view(post=transition_schema("Void an invoice", "A draft or finalized invoice becomes VOID."))
class VoidInvoice(InvoiceTransition):
    def transition(self, invoice_id, now):
        invoice_services.void_invoice(invoice_id, now)


# -- credit notes ----------------------------------------------------------------------------------


def credit_note_queryset():
    return CreditNote.objects.prefetch_related("lines")


@extend_schema(
    tags=["credit notes"],
    summary="Issue a credit note on an invoice",
    description="On a FINALIZED or PAID invoice: amounts before tax, each at most what is left uncredited "
    "of its line; tax at the invoice's rate. On an unpaid invoice it lowers amount_due; what exceeds "
    "that (all of it on a paid invoice) goes to the customer's credit balance (CREDIT_BALANCE) or is "
    "recorded as a refund to pay out (REFUND).",
    request=s.IssueCreditNoteSerializer,
    parameters=[IDEMPOTENCY],
    responses={
        201: s.CreditNoteSerializer,
        400: BAD_REQUEST,
        401: UNAUTHORIZED,
        404: NOT_FOUND,
        409: OpenApiResponse(E, description="The invoice is a draft or void, or an idempotent retry runs"),
        422: IDEMPOTENCY_ERRORS[422],
    },
)
class InvoiceCreditNotes(OrganizationScoped, generics.GenericAPIView):
    serializer_class = s.IssueCreditNoteSerializer
    queryset = Invoice.objects.all()

    def get_queryset(self):
        return Invoice.objects.filter(organization=self.organization())

    @idempotent
    def post(self, request, *args, **kwargs):
        invoice = self.get_object()
        serializer = s.IssueCreditNoteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        note = issue_credit_note(
            invoice.id,
            reason=data["reason"],
            method=data["method"],
            description=data["description"],
            lines=[LineCredit(line["line_item"], line["amount"]) for line in data["lines"]],
            now=timezone.now(),
        )
        return Response(
            s.CreditNoteSerializer(credit_note_queryset().get(id=note.id)).data,
            status=status.HTTP_201_CREATED,
        )


@extend_schema_view(
    get=extend_schema(
        tags=["credit notes"],
        summary="List credit notes",
        description="Newest first. Filter: invoice.",
        responses={
            200: s.CreditNoteSerializer(many=True),
            400: BAD_REQUEST,
            401: UNAUTHORIZED,
            404: NOT_FOUND,
        },
    )
)
class CreditNoteList(OrganizationScoped, generics.ListAPIView):
    serializer_class = s.CreditNoteSerializer
    filterset_class = CreditNoteFilter
    queryset = CreditNote.objects.all()

    def get_queryset(self):
        return credit_note_queryset().filter(organization=self.organization()).order_by("-issued_at", "-id")


@retrieve("credit note", s.CreditNoteSerializer, "credit notes")
class CreditNoteDetail(ScopedRetrieve):
    serializer_class = s.CreditNoteSerializer
    queryset = credit_note_queryset()


@extend_schema(
    tags=["credit notes"],
    summary="Download a credit note as PDF",
    description="The printable credit note (the invoice's template family) as a PDF file.",
    responses={
        (200, "application/pdf"): OpenApiTypes.BINARY,
        (401, "application/json"): UNAUTHORIZED,
        (404, "application/json"): NOT_FOUND,
    },
)
class CreditNotePdf(PdfDownload):
    queryset = CreditNote.objects.all()
    render = staticmethod(render_credit_note_pdf)
    filename = staticmethod(credit_note_pdf_filename)


# -- prepaid credits -------------------------------------------------------------------------------


def customer_credits(customer) -> dict:
    entries = CreditLedgerEntry.objects.filter(customer=customer).order_by("created_at", "id")
    return {
        "balances": [
            {"currency": balance.currency, "amount": str(balance.amount)}
            for balance in prepaid_credits.balances(customer.id)
        ],
        "entries": s.CreditEntrySerializer(entries, many=True).data,
    }


@extend_schema_view(
    get=extend_schema(
        tags=["customers"],
        summary="A customer's credit balances and ledger",
        responses={200: s.CustomerCreditsSerializer, 401: UNAUTHORIZED, 404: NOT_FOUND},
    ),
    post=extend_schema(
        tags=["customers"],
        summary="Grant prepaid credits to a customer",
        description="Applied to the customer's invoices in that currency when they are finalized (after "
        "tax). expires_at: the unused remainder expires then (FIFO: the earliest expiry is used first).",
        request=s.CreditGrantSerializer,
        parameters=[IDEMPOTENCY],
        responses={
            201: s.CustomerCreditsSerializer,
            400: BAD_REQUEST,
            401: UNAUTHORIZED,
            404: NOT_FOUND,
            **{code: IDEMPOTENCY_ERRORS[code] for code in (409, 422)},
        },
    ),
)
class CustomerCredits(OrganizationScoped, generics.GenericAPIView):
    serializer_class = s.CreditGrantSerializer
    queryset = Customer.objects.all()

    def get_queryset(self):
        return Customer.objects.filter(organization=self.organization())

    def get(self, request, *args, **kwargs):
        return Response(customer_credits(self.get_object()))

    @idempotent
    def post(self, request, *args, **kwargs):
        customer = self.get_object()
        serializer = s.CreditGrantSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        prepaid_credits.grant_credits(customer, now=timezone.now(), **serializer.validated_data)
        return Response(customer_credits(customer), status=status.HTTP_201_CREATED)


# -- workers ---------------------------------------------------------------------------------------


class WorkerHealth(APIView):
    authentication_classes = []
    permission_classes = [AllowAny]

    @extend_schema(
        tags=["workers"],
        summary="Is the invoice run healthy?",
        description="No API key needed; says nothing about customers. 200 when a full run succeeded "
        "within the last 2 hours, 503 when the last success is older or there has been none, or the "
        "database cannot be reached.",
        auth=[],
        responses={200: s.WorkerHealthSerializer, 503: s.WorkerHealthSerializer},
    )
    def get(self, request):
        health = worker_health(now=timezone.now())  # reports an unreachable database, never raises
        code = status.HTTP_200_OK if health["healthy"] else status.HTTP_503_SERVICE_UNAVAILABLE
        answer = Response(s.WorkerHealthSerializer(health).data, status=code)
        # An unhealthy worker is this endpoint's answer, not a server error: a monitor polling it must
        # not fill errors.log and Sentry (django.request logs every 5xx at ERROR otherwise).
        answer._has_been_logged = True
        return answer
