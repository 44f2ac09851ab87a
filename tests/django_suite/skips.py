"""The tests of Django's ``tests/tasks`` not run on neoq, each with its reason.

Only tests of ``DummyBackend``'s or ``ImmediateBackend``'s own API or behaviour belong here,
never a part of the task contract that a real backend should meet.
"""

_DUMMY_CLASS = "asserts the backend is an instance of DummyBackend (the class itself)"
_IMMEDIATE_CLASS = "asserts the backend is an instance of ImmediateBackend (the class itself)"
_NO_RESULTS = "asserts ImmediateBackend cannot get or refresh results; neoq can (supports_get_result)"
_NO_DEFER = "asserts ImmediateBackend refuses run_after; neoq supports deferred tasks (supports_defer)"
_KEYBOARD = "asserts ImmediateBackend lets KeyboardInterrupt escape enqueue(); a neoq worker records it as a failure"
_DUMMY_MEMORY = "edits the result DummyBackend keeps in memory, then expects refresh() to read that edit back"
_DUMMY_CLEAR = "DummyBackend.clear() forgets its stored results; clear() is DummyBackend's own API"

SKIPS = {
    "tasks.test_dummy_backend.DummyBackendTestCase.test_using_correct_backend": _DUMMY_CLASS,
    "tasks.test_immediate_backend.ImmediateBackendTestCase.test_using_correct_backend": _IMMEDIATE_CLASS,
    "tasks.test_tasks.TaskTestCase.test_using_correct_backend": _DUMMY_CLASS,
    "tasks.test_tasks.TaskTestCase.test_get_backend": _DUMMY_CLASS,
    "tasks.test_dummy_backend.DummyBackendTestCase.test_refresh_result": _DUMMY_MEMORY,
    "tasks.test_dummy_backend.DummyBackendTestCase.test_refresh_result_async": _DUMMY_MEMORY,
    "tasks.test_dummy_backend.DummyBackendTestCase.test_clear": _DUMMY_CLEAR,
    "tasks.test_immediate_backend.ImmediateBackendTestCase.test_cannot_get_result": _NO_RESULTS,
    "tasks.test_immediate_backend.ImmediateBackendTestCase.test_cannot_refresh_result": _NO_RESULTS,
    "tasks.test_immediate_backend.ImmediateBackendTestCase.test_cannot_pass_run_after": _NO_DEFER,
    "tasks.test_immediate_backend.ImmediateBackendTestCase.test_throws_keyboard_interrupt": _KEYBOARD,
}

#: With the ``django-tasks`` backport standing in for ``django.tasks`` (Django 5.2): Django 6.0's suite
#: checks messages that the backport (or Python 3.11) words differently. Not neoq's code.
_SKEW = "the backport words this message differently from Django 6.0 ('async tasks', not 'async Tasks')"
_PY311 = "Python 3.11 words the abstract-class TypeError differently from the 3.12 Django 6.0 expects"
BACKPORT_SKIPS = {
    "tasks.test_custom_backend.CustomBackendTestCase.test_enqueue_async_task_on_non_async_backend": _SKEW,
    "tasks.test_dummy_backend.DummyBackendTestCase.test_validate_disallowed_async_task": _SKEW,
    "tasks.test_custom_backend.CustomBackendTestCase.test_no_enqueue": _PY311,
}

#: Skipped only while ``NeoqTaskBackend.supports_priority`` is False (neoq without ``Job.priority``).
_NO_PRIORITY = "NeoqTaskBackend.supports_priority is False in this build (neoq without Job.priority)"
PRIORITY_SKIPS = {
    "tasks.test_tasks.TaskTestCase.test_chained_using": _NO_PRIORITY,
    "tasks.test_tasks.TaskTestCase.test_using_priority": _NO_PRIORITY,
    "tasks.test_tasks.TaskTestCase.test_invalid_priority": _NO_PRIORITY,
}
