"""Feature checks for rclpy and rosidl APIs that Humble lacks, with fallbacks that act the same.

The node is tested on Kilted and Jazzy. Humble's rclpy and generated message code miss two
Iron-and-later APIs it uses; each is found by a feature check (never a version string) and
replaced by a fallback with the same behaviour, which the node logs once at startup:

- ``Node.add_post_set_parameters_callback`` (rclpy from Iron on): see
  :func:`add_post_set_parameters_callback`.
- ``check_fields`` in message constructors (rosidl_generator_py from Iron on): see
  :func:`message_kwargs`.

``Subscription.get_publisher_count`` (rclpy from Iron on), used by the tools, is handled by
:func:`publisher_count`. Every other rclpy API the package calls exists in Humble.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rcl_interfaces.msg import SetParametersResult

POST_SET_FALLBACK = (
    'rclpy has no Node.add_post_set_parameters_callback (Humble): runtime parameter changes '
    'are applied by the on-set callback once every value passed validation')
CHECK_FIELDS_FALLBACK = (
    "{name} takes no check_fields (Humble's generated code): output messages are created "
    'without it, and their data buffers are read back after assignment')


def add_post_set_parameters_callback(
        node: Any, validate: Callable[[list[Any]], SetParametersResult],
        apply: Callable[[list[Any]], None]) -> str | None:
    """Call ``apply(parameters)`` after parameters of ``node`` were validated and set.

    ``validate`` must be the on-set callback ``node`` registered before declaring its
    parameters (so startup values are checked too); ``apply`` is registered now, after they
    were read. With rclpy's post-set callback, ``apply`` becomes that callback. Without it
    (Humble), ``validate`` is replaced by an on-set callback that runs it and, if every value
    passed, ``apply``. That is the same moment: Humble checks read-only flags, types and
    ranges before the on-set callbacks and stores the values right after them, and its only
    other on-set callback (the time source's, for ``use_sim_time``) rejects nothing the type
    check let through. Returns None, or the fallback's description for the startup log.
    """
    if hasattr(node, 'add_post_set_parameters_callback'):
        node.add_post_set_parameters_callback(apply)
        return None

    def validate_then_apply(parameters: list[Any]) -> SetParametersResult:
        result = validate(parameters)
        if result.successful:
            apply(parameters)
        return result

    node.remove_on_set_parameters_callback(validate)
    node.add_on_set_parameters_callback(validate_then_apply)
    return POST_SET_FALLBACK


def message_kwargs(msg_type: type) -> tuple[dict[str, bool], str | None]:
    """Return the constructor keywords for fast messages of ``msg_type`` and any fallback note.

    From Iron on, a message created with ``check_fields=True`` keeps an ``array.array``
    assigned to a sequence field instead of copying it. Humble's generated constructors
    reject unknown keywords with an AssertionError (and ignore them under ``python -O``);
    there the plain constructor is used and the setter keeps the array anyway.
    """
    try:
        msg_type(check_fields=True)
    except (AssertionError, TypeError):
        return {}, CHECK_FIELDS_FALLBACK.format(name=msg_type.__name__)
    return {'check_fields': True}, None


def publisher_count(node: Any, subscription: Any) -> int:
    """Return the publishers matched by ``subscription`` of ``node``.

    Humble's Subscription has no ``get_publisher_count``; there the node's graph count of
    publishers on the subscription's topic is used, which is the same number for the
    compatible publishers the tools wait for.
    """
    if hasattr(subscription, 'get_publisher_count'):
        return subscription.get_publisher_count()
    return node.count_publishers(subscription.topic_name)
