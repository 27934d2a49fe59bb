"""Posting an admin change form the way a browser would: every field as the page shows it,
then the changes on top (inline formsets included)."""

from django.urls import reverse


def _value(value):
    if value is None:
        return ""
    if hasattr(value, "pk"):
        return value.pk
    return value


def _form_data(form, prefix=None) -> dict:
    data = {}
    for name, field in form.fields.items():
        key = f"{prefix}-{name}" if prefix else name
        value = form.initial.get(name, field.initial)
        if isinstance(value, bool):
            if value:
                data[key] = "on"
            continue
        data[key] = _value(value)
    return data


def change_form_data(client, url: str) -> dict:
    page = client.get(url)
    assert page.status_code == 200, page.content.decode()[:300]
    data = _form_data(page.context["adminform"].form)
    for inline in page.context["inline_admin_formsets"]:
        formset = inline.formset
        management = formset.management_form
        for name in management.fields:
            data[f"{formset.prefix}-{name}"] = management.initial.get(name, "")
        for form in formset.initial_forms:
            data.update(_form_data(form, form.prefix))
    return data


def post_change(client, model, obj, **changes):
    """POST the admin change page of `obj` with `changes`; the response (302 when saved)."""
    url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_change", args=[obj.pk])
    data = change_form_data(client, url)
    data.update(changes)
    return client.post(url, data)
