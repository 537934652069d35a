"""Reference data every lab starts with: the taxonomy, the three role groups, the lab settings row.

Idempotent; used by a data migration (with historical models) and by the test suite.
"""

# code, name, hotkey, order, is_leukocyte, is_abstain. Blasts and atypical lymphocytes are rare in
# the public training sets: an expert assigns them during verification, and a differential says
# "not assessed by the model" for every class the model version has no training data for.
TAXONOMY = [
    ("neutrophil_segmented", "Neutrophil, segmented", "n", 10, True, False),
    ("neutrophil_band", "Neutrophil, band (stab)", "b", 20, True, False),
    ("lymphocyte", "Lymphocyte", "l", 30, True, False),
    ("atypical_lymphocyte", "Atypical lymphocyte", "y", 35, True, False),
    ("monocyte", "Monocyte", "m", 40, True, False),
    ("eosinophil", "Eosinophil", "e", 50, True, False),
    ("basophil", "Basophil", "a", 60, True, False),
    ("immature_granulocyte", "Immature granulocyte", "i", 70, True, False),
    ("blast", "Blast", "t", 75, True, False),
    ("erythroblast", "Erythroblast (nucleated red cell)", "r", 80, False, False),
    ("platelet", "Platelet", "p", 90, False, False),
    ("smudge", "Smudge cell", "s", 100, False, False),
    ("artefact", "Artefact", "x", 110, False, False),
    ("unidentified", "Unidentified", "", 200, False, True),
]


def seed(apps, schema_editor=None):
    CellClass = apps.get_model("annotations", "CellClass")
    for code, name, hotkey, order, leuko, abstain in TAXONOMY:
        CellClass.objects.get_or_create(
            code=code,
            defaults=dict(name=name, hotkey=hotkey, display_order=order, is_leukocyte=leuko, is_abstain=abstain),
        )
    Group = apps.get_model("auth", "Group")
    for name in ("labeller", "reviewer", "lab_admin"):
        Group.objects.get_or_create(name=name)
    LabSettings = apps.get_model("annotations", "LabSettings")
    LabSettings.objects.get_or_create(pk=1)


