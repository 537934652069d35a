from django import forms

MODES = [("default", "default (multi-stage features, test-time augmentation)"),
         ("frozen", "frozen (the paper's recipe)"),
         ("finetune", "finetune (slow on a CPU)")]


def ensemble_choices():
    from classifier.ml.registry import ENSEMBLES

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
