"""Imported at startup by neoq.contrib.django (AUTODISCOVER): registers the shop's handlers."""

import logging

from neoq import Job
from neoq.contrib.django import cron, handler

from .models import Receipt

log = logging.getLogger(__name__)


@handler("receipts", concurrency=2, max_retries=0)
def write_receipt(job: Job) -> None:
    Receipt.objects.create(order_id=job.payload["order"], via=job.payload.get("via", "handler"))
    log.info("receipt written for order %s (job %s)", job.payload["order"], job.id)


@cron("* * * * * *", queue="shop.heartbeat")
def heartbeat(job: Job) -> None:
    """Every second: ticked only by manage.py neoq_worker (tests count the ticks)."""
    log.info("heartbeat %s", job.payload["scheduled_at"])
