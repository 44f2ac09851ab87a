"""Views that enqueue inside the request's transaction (ATOMIC_REQUESTS)."""

import json

from django.http import HttpRequest, JsonResponse

from neoq import Job
from neoq.contrib.django import enqueue, enqueue_on_commit

from .models import Order
from .tasks import send_receipt_email


class OrderFailed(Exception):
    """Raised after the enqueue when the request asks for it: the transaction rolls back."""


def _order(request: HttpRequest) -> tuple[Order, bool]:
    body = json.loads(request.body or b"{}")
    return Order.objects.create(item=body.get("item", "book")), bool(body.get("fail"))


def create_order(request: HttpRequest) -> JsonResponse:
    order, fail = _order(request)
    job_id = enqueue(Job(queue="receipts", payload={"order": order.pk}))
    if fail:
        raise OrderFailed(job_id, order.pk)
    return JsonResponse({"order": order.pk, "job_id": job_id}, status=201)


def create_order_on_commit(request: HttpRequest) -> JsonResponse:
    order, fail = _order(request)
    enqueue_on_commit(Job(queue="receipts", payload={"order": order.pk, "via": "on_commit"}))
    if fail:
        raise OrderFailed(None, order.pk)
    return JsonResponse({"order": order.pk}, status=201)


def create_order_with_task(request: HttpRequest) -> JsonResponse:
    order, fail = _order(request)
    result = send_receipt_email.enqueue(order.pk)
    if fail:
        raise OrderFailed(result.id, order.pk)
    return JsonResponse({"order": order.pk, "result_id": result.id}, status=201)
