"""The navigation bar: each app registers its entries in its AppConfig.ready()."""
from dataclasses import dataclass

from django.urls import reverse

from .roles import has_role


@dataclass(frozen=True)
class NavItem:
    label: str
    url_name: str
    role: str
    order: int


_ITEMS: list[NavItem] = []


def register(label: str, url_name: str, *, role: str, order: int = 100) -> None:
    item = NavItem(label, url_name, role, order)
    if item not in _ITEMS:
        _ITEMS.append(item)


def nav_context(request):
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"nav_items": []}
    items = sorted((i for i in _ITEMS if has_role(user, i.role)), key=lambda i: (i.order, i.label))
    return {"nav_items": [{"label": i.label, "url": reverse(i.url_name)} for i in items]}
