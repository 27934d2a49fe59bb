"""Migration operations the apps share."""

from django.db import migrations


class DropForeignKeyIndex(migrations.operations.base.Operation):
    """Drop the index Django made for a foreign key column on its own, found by its column.

    Paired, in a SeparateDatabaseAndState, with the AlterField(db_index=False) that makemigrations
    writes: applied to the database, that AlterField would rebuild the whole table on SQLite
    (copying every row and losing the table's triggers, see invoicing 0005) to drop one index."""

    reversible = True

    def __init__(self, model_name: str, name: str):
        self.model_name = model_name
        self.name = name

    def state_forwards(self, app_label, state):
        pass  # the AlterField beside it changes the state

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        model = from_state.apps.get_model(app_label, self.model_name)
        table, column = model._meta.db_table, model._meta.get_field(self.name).column
        connection = schema_editor.connection
        with connection.cursor() as cursor:
            constraints = connection.introspection.get_constraints(cursor, table)
        for name, info in constraints.items():
            if info["index"] and not (info["unique"] or info["primary_key"]) and info["columns"] == [column]:
                schema_editor.execute(f"DROP INDEX {schema_editor.quote_name(name)}")

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        model = to_state.apps.get_model(app_label, self.model_name)
        field = model._meta.get_field(self.name)
        schema_editor.execute(schema_editor._create_index_sql(model, fields=[field]))

    def describe(self):
        return f"Drop the index of {self.model_name}.{self.name} alone"
