from django.urls import path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from api import views, webhook_endpoints
from api.errors import not_found

urlpatterns = [
    path("customers", views.CustomerList.as_view(), name="customer-list"),
    path("customers/<str:pk>", views.CustomerDetail.as_view(), name="customer-detail"),
    path("customers/<str:pk>/credits", views.CustomerCredits.as_view(), name="customer-credits"),
    path("meters", views.MeterList.as_view(), name="meter-list"),
    path("meters/<str:pk>", views.MeterDetail.as_view(), name="meter-detail"),
    path("plans", views.PlanList.as_view(), name="plan-list"),
    path("plans/<str:pk>", views.PlanDetail.as_view(), name="plan-detail"),
    path("subscriptions", views.SubscriptionList.as_view(), name="subscription-list"),
    path("subscriptions/<str:pk>", views.SubscriptionDetail.as_view(), name="subscription-detail"),
    path("subscriptions/<str:pk>/cancel", views.CancelSubscription.as_view(), name="subscription-cancel"),
    path(
        "subscriptions/<str:pk>/generate-invoice",
        views.GenerateInvoice.as_view(),
        name="subscription-generate-invoice",
    ),
    path(
        "subscriptions/<str:pk>/upcoming-invoice",
        views.UpcomingInvoice.as_view(),
        name="subscription-upcoming-invoice",
    ),
    path("subscriptions/<str:pk>/coupons", views.SubscriptionCoupons.as_view(), name="subscription-coupons"),
    path("coupons", views.CouponList.as_view(), name="coupon-list"),
    path("coupons/<str:pk>", views.CouponDetail.as_view(), name="coupon-detail"),
    path("events", views.Events.as_view(), name="events"),
    path("invoices", views.InvoiceList.as_view(), name="invoice-list"),
    path("invoices/<str:pk>", views.InvoiceDetail.as_view(), name="invoice-detail"),
    path("invoices/<str:pk>/pdf", views.InvoicePdf.as_view(), name="invoice-pdf"),
    path("invoices/<str:pk>/credit-notes", views.InvoiceCreditNotes.as_view(), name="invoice-credit-notes"),
    path("invoices/<str:pk>/finalize", views.FinalizeInvoice.as_view(), name="invoice-finalize"),
    path("invoices/<str:pk>/void", views.VoidInvoice.as_view(), name="invoice-void"),
    path("credit-notes", views.CreditNoteList.as_view(), name="credit-note-list"),
    path("credit-notes/<str:pk>", views.CreditNoteDetail.as_view(), name="credit-note-detail"),
    path("credit-notes/<str:pk>/pdf", views.CreditNotePdf.as_view(), name="credit-note-pdf"),
    path("webhook-endpoints", webhook_endpoints.WebhookEndpointList.as_view(), name="webhook-endpoint-list"),
    path(
        "webhook-endpoints/<str:pk>",
        webhook_endpoints.WebhookEndpointDetail.as_view(),
        name="webhook-endpoint-detail",
    ),
    path(
        "webhook-endpoints/<str:pk>/rotate-secret",
        webhook_endpoints.RotateSecret.as_view(),
        name="webhook-endpoint-rotate-secret",
    ),
    path("webhook-messages", webhook_endpoints.WebhookMessageList.as_view(), name="webhook-message-list"),
    path(
        "webhook-messages/<str:pk>",
        webhook_endpoints.WebhookMessageDetail.as_view(),
        name="webhook-message-detail",
    ),
    path(
        "webhook-messages/<str:pk>/retry",
        webhook_endpoints.RetryMessage.as_view(),
        name="webhook-message-retry",
    ),
    path("workers/health", views.WorkerHealth.as_view(), name="worker-health"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api:schema"), name="docs"),
    re_path(r"^.*$", not_found),
]
