"""Settlements in back office: the ledger per asset and side, the transition history, and the clerk's actions.

Each action (accept, reject, fail, retry) has a confirmation page; the POST goes through
``backoffice.actions.act_on_settlement`` (audited, the engine's state table decides) and needs the
``settlement.act_on_settlement`` permission. Both parties hear of the change as ``settlement_notification``.
An action only records intent: nothing here calls the chain (the payment worker, settlement/worker.py, does).

Each ledger line shows its ``shortfall`` (what it bills beyond the debtor's deposit, settlement/ledger.py),
flagged when not zero, on the page, the confirmation pages and, per asset, in the list.

The page also shows the escrow as recorded by the worker (contract, id, deadline, legs, transactions, linked to
``ESCROW_EXPLORER_URL`` when set) and the worker's state (last error, attempts, next attempt, its log); the list
filters settlements that need attention (the worker retrying, or an escrow waiting past its deadline).

Ledger figures are rounded for reading to the asset's places, exact on hover (``backoffice.display.money``); states
are written as on the wire (``proposed``), in the list, the page, the history and the messages alike; times are UTC
with seconds.
"""
import re
from datetime import datetime, timezone

from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone as django_timezone
from django.utils.html import format_html, format_html_join

from backoffice.actions import SETTLEMENT_ACTIONS, act_on_settlement, allowed_settlement_actions
from backoffice.admin.channels import ChannelFilter, channel_link, known_name
from backoffice.admin.readonly import ReadOnlyAdmin, ReadOnlyInline
from backoffice.audit import admin_actor
from backoffice.dashboard import deadline_passed, is_retrying, needs_attention_q, past_deadline_q, retrying_q
from backoffice.display import WireValueFilter, money, peer_label, utc, utc_column, wire_column
from channels_app.errors import DomainError
from settlement.models import Settlement, SettlementLogEntry, SettlementState, SettlementTransition
from settlement.values import settlement_view

ACTION_PERMISSION = "settlement.act_on_settlement"
AT = utc_column("at")
STATE = wire_column("state")
METHOD = wire_column("payment_method", "payment method")
CREATED = utc_column("created_at", "created")
UPDATED = utc_column("updated_at", "updated")
_HEX = re.compile(r"0x[0-9a-fA-F]+")


def _explorer(kind: str, value) -> str:
    """``value`` in <code>, linked to the explorer's page of it when ESCROW_EXPLORER_URL is set."""
    if value in (None, ""):
        return "–"
    base = (getattr(settings, "ESCROW_EXPLORER_URL", "") or "").rstrip("/")
    if base and isinstance(value, str) and _HEX.fullmatch(value):
        return format_html('<a href="{}/{}/{}" class="explorer" rel="noopener noreferrer"><code>{}</code></a>',
                           base, kind, value, value)
    return format_html("<code>{}</code>", value)


def _short(line) -> bool:
    """Whether the debtor's deposit does not cover the line (``shortfall`` is "0" when it does)."""
    return line.shortfall != "0"


def _shortfall_cell(line) -> str:
    if not _short(line):
        return format_html('<td class="shortfall">{}</td>', money(line.shortfall, line.asset))
    return format_html('<td class="shortfall shortfall-nonzero"><strong>{}</strong> not covered by the deposit</td>',
                       money(line.shortfall, line.asset))


def _deadline(deadline) -> str:
    try:
        at = datetime.fromtimestamp(deadline, tz=timezone.utc)
    except (TypeError, ValueError, OverflowError, OSError):  # absent (nothing to move) or not a time
        return format_html("{}", "–" if deadline is None else deadline)
    passed = deadline < django_timezone.now().timestamp()
    return format_html(
        '<span class="escrow-deadline" title="{}">{} UTC</span>{}',
        f"unix {deadline}, chain time; whether it passed is judged by this server's clock, for display only "
        "(the payment worker goes by the chain's block time)",
        at.strftime("%Y-%m-%d %H:%M:%S"),
        format_html(' <strong class="deadline-passed">{}</strong>', "passed") if passed else "")


class LogInline(ReadOnlyInline):
    """What the payment worker met (each distinct error once): part of the settlement's page, read-only."""

    model = SettlementLogEntry
    fields = [AT, "state", "message"]
    readonly_fields = fields
    ordering = ["at", "id"]
    verbose_name = "payment worker log entry"
    verbose_name_plural = "payment worker log"

    def has_view_permission(self, request, obj=None):  # seen with the settlement, as its transitions are
        return request.user.has_perm("settlement.view_settlement")


class NeedsAttentionFilter(admin.SimpleListFilter):
    title = "needs attention"
    parameter_name = "attention"

    def lookups(self, request, model_admin):
        return [("yes", "Yes (either)"), ("retrying", "Worker retrying"), ("past_deadline", "Past escrow deadline")]

    def queryset(self, request, queryset):
        condition = {"yes": needs_attention_q, "retrying": retrying_q, "past_deadline": past_deadline_q}.get(
            self.value())
        return queryset.filter(condition()) if condition else queryset


class TransitionInline(ReadOnlyInline):
    model = SettlementTransition
    fields = [AT, wire_column("from_state", "from"), wire_column("to_state", "to"), "actor", "note"]
    readonly_fields = fields
    ordering = ["at", "id"]


