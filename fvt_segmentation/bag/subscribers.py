"""Wait for subscribers before publishing, so that the first messages are not lost."""

from __future__ import annotations

from collections.abc import Iterable
import time

from rclpy.node import Node
from rclpy.publisher import Publisher
from rclpy.qos import ReliabilityPolicy


def wait_for_subscribers(node: Node, publishers: Iterable[Publisher], count: int = 1,
                         timeout: float = 10.0, settle: float = 0.5,
                         reliable: bool = False) -> list[str]:
    """Wait until every publisher of ``node`` has ``count`` matched subscriptions.

    Returns the topics still short of subscribers after ``timeout`` s (empty when all
    matched). No spinning is needed: matching is tracked by the middleware. With ``reliable``
    (for reliable publishers) only reliable subscriptions count, and every subscription the
    graph shows must have matched: from then on they get every message published (kept and
    resent until acknowledged, within the publisher's depth), so there is nothing more to wait
    for. A best-effort subscription drops what arrives before it matched the publisher in
    turn, which the publisher cannot see: when one is on a topic, ``settle`` seconds more give
    it time to.
    """
    publishers = list(publishers)
    deadline = time.monotonic() + timeout
    while True:
        missing, best_effort = [], False
        for publisher in publishers:
            matched = publisher.get_subscription_count()
            graph = [info.qos_profile.reliability == ReliabilityPolicy.RELIABLE
                     for info in node.get_subscriptions_info_by_topic(publisher.topic_name)]
            best_effort = best_effort or not all(graph)
            # With reliable: enough reliable ones discovered, and none still unmatched.
            if matched < count or reliable and (sum(graph) < count or matched < len(graph)):
                missing.append(publisher.topic_name)
        if not missing:
            if best_effort:
                time.sleep(settle)
            return []
        if time.monotonic() >= deadline:
            return missing
        time.sleep(0.02)
