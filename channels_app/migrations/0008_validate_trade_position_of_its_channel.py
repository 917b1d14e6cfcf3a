"""Validates 0007's key against the trades stored before it, in a transaction of its own (PostgreSQL): VALIDATE
CONSTRAINT reads every trade but lets trades be recorded meanwhile."""

from django.db import migrations

KEY = "trade_position_of_its_channel"


def validate(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"ALTER TABLE channels_app_trade VALIDATE CONSTRAINT {KEY}")


class Migration(migrations.Migration):

    dependencies = [
        ('channels_app', '0007_trade_position_of_its_channel'),
    ]

    operations = [migrations.RunPython(validate, migrations.RunPython.noop)]