@admin.register(Settlement)
class SettlementAdmin(ReadOnlyAdmin):
    list_display = ["id", "channel_short", STATE, "markets_list", METHOD, "requested_by_short",
                    "shortfalls", "needs_attention", CREATED, UPDATED]
    list_filter = [("state", WireValueFilter), ("payment_method", WireValueFilter), NeedsAttentionFilter,
                   ChannelFilter]
    search_fields = ["channel__channel_id", "channel__initiator__address", "channel__responder__address"]
    list_select_related = ["channel", "requested_by"]
    date_hierarchy = "created_at"
    fields = ["channel", STATE, METHOD, "chain_id", "markets_list", "ledger_table", "requested_by", "accept_by_policy",
              "payment_reference", CREATED, UPDATED]
    escrow_fields = ["escrow_panel"]
    worker_fields = ["last_error_text", "attempts", "next_attempt"]
    readonly_fields = [*fields, *escrow_fields, *worker_fields]
    inlines = [TransitionInline, LogInline]
    change_form_template = "admin/settlement/settlement/change_form.html"

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(requester_known=known_name("requested_by__"))

    @admin.display(description="channel", ordering="channel__channel_id")
    def channel_short(self, settlement):
        return channel_link(settlement.channel)

    @admin.display(description="requested by", ordering="requested_by__address")
    def requested_by_short(self, settlement):
        if settlement.requested_by is None:
            return "operator"
        return peer_label(settlement.requested_by.address, settlement.requester_known)

    def get_fieldsets(self, request, obj=None):
        fieldsets = [(None, {"fields": self.fields})]
        if obj is not None and obj.escrow is not None:  # none for mock, nor before the worker opened one
            fieldsets.append(("Escrow", {"fields": self.escrow_fields, "classes": ["escrow"]}))
        fieldsets.append(("Payment worker", {"fields": self.worker_fields, "classes": ["payment-worker"]}))
        return fieldsets

    @admin.display(description="needs attention")
    def needs_attention(self, settlement):
        if is_retrying(settlement):
            return f"retrying ({settlement.attempts})"
        if settlement.state == SettlementState.INITIATED and deadline_passed(settlement):
            return "past deadline"
        return ""

    @admin.display(description="last error")
    def last_error_text(self, settlement):
        if not settlement.last_error:
            return "–"
        return format_html('<pre class="last-error" style="white-space: pre-wrap;">{}</pre>', settlement.last_error)

    @admin.display(description="next attempt")
    def next_attempt(self, settlement):
        return utc(settlement.next_attempt_at)

    @admin.display(description="escrow")
    def escrow_panel(self, settlement):
        escrow = settlement.escrow
        if not isinstance(escrow, dict):
            return "–"
        legs = format_html_join(
            "", '<tr class="escrow-leg"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>',
            ((leg.get("asset", ""), _explorer("address", leg.get("from")), _explorer("address", leg.get("to")),
              leg.get("amount", ""), leg.get("units", ""), "yes" if leg.get("funded") else "no")
             for leg in escrow.get("legs") or [] if isinstance(leg, dict)))
        transactions = format_html_join(
            "", '<tr class="escrow-transaction"><td>{}</td><td>{}</td><td>{}</td></tr>',
            ((t.get("step", ""), _explorer("tx", t.get("hash")), _explorer("address", t.get("from")))
             for t in escrow.get("transactions") or [] if isinstance(t, dict)))
        return format_html(
            '<table class="escrow-summary">'
            '<tr><th scope="row">chain id</th><td id="escrow-chain-id">{}</td></tr>'
            '<tr><th scope="row">contract</th><td id="escrow-contract">{}</td></tr>'
            '<tr><th scope="row">escrow id</th><td id="escrow-id"><code>{}</code></td></tr>'
            '<tr><th scope="row">deadline</th><td id="escrow-deadline">{}</td></tr></table>'
            '<table class="escrow-legs"><caption>legs</caption><thead><tr><th>asset</th><th>from</th><th>to</th>'
            "<th>amount</th><th>units</th><th>funded</th></tr></thead><tbody>{}</tbody></table>"
            '<table class="escrow-transactions"><caption>transactions</caption><thead><tr><th>step</th><th>hash</th>'
            "<th>payer</th></tr></thead><tbody>{}</tbody></table>",
            escrow.get("chain_id", settlement.chain_id), _explorer("address", escrow.get("contract")),
            escrow.get("escrow_id") or "–", _deadline(escrow.get("deadline")),
            legs or format_html('<tr><td colspan="6">{}</td></tr>', "no legs: nothing to move"),
            transactions or format_html('<tr><td colspan="3">{}</td></tr>', "none yet"))

    @admin.display(description="markets")
    def markets_list(self, settlement):
        return ", ".join(settlement.markets)

    @admin.display(description="shortfall")
    def shortfalls(self, settlement):
        """Only the assets short, so a settlement the deposits cover shows nothing (the channel is selected with
        the list: no query per row)."""
        return format_html_join(", ", '<span class="shortfall shortfall-nonzero">{} {}</span>',
                                ((line.asset, money(line.shortfall, line.asset))
                                 for line in settlement_view(settlement).ledger if _short(line)))

    @admin.display(description="ledger")
    def ledger_table(self, settlement):
        rows = format_html_join(
            "", "<tr><td>{}</td><td>{}</td><td>{}</td>{}</tr>",
            ((line.asset, money(line.initiator_owes, line.asset), money(line.responder_owes, line.asset),
              _shortfall_cell(line))
             for line in settlement_view(settlement).ledger),
        )
        return format_html(
            '<table class="ledger"><thead><tr><th>asset</th><th>initiator owes responder</th>'
            "<th>responder owes initiator</th><th>shortfall (beyond the debtor's deposit)</th></tr></thead>"
            "<tbody>{}</tbody></table>", rows)

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
