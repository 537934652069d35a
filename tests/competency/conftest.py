"""A lab with decided cells to build proficiency tests from."""
from dataclasses import dataclass, field

import pytest

from annotations.services import adjudication_submit, label_submit
from tests.factories import CellImageFactory, UserFactory, cell_class


@dataclass
class Lab:
    reader: object
    decided: dict = field(default_factory=dict)  # class code -> image ids
    adjudicated: set = field(default_factory=set)
    undecided: list = field(default_factory=list)


def decided_lab(*, lymphocyte=6, monocyte=4, blast=3, adjudicated_blasts=1, uploaded_by=None) -> Lab:
    """Cells decided by one reader's reading (the lab needs one on training cells), one blast per
    ``adjudicated_blasts`` decided by a reviewer after a 'not sure' reading; one cell nobody read and one
    waiting for adjudication (neither may be drawn)."""
    reader = UserFactory(username="reader", role="reviewer")
    lab = Lab(reader=reader)
    for code, n in (("lymphocyte", lymphocyte), ("monocyte", monocyte), ("blast", blast)):
        for i in range(n):
            image = CellImageFactory(uploaded_by=uploaded_by or reader)
            if code == "blast" and i < adjudicated_blasts:
                label_submit(image=image, labeller=reader, cell_class=cell_class(code), unsure=True)
                adjudication_submit(image=image, reviewer=reader, cell_class=cell_class(code))
                lab.adjudicated.add(image.pk)
            else:
                label_submit(image=image, labeller=reader, cell_class=cell_class(code))
            lab.decided.setdefault(code, []).append(image.pk)
    lab.undecided.append(CellImageFactory(uploaded_by=reader).pk)
    waiting = CellImageFactory(uploaded_by=reader)
    label_submit(image=waiting, labeller=reader, cell_class=cell_class("blast"), unsure=True)
    lab.undecided.append(waiting.pk)
    return lab


@pytest.fixture
def lab(db):
    return decided_lab()
