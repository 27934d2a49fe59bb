"""The webhook sender's cron job (settings.CRONJOBS): every minute, deliver what is due.

`send_webhooks --loop` (a systemd service) delivers within about a second; the cron job is the
fallback that also works where no service runs. Both can run at once: claims skip locked rows.
"""

from invoicing.cron import _run


def send_webhooks():
    _run("send_webhooks")
