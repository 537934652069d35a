"""The slides app's refusals that more than one module raises (the slides services and the
platelet room's services): a module of its own, so that neither imports the other for them."""
from .models import Slide


class SlideLocked(Exception):
    """The slide cannot change now (signed, or still processing); the message says why."""


def check_editable(slide: Slide) -> None:
    """Refuse (SlideLocked) a change to a signed slide, or to one submitted and awaiting release."""
    if slide.status == Slide.Status.SIGNED:
        raise SlideLocked(f"Slide {slide} is signed and read-only; make a correction (a new version) to change it.")
    if slide.status == Slide.Status.AWAITING_RELEASE:
        raise SlideLocked(f"Slide {slide} is submitted and awaits release; return it to verification to change it.")
