import json

from django.core.management.base import BaseCommand

from invoicing.selectors import HEALTHY_WITHIN, worker_health


class Command(BaseCommand):
    help = (
        "Exits 0 when the worker's last full run succeeded within the last two hours, 1 otherwise "
        "(also when the database cannot be reached): for monitors without HTTP."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--worker",
            default="invoice_generator",
            choices=["invoice_generator", "invoice_finalizer"],
            help="Which worker (default: invoice_generator)",
        )
        parser.add_argument(
            "--json", dest="as_json", action="store_true", help="Print the health report as JSON"
        )

    def handle(self, *args, worker="invoice_generator", as_json=False, **options):
        health = worker_health(worker)
        if as_json:
            self.stdout.write(_json(health))
        elif health.get("error"):
            self.stdout.write(f"unhealthy: {worker}: {health['error']}")
        elif health["healthy"]:
            last = health["last_success_at"]
            self.stdout.write(f"healthy: {worker}: last successful run finished {last:%Y-%m-%dT%H:%M:%SZ}")
        else:
            last = health["last_success_at"]
            since = f"finished {last:%Y-%m-%dT%H:%M:%SZ}" if last else "none recorded"
            run = health["last_run"]
            latest = f"; last run {run['run_id']} is {run['status']}" if run else ""
            self.stdout.write(
                f"unhealthy: {worker}: no successful run within {HEALTHY_WITHIN} (last one: {since}){latest}"
            )
        if not health["healthy"]:
            # The line above says why; the exit status is what monitors read.
            raise SystemExit(1)


def _json(health: dict) -> str:
    return json.dumps(health, default=lambda value: value.isoformat(), sort_keys=True)
