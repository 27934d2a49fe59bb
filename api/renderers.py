from rest_framework import renderers


class JSONRenderer(renderers.JSONRenderer):
    """DRF's renderer, for answers that echo what the client sent: a lone surrogate (a JSON escape
    such as "\\ud800" that is not half of a pair) cannot be encoded as UTF-8. Such text is answered
    with the surrogate written out as the six characters `\\ud800`, instead of a 500."""

    def render(self, data, accepted_media_type=None, renderer_context=None):
        try:
            return super().render(data, accepted_media_type, renderer_context)
        except UnicodeEncodeError:
            return super().render(without_lone_surrogates(data), accepted_media_type, renderer_context)


def without_lone_surrogates(value):
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {without_lone_surrogates(k): without_lone_surrogates(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [without_lone_surrogates(v) for v in value]
    return value
