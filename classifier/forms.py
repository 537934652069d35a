from django import forms

from .ml.ensembles import ENSEMBLES

MODES = [("default", "default (multi-stage features, test-time augmentation)"),
         ("frozen", "frozen (the paper's recipe)"),
         ("finetune", "finetune (slow on a CPU)")]


def ensemble_choices():
    return [(name, f"{name}: {', '.join(backbones)}") for name, backbones in ENSEMBLES.items()]


class TrainingForm(forms.Form):
    ensemble = forms.ChoiceField(choices=ensemble_choices)
    mode = forms.ChoiceField(choices=MODES, initial="default")
    epochs = forms.IntegerField(min_value=1, max_value=500, required=False,
                                help_text="Empty: the recipe's own number of epochs.")


class ScheduleForm(forms.Form):
    enabled = forms.BooleanField(required=False, label="Retrain nightly")
    hour = forms.IntegerField(min_value=0, max_value=23)
    minute = forms.IntegerField(min_value=0, max_value=59)
    min_new_labels = forms.IntegerField(min_value=1, max_value=1_000_000,
                                        label="Only when at least this many new final labels exist since the last version")


class PromotionGateForm(forms.Form):
    min_heldout_per_class = forms.IntegerField(
        min_value=1, max_value=100_000, label="Held-out cells needed per class",
        help_text="With 20 cells a class's sensitivity of 90% is known to within about 70–97% (95% interval): "
                  "coarse, but enough to see a class collapse. With 3–4 cells the interval spans 30–95% and says nothing.")
    min_heldout_total = forms.IntegerField(
        min_value=1, max_value=1_000_000, label="Held-out cells needed in total",
        help_text="With 200 cells an overall accuracy of 85% is known to within about 79–89%, and McNemar's test on "
                  "the cells where the two versions differ can tell a real difference from chance once a dozen or "
                  "more cells change.")
    margin_percent = forms.FloatField(
        min_value=0, max_value=100, label="Largest allowed drop of one class's sensitivity (percentage points)")
