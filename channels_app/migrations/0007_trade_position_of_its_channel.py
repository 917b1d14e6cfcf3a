"""A trade's two references, its channel and its position, checked together: one composite foreign key
``trade (position_id, channel_id) -> position (id, channel_id)`` on PostgreSQL instead of one key each.

It is stricter than the two keys it replaces (a trade's position must be of the trade's own channel; the channel
exists because the position's own key says so) and it is one check fewer a trade: PostgreSQL checks each key of each
new row at COMMIT, about 3 us a check: the trade's three checks were half its work on a batch of trades
(bench/RESULTS.md, tenth round).

Django 5.2 cannot declare a composite foreign key, so the fields say ``db_constraint=False`` in the state and the
database side is written out here, for PostgreSQL. SQLite keeps the two keys its table was made with (adding one
there means copying the table by hand); it checks that the channel and the position exist, not that they belong
together (docs/protocol.md, Storage). The key is added NOT VALID and validated by 0008, in a transaction of its own: the
check of the stored trades then blocks no writer (VALIDATE takes a lock that lets trades be recorded).
"""

import django.db.models.deletion
from django.db import migrations, models

TRADE, POSITION, CHANNEL = "channels_app_trade", "channels_app_position", "channels_app_channel"
KEY = "trade_position_of_its_channel"
SINGLE_KEYS = {"channel_id": CHANNEL, "position_id": POSITION}  # the keys it replaces: column -> table


def _single_keys(schema_editor) -> list[str]:
    """The names of the trade's own keys on ``channel_id`` and ``position_id`` (Django named them by a digest)."""
    connection = schema_editor.connection
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, TRADE)
    return [name for name, info in constraints.items() if info["foreign_key"] and len(info["columns"]) == 1
            and SINGLE_KEYS.get(info["columns"][0]) == info["foreign_key"][0]]


def check_together(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    quote = schema_editor.quote_name
    for name in _single_keys(schema_editor):
        schema_editor.execute(f"ALTER TABLE {TRADE} DROP CONSTRAINT {quote(name)}")
    schema_editor.execute(
        f"ALTER TABLE {TRADE} ADD CONSTRAINT {KEY} FOREIGN KEY (position_id, channel_id) "
        f"REFERENCES {POSITION} (id, channel_id) DEFERRABLE INITIALLY DEFERRED NOT VALID")


def check_apart(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(f"ALTER TABLE {TRADE} DROP CONSTRAINT {KEY}")
    for column, table in SINGLE_KEYS.items():
        schema_editor.execute(
            f"ALTER TABLE {TRADE} ADD CONSTRAINT {TRADE}_{column}_fk FOREIGN KEY ({column}) REFERENCES {table} (id) "
            "DEFERRABLE INITIALLY DEFERRED")


class Migration(migrations.Migration):

    dependencies = [
        ('channels_app', '0006_redundant_channel_indexes'),
    ]

    operations = [
        migrations.AddConstraint(
            model_name='position',
            constraint=models.UniqueConstraint(fields=('id', 'channel'), name='position_key_with_channel'),
        ),
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunPython(check_together, check_apart)],
            state_operations=[
                migrations.AlterField(
                    model_name='trade',
                    name='channel',
                    field=models.ForeignKey(db_constraint=False, db_index=False,
                                            on_delete=django.db.models.deletion.PROTECT, related_name='trades',
                                            to='channels_app.channel'),
                ),
                migrations.AlterField(
                    model_name='trade',
                    name='position',
                    field=models.ForeignKey(db_constraint=False, help_text='The position it was booked to',
                                            on_delete=django.db.models.deletion.PROTECT, related_name='trades',
                                            to='channels_app.position'),
                ),
            ],
        ),
    ]
