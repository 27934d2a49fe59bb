"""D9: a plan with subscriptions keeps its organization, currency and interval (PostgreSQL).

A trigger refuses the change whatever the client (admin, queryset.update(), raw SQL); Plan.save
and Plan.clean say the same in Python first. SQLite gets no trigger: it would have to read
subscriptions_subscription, and SQLite re-parses every trigger when a table is rebuilt (Django's
way of altering a column there), so a trigger naming that table would make every later migration
that rebuilds subscriptions_subscription fail (the reason invoicing 0007 is PostgreSQL-only too).
On SQLite the model guard alone refuses it.
"""

from django.db import migrations

POSTGRESQL = [
    """
CREATE FUNCTION subscriptions_plan_in_use_locked() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (NEW.organization_id, NEW.currency, NEW."interval")
           IS DISTINCT FROM (OLD.organization_id, OLD.currency, OLD."interval")
       AND EXISTS (SELECT 1 FROM subscriptions_subscription WHERE plan_id = OLD.id) THEN
        RAISE EXCEPTION 'plan % has subscriptions: its organization, currency and interval cannot change (create a new plan)',
            OLD.code USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END
$$;
""",
    """
CREATE TRIGGER plan_in_use_locked BEFORE UPDATE ON subscriptions_plan
FOR EACH ROW EXECUTE FUNCTION subscriptions_plan_in_use_locked();
""",
]
POSTGRESQL_REVERSE = [
    "DROP TRIGGER IF EXISTS plan_in_use_locked ON subscriptions_plan;",
    "DROP FUNCTION IF EXISTS subscriptions_plan_in_use_locked();",
]


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        for statement in POSTGRESQL:
            schema_editor.execute(statement, None)  # None: no placeholders, % is literal


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        for statement in POSTGRESQL_REVERSE:
            schema_editor.execute(statement, None)  # None: no placeholders, % is literal


class Migration(migrations.Migration):
    dependencies = [("subscriptions", "0004_subscription_id_organization_customer")]

    operations = [migrations.RunPython(forwards, backwards)]
