from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from subscriptions.models import Organization
from subscriptions.services import create_organization


class Command(BaseCommand):
    help = "Creates the organization that issues invoices."

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--name", required=True)
        parser.add_argument("--country", required=True, help="ISO 3166 alpha-2, e.g. DE")
        parser.add_argument("--currency", required=True, help="ISO 4217 default currency, e.g. EUR")
        parser.add_argument("--line1", default="")
        parser.add_argument("--line2", default="")
        parser.add_argument("--city", default="")
        parser.add_argument("--postal-code", default="")
        parser.add_argument("--state", default="")
        parser.add_argument("--tax-id", default="")

    def handle(self, *args, **o):
        if Organization.objects.filter(slug=o["slug"]).exists():
            raise CommandError(f"slug: an organization '{o['slug']}' already exists")
        try:
            organization = create_organization(
                slug=o["slug"],
                name=o["name"],
                country=o["country"],
                currency=o["currency"],
                address_line1=o["line1"],
                address_line2=o["line2"],
                city=o["city"],
                postal_code=o["postal_code"],
                state=o["state"],
                tax_id=o["tax_id"],
            )
        except ValidationError as exc:
            raise CommandError(describe(exc)) from exc
        self.stdout.write(f"Created organization {organization.slug} (id {organization.id})")


def describe(exc: ValidationError) -> str:
    if hasattr(exc, "message_dict"):
        return "; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in exc.message_dict.items())
    return " ".join(exc.messages)
