import django.db.models.deletion
from django.db import migrations, models


def content_type_to(app_label: str, other: str):
    """Moves the ApiKey content type (and with it the staff permissions on API keys) between apps."""

    def move(apps, schema_editor):
        content_types = apps.get_model("contenttypes", "ContentType").objects.using(schema_editor.connection.alias)
        if not content_types.filter(app_label=app_label, model="apikey").exists():
            content_types.filter(app_label=other, model="apikey").update(app_label=app_label)

    return move


class Migration(migrations.Migration):
    """ApiKey now lives beside the API's authentication. The table keeps its name
    (subscriptions_apikey) and its rows: only Django's state moves, nothing is created or dropped.
    subscriptions.0007 removes the model from the subscriptions app's state."""

    dependencies = [
        ('api', '0002_foreign_keys_indexed_by_unique_constraints'),
        ('contenttypes', '0002_remove_content_type_name'),
        ('subscriptions', '0006_names_and_codes_refuse_control_characters'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='ApiKey',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('name', models.CharField(blank=True, max_length=100)),
                        ('prefix', models.CharField(db_index=True, max_length=16)),
                        ('key_hash', models.CharField(max_length=64, unique=True)),
                        ('created_at', models.DateTimeField(auto_now_add=True)),
                        ('last_used_at', models.DateTimeField(blank=True, null=True)),
                        ('revoked_at', models.DateTimeField(blank=True, null=True)),
                        ('organization', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='api_keys', to='subscriptions.organization')),
                    ],
                    options={
                        'db_table': 'subscriptions_apikey',
                    },
                ),
            ],
            database_operations=[],
        ),
        migrations.RunPython(content_type_to("api", "subscriptions"), content_type_to("subscriptions", "api")),
    ]
