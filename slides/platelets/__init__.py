"""The platelet estimate and red cells per field: a room of its own inside the slides app.

* ``stats`` (pure): platelets per field, the estimate, its interval and its reference row.
* ``report`` (pure): the estimate in the signed report's formats (LIS line, CSV rows, PDF lines).
* ``services``: find platelets and red cells in a slide's fields, a reviewer's correction of a
  field, the lab's settings. ``selectors``: the slide's estimate and fields.
* ``api`` and ``views``: thin adapters (imported by the URLconfs only).

Imports run downward only: the slides app's services and selectors import this package's
services and selectors, never the other way round; this file imports nothing, so the pure
modules load without Django.
"""
