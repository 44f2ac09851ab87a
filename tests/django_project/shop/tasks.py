"""django.tasks tasks of the shop: they run on neoq workers (TASKS uses NeoqTaskBackend)."""

import threading
import time

import django

if django.VERSION >= (6, 0):
    from django.tasks import task
else:
    from django_tasks import task

from .models import Receipt


@task
def send_receipt_email(order_id: int) -> str:
    Receipt.objects.create(order_id=order_id, via="task")
    return f"sent {order_id}"


@task(queue_name="mail", takes_context=True)
def send_with_context(context, order_id: int) -> None:
    Receipt.objects.create(order_id=order_id, via=f"attempt-{context.attempt}")


@task
def explode(message: str) -> None:
    raise ValueError(message)


#: ``hold`` sets ``held`` once it runs, then waits for ``release`` (tests look at it meanwhile).
held = threading.Event()
release = threading.Event()


@task
def hold(seconds: float) -> None:
    held.set()
    release.wait(30)
    time.sleep(seconds)  # the task's work, after the test has looked


class PaymentDeclined(Exception):
    """An app's own exception: get_result().errors names it by its dotted path."""


@task
def charge(amount: int) -> dict:
    if amount < 0:
        raise PaymentDeclined(f"cannot charge {amount}")
    return {"charged": amount}


@task
def leave() -> None:
    raise SystemExit("the task called exit()")


@task
def anywhere() -> str:
    return "ran"
