"""The navigation bar: each app registers its entries in its AppConfig.ready().

Entries with a ``menu`` go into one drop-down of that name (a <details> element: no script needed),
which keeps the lab admin's bar on one line.
"""
from dataclasses import dataclass

from django.urls import reverse

from .roles import has_role

ADMIN_MENU = "Lab admin"


@dataclass(frozen=True)
class NavItem:
    label: str
    url_name: str
    role: str
    order: int
    menu: str = ""


_ITEMS: list[NavItem] = []


def register(label: str, url_name: str, *, role: str, order: int = 100, menu: str = "") -> None:
    item = NavItem(label, url_name, role, order, menu)
    if item not in _ITEMS:
        _ITEMS.append(item)


def nav_context(request):
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"nav_items": [], "nav_menus": []}
    items = sorted((i for i in _ITEMS if has_role(user, i.role)), key=lambda i: (i.order, i.label))
    menus: dict[str, list[dict]] = {}
    for i in items:
        if i.menu:
            menus.setdefault(i.menu, []).append({"label": i.label, "url": reverse(i.url_name)})
    return {
        "nav_items": [{"label": i.label, "url": reverse(i.url_name)} for i in items if not i.menu],
        "nav_menus": [{"label": label, "items": entries} for label, entries in menus.items()],
    }
