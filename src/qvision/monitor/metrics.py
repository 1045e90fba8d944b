"""The monitor's Prometheus endpoint (prometheus-client): counters and gauges a scraper
reads while images flow. A registry of its own, so several monitors never collide."""

from __future__ import annotations

from qvision.errors import MissingExtraError, QVisionError


def parse_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise QVisionError(f"--metrics wants HOST:PORT, got '{text}'")
    return host, int(port)


class Metrics:
    def __init__(self, address: str):
        try:
            import prometheus_client as prom
        except ImportError:
            raise MissingExtraError("prometheus-client", "monitor", "--metrics") from None
        host, port = parse_address(address)
        self.registry = prom.CollectorRegistry()
        r = self.registry
        self.images = prom.Counter("qvision_images", "Images observed", registry=r)
        self.sampled = prom.Counter(
            "qvision_sampled_images", "Images also run through FP32", registry=r
        )
        self.alerts = prom.Counter("qvision_alerts", "Alerts raised", ["kind"], registry=r)
        self.agreement = prom.Gauge(
            "qvision_agreement", "Top-1 agreement with FP32 over the window", registry=r
        )
        self.saturation = prom.Gauge(
            "qvision_saturation_max", "Largest share of a grid's values clipped", registry=r
        )
        self.drift = prom.Gauge("qvision_drift_p", "Drift test p-value (adjusted)", registry=r)
        try:
            self.server, self.thread = prom.start_http_server(port, host, registry=r)
        except OSError as exc:
            raise QVisionError(f"--metrics {address}: cannot listen ({exc.strerror})") from None
        self._seen = self._sampled = 0

    def update(self, monitor, new_alerts) -> None:
        state = monitor.state()
        self.images.inc(monitor.seen - self._seen)
        self.sampled.inc(monitor.sampled - self._sampled)
        self._seen, self._sampled = monitor.seen, monitor.sampled
        for a in new_alerts:
            self.alerts.labels(kind=a.kind).inc()
        if state["agreement"] is not None:
            self.agreement.set(state["agreement"])
        self.saturation.set(float(state["saturation"].max()))
        if monitor.drift_p is not None:
            self.drift.set(monitor.drift_p)

    def close(self) -> None:
        self.server.shutdown()
