"""Wait for subscribers before publishing, so that the first messages are not lost."""

from __future__ import annotations

from collections.abc import Iterable
import time

from rclpy.publisher import Publisher


def wait_for_subscribers(publishers: Iterable[Publisher], count: int = 1,
                         timeout: float = 10.0, settle: float = 0.5) -> list[str]:
    """Wait until every publisher has ``count`` matched subscriptions, at most ``timeout`` s.

    Returns the topics still short of subscribers (empty when all matched). No spinning is
    needed: matching is tracked by the middleware. The writer sees the match first; ``settle``
    seconds more let the readers match the writer too, since a best-effort reader drops data
    from a writer it has not matched yet.
    """
    publishers = list(publishers)
    deadline = time.monotonic() + timeout
    while True:
        missing = [p.topic_name for p in publishers if p.get_subscription_count() < count]
        if not missing:
            time.sleep(settle)
            return []
        if time.monotonic() >= deadline:
            return missing
        time.sleep(0.02)
