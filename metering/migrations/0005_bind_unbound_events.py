"""D2: the invoice run now counts an event only for the subscription it is bound to. Bind the events
stored unbound before that, the way ingestion and start_subscription bind them now: to the customer's
subscription charging the event's meter that had started by the event's timestamp and was alive when
the event was received; failing that, to the first such subscription created after it (which would have
adopted it). When several were alive at once (the events D2 billed twice), the oldest one keeps them.
An event no subscription covers stays unbound: no subscription could ever bill it."""

from django.db import migrations


def bind(apps, schema_editor):
    quote = schema_editor.connection.ops.quote_name
    events = quote(apps.get_model("metering", "UsageEvent")._meta.db_table)
    meters = quote(apps.get_model("metering", "Meter")._meta.db_table)
    subscriptions = quote(apps.get_model("subscriptions", "Subscription")._meta.db_table)
    charges = quote(apps.get_model("subscriptions", "Charge")._meta.db_table)
    alive = (
        f"(s.created_at <= {events}.received_at"
        f" AND (s.canceled_at IS NULL OR s.canceled_at > {events}.received_at))"
    )
    schema_editor.execute(
        # The ranking is a column of a derived table: SQLite does not let a correlated subquery's
        # ORDER BY refer to the outer row.
        f"""UPDATE {events} SET subscription_id = (
              SELECT id FROM (
                SELECT s.id AS id, CASE WHEN {alive} THEN 0 ELSE 1 END AS rank, s.created_at AS created
                FROM {subscriptions} s
                JOIN {charges} c ON c.plan_id = s.plan_id
                JOIN {meters} m ON m.id = c.meter_id
                WHERE s.customer_id = {events}.customer_id AND m.code = {events}.code
                  AND s.billing_anchor <= {events}.timestamp
                  AND ({alive} OR s.created_at > {events}.received_at)
              ) ranked
              ORDER BY rank, created, id
              LIMIT 1)
            WHERE subscription_id IS NULL"""
    )


class Migration(migrations.Migration):
    dependencies = [
        ("metering", "0004_foreign_keys_indexed_by_unique_constraints"),
        ("subscriptions", "0004_subscription_id_organization_customer"),
    ]

    operations = [migrations.RunPython(bind, migrations.RunPython.noop, elidable=True)]
