from django.core.management.base import BaseCommand, CommandError

from api.services import create_api_key
from subscriptions.models import Organization


class Command(BaseCommand):
    help = "Creates an API key for an organization and prints it once (only its hash is stored)."

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--name", default="", help="What the key is for")

    def handle(self, *args, slug, name, **options):
        organization = Organization.objects.filter(slug=slug).first()
        if organization is None:
            raise CommandError(f"slug: no organization '{slug}'")
        api_key, key = create_api_key(organization, name)
        self.stderr.write(
            f"API key {api_key.prefix}… for {organization.slug}; it is shown once, store it now:"
        )
        self.stdout.write(key)
