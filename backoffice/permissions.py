"""The ``back-office`` group: view everything, act on settlements, set mark prices. Nothing else."""
from django.contrib.auth.models import Group, Permission

BACKOFFICE_GROUP = "back-office"
VIEWED_MODELS = [
    ("channels_app", "peer"), ("channels_app", "channel"), ("channels_app", "trade"), ("channels_app", "position"),
    ("channels_app", "markprice"), ("channels_app", "peerconnection"),
    ("settlement", "settlement"), ("settlement", "settlementtransition"), ("backoffice", "auditentry"),
]
EXTRA_PERMISSIONS = [
    ("settlement", "act_on_settlement"),
    ("channels_app", "add_markprice"),
    ("channels_app", "change_markprice"),
]


def backoffice_permissions():
    wanted = [(app, f"view_{model}") for app, model in VIEWED_MODELS] + EXTRA_PERMISSIONS
    perms = []
    for app_label, codename in wanted:
        perms.append(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    return perms


def ensure_backoffice_group(**kwargs) -> Group:
    group, _ = Group.objects.get_or_create(name=BACKOFFICE_GROUP)
    try:
        group.permissions.set(backoffice_permissions())
    except Permission.DoesNotExist:
        pass  # an app's permissions are not created yet in this migrate run; its own post_migrate comes later
    return group
