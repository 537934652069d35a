from django import template

from annotations.changes import field_changes

register = template.Library()


@register.filter
def changes(event):
    """An audit event's changed fields: ``{% for c in event|changes %}{{ c.field }} {{ c.before }} → {{ c.after }}``."""
    return field_changes(event.before, event.after)
