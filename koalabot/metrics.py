"""Prometheus metrics: what an operator watches to know the bot is healthy and fast enough."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120)
_RATE_BUCKETS = (1, 2, 5, 10, 20, 40, 80, 160)


class Metrics:
    """One registry per engine, so several engines (tests, replicas in one process) don't clash."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.received = Counter(
            "koalabot_messages_received", "Messages taken in", ["platform"], registry=r
        )
        self.answered = Counter(
            "koalabot_messages_answered", "Messages answered", ["platform"], registry=r
        )
        self.failed = Counter(
            "koalabot_messages_failed", "Messages not answered", ["platform", "reason"], registry=r
        )
        self.ttft = Histogram(
            "koalabot_time_to_first_token_seconds",
            "Time from asking TGI to its first token",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.duration = Histogram(
            "koalabot_answer_duration_seconds",
            "Time from taking a message in to its final answer",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens_per_second = Histogram(
            "koalabot_tokens_per_second",
            "Generated tokens per second of streaming",
            buckets=_RATE_BUCKETS,
            registry=r,
        )
        self.backend_in_flight = Gauge(
            "koalabot_backend_requests_in_flight", "Generation requests in flight", registry=r
        )
        self.spooled = Gauge(
            "koalabot_spooled_messages",
            "Messages kept on local disk while the database is unreachable",
            registry=r,
        )
        self.spooled_votes = Gauge(
            "koalabot_spooled_votes",
            "Votes kept on local disk while the database is unreachable",
            registry=r,
        )
        self.spool_age = Gauge(
            "koalabot_spool_oldest_age_seconds",
            "How long the oldest kept message or vote has waited (as of the last /healthz)",
            registry=r,
        )
        self.set_aside = Counter(
            "koalabot_spool_set_aside",
            "Kept messages and votes the database kept refusing, moved out of the spool's way",
            ["kind"],
            registry=r,
        )
        self.backend_errors = Counter(
            "koalabot_backend_errors", "Backend failures by type", ["type"], registry=r
        )
        self.votes = Counter("koalabot_votes", "Votes recorded", ["rating"], registry=r)
        self.edits = Counter(
            "koalabot_platform_edit_calls", "Edits of streamed answers", ["platform"], registry=r
        )
        self.rate_limit_waits = Counter(
            "koalabot_platform_rate_limit_waits",
            "Times a platform asked us to slow down (429)",
            ["platform"],
            registry=r,
        )

    def render(self) -> bytes:
        """The text exposition format for GET /metrics."""
        return bytes(generate_latest(self.registry))
