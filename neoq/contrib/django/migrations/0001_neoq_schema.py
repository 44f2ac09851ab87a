"""neoq's schema in the Django database neoq uses (its own migrations; nothing on another database)."""

from typing import Any

from django.db import migrations


def create_schema(apps: Any, schema_editor: Any) -> None:
    from neoq.contrib.django.schema import migrate_schema

    migrate_schema(schema_editor.connection.alias)


class Migration(migrations.Migration):  # type: ignore[misc]  # Django ships no type hints
    # neoq migrates on its own connection, under its own lock: not inside Django's transaction.
    atomic = False
    dependencies: list[tuple[str, str]] = []
    operations = [migrations.RunPython(create_schema, migrations.RunPython.noop, elidable=False)]
