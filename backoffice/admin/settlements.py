"""Settlements in back office: the ledger per asset and side, the transition history, and the clerk's actions.

Each action (accept, reject, fail, retry) has a confirmation page; the POST goes through
``backoffice.actions.act_on_settlement`` (audited, the engine's state table decides) and needs the
``settlement.act_on_settlement`` permission. Both parties hear of the change as ``settlement_notification``.
"""
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from backoffice.actions import SETTLEMENT_ACTIONS, act_on_settlement, allowed_settlement_actions
from backoffice.audit import admin_actor
from channels_app.errors import DomainError
from settlement.models import Settlement, SettlementTransition

ACTION_PERMISSION = "settlement.act_on_settlement"


class TransitionInline(admin.TabularInline):
    model = SettlementTransition
    extra = 0
    can_delete = False
    fields = ["at", "from_state", "to_state", "actor", "note"]
    readonly_fields = fields
    ordering = ["at", "id"]

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Settlement)
class SettlementAdmin(admin.ModelAdmin):
    list_display = ["id", "channel", "state", "markets_list", "payment_method", "requested_by", "created_at",
                    "updated_at"]
    list_filter = ["state", "payment_method"]
    search_fields = ["channel__channel_id", "channel__initiator__address", "channel__responder__address"]
    list_select_related = ["channel", "requested_by"]
    fields = ["channel", "state", "payment_method", "chain_id", "markets_list", "ledger_table", "requested_by",
              "payment_reference", "created_at", "updated_at"]
    readonly_fields = fields
    inlines = [TransitionInline]
    change_form_template = "admin/settlement/settlement/change_form.html"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="markets")
    def markets_list(self, settlement):
        return ", ".join(settlement.markets)

    @admin.display(description="ledger")
    def ledger_table(self, settlement):
        rows = format_html_join(
            "", "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            ((e["asset"], e["initiator_owes"], e["responder_owes"]) for e in settlement.ledger),
        )
        return format_html(
            '<table class="ledger"><thead><tr><th>asset</th><th>initiator owes responder</th>'
            "<th>responder owes initiator</th></tr></thead><tbody>{}</tbody></table>", rows)

    # --- actions --------------------------------------------------------------------------------------------
    def get_urls(self):
        view = self.admin_site.admin_view(self.action_view)
        return [path("<int:pk>/act/<str:action>/", view, name="settlement_settlement_act"), *super().get_urls()]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        settlement = self.get_object(request, object_id)
        actions = []
        if settlement is not None and request.user.has_perm(ACTION_PERMISSION):
            actions = [(a, reverse("admin:settlement_settlement_act", args=[settlement.pk, a]))
                       for a in allowed_settlement_actions(settlement)]
        return super().change_view(request, object_id, form_url, {**(extra_context or {}),
                                                                   "settlement_actions": actions})

    def action_view(self, request, pk, action):
        if not request.user.has_perm(ACTION_PERMISSION):
            raise PermissionDenied
        settlement = get_object_or_404(Settlement.objects.select_related("channel"), pk=pk)
        change_url = reverse("admin:settlement_settlement_change", args=[pk])
        if action not in SETTLEMENT_ACTIONS:
            raise PermissionDenied
        if action not in allowed_settlement_actions(settlement):
            self.message_user(request, f"Settlement {pk} is {settlement.state}: it cannot be {action}ed now.",
                              messages.ERROR)
            return redirect(change_url)
        if request.method == "POST":
            try:
                result = act_on_settlement(actor=admin_actor(request.user), user=request.user, settlement_pk=pk,
                                           action=action, note=request.POST.get("note", "")[:2000])
            except DomainError as exc:
                self.message_user(request, f"Not done: {exc.message}", messages.ERROR)
                return redirect(change_url)
            self.message_user(request, f"Settlement {result.pk} is now {result.state}.", messages.SUCCESS)
            return redirect(reverse("admin:settlement_settlement_change", args=[result.pk]))
        context = {
            **self.admin_site.each_context(request),
            "title": f"{action.capitalize()} settlement {pk}?",
            "settlement": settlement,
            "action": action,
            "opts": self.model._meta,
            "change_url": change_url,
            "ledger_table": self.ledger_table(settlement),
        }
        return TemplateResponse(request, "admin/settlement/settlement/confirm_action.html", context)
