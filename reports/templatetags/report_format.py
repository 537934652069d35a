from django import template

register = template.Library()


@register.filter
def pct(value, digits=1):
    """0.8854 -> '88.5%'; None -> '—'."""
    if value is None or value == "":
        return "—"
    try:
        return f"{100 * float(value):.{int(digits)}f}%"
    except (TypeError, ValueError):
        return "—"


@register.filter
def ci(pair):
    """[lo, hi] -> '85.1–91.2%'."""
    if not pair or pair[0] is None:
        return ""
    return f"{100 * pair[0]:.1f}–{100 * pair[1]:.1f}%"


@register.filter
def num(value, digits=3):
    if value is None:
        return "—"
    try:
        return f"{float(value):.{int(digits)}f}"
    except (TypeError, ValueError):
        return "—"


@register.filter
def get(mapping, key):
    try:
        return mapping.get(key) if mapping is not None else None
    except AttributeError:
        return None


@register.filter
def signed_points(value):
    """0.021 -> '+2.1 points'."""
    if value is None:
        return "—"
    return f"{100 * float(value):+.1f} points"


@register.filter
def signed_interval(pair):
    """[-0.01, 0.052] -> '−1.0 to +5.2'."""
    if not pair or pair[0] is None:
        return ""
    return f"{100 * pair[0]:+.1f} to {100 * pair[1]:+.1f}"
