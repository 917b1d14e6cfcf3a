"""``{% channel_chart original %}``: the channel page's pictures (templates/admin/channels_app/channel/
change_form.html), so the page gets them without its ModelAdmin knowing (backoffice/chartdata.py draws them)."""
from django import template

from backoffice.chartdata import channel_chart as draw_channel_chart
from channels_app.models import Channel

register = template.Library()


@register.simple_tag
def channel_chart(channel):
    """The balances and PnL charts of ``channel``; nothing on a page without one (e.g. an add form)."""
    if not isinstance(channel, Channel) or channel.pk is None:
        return ""
    return draw_channel_chart(channel)
