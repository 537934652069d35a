"""The slides app's refusals that more than one module raises (the slides services and the
platelet room's services): a module of its own, so that neither imports the other for them."""


class SlideLocked(Exception):
    """The slide cannot change now (signed, or still processing); the message says why."""
