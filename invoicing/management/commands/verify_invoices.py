from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError

from invoicing.audit import AuditCounts, audit_invoices
from invoicing.management.commands.generate_invoices import one_line


class Command(BaseCommand):
    help = (
        "Audits every invoice: lines add up to the subtotal, subtotal + tax = total, tax = rate x "
        "subtotal, every amount rounded to its currency's minor unit, one invoice per period, no "
        "gap in the numbers. Prints each finding and exits 1 if there is any."
    )

    def handle(self, *args, **options):
        counts, findings = AuditCounts(), 0
        try:
            for finding in audit_invoices(counts):
                findings += 1
                self.stdout.write(f"FINDING {finding}")
        except DatabaseError as exc:
            raise CommandError(f"the audit could not use the database: {one_line(exc)}") from exc
        checked = f"{counts.invoices} invoice(s) and {counts.lines} line item(s) checked"
        if findings:
            raise CommandError(f"{findings} finding(s); {checked}")
        self.stdout.write(f"verify_invoices: {checked}, no findings")
