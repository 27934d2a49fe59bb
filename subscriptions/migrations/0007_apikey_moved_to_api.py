from django.db import migrations


class Migration(migrations.Migration):
    """ApiKey moved to the api app (api.0003), keeping its table subscriptions_apikey and its rows:
    the model leaves this app's state only, the table is not dropped."""

    dependencies = [
        ('api', '0003_apikey_moved_from_subscriptions'),
        ('subscriptions', '0006_names_and_codes_refuse_control_characters'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name='ApiKey')],
            database_operations=[],
        ),
    ]
