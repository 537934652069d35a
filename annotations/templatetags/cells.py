from django import template

from annotations.selectors import model_call_text

register = template.Library()

ABSTAINED = "unidentified"  # the label a prediction carries when the model abstained


@register.filter
def model_call(prediction, names):
    """A stored model call (a Prediction, or a slide cell's pre-classification) in the portal's one
    wording: "Monocyte 81%" or "referred (best guess Monocyte 41%)". ``names``: class code -> name."""
    label = getattr(prediction, "label", None) or getattr(prediction, "predicted_class", "")
    top = prediction.top_class or label
    abstained = getattr(prediction, "abstained", label == ABSTAINED)
    code = top if abstained else label
    return model_call_text(name=names.get(code, code), confidence=prediction.confidence, abstained=abstained)


@register.filter
def class_name(code, names):
    """A class code as its name (the code itself when the class is unknown)."""
    return names.get(code, code) if code else code
