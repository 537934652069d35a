"""One URL, one API view per HTTP method.

Django and DRF route a URL to one view class; ``by_method`` lets a path keep its one URL while each
operation is its own view (``path("images/", by_method(get=ImageListApi, post=ImageCreateApi))``).
Each view authenticates, checks permissions and answers by itself. The router only picks the view,
and answers ``Allow`` with every method of the URL (a 405 and OPTIONS included). OPTIONS is answered
by the view of the first method that is not GET (the one whose input it describes).

drf-spectacular documents each operation from its own view through :func:`split_by_method`,
a preprocessing hook (``SPECTACULAR_SETTINGS["PREPROCESSING_HOOKS"]``).
"""
from django.core.exceptions import ImproperlyConfigured
from rest_framework.views import APIView


class MethodRouterApi(APIView):
    """Base of the classes :func:`by_method` builds. ``views``: HTTP method (lower case) -> the callable
    of that method's view. ``permission_classes``: the views' own (they agree), for whoever reads a
    URL's role off its class; the router itself checks nothing."""

    views: dict = {}

    def dispatch(self, request, *args, **kwargs):
        method = request.method.lower()
        if method == "head" and "get" in self.views:
            method = "get"
        elif method == "options":
            method = next((m for m in self.views if m != "get"), "get")
        view = self.views.get(method) or next(iter(self.views.values()))  # the view answers 405
        response = view(request, *args, **kwargs)
        if response.has_header("Allow"):
            response["Allow"] = ", ".join(self.allowed_methods)
        return response


def _handled_by_its_view(self, request, *args, **kwargs):
    raise AssertionError("MethodRouterApi.dispatch hands every request to the method's own view")


def by_method(**views: type[APIView]):
    """The URL callable for a path whose methods (``get=``, ``post=``, ...) are served by different views."""
    classes = list(views.values())
    permissions = list(classes[0].permission_classes)
    if any(list(cls.permission_classes) != permissions for cls in classes):
        raise ImproperlyConfigured(
            f"by_method({', '.join(cls.__name__ for cls in classes)}): one URL, one role; the views' permission "
            "classes differ (the access matrix reads one role per URL).")
    router = type(
        "And".join(cls.__name__ for cls in classes),
        (MethodRouterApi,),
        {
            "__module__": classes[0].__module__,
            "__doc__": " ".join(f"{m.upper()}: {cls.__name__}." for m, cls in views.items()),
            "views": {m.lower(): cls.as_view() for m, cls in views.items()},
            "permission_classes": permissions,
            **{m.lower(): _handled_by_its_view for m in views},
        },
    )
    return router.as_view()


def split_by_method(endpoints):
    """drf-spectacular preprocessing hook: each method of a ``by_method`` URL is documented by its own view."""
    out = []
    for path, path_regex, method, callback in endpoints:
        cls = getattr(callback, "cls", None)
        if isinstance(cls, type) and issubclass(cls, MethodRouterApi):
            callback = cls.views[method.lower()]
        out.append((path, path_regex, method, callback))
    return out
