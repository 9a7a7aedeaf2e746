"""A Prometheus scrape as the deploy/ tests read it: the text, and every sample name a query
can select. Pure."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


class Scrape:
    def __init__(self, text: str) -> None:
        self.text = text
        #: every sample name a query can select (histograms: the _bucket/_sum/_count names)
        self.names = {
            s.name for family in text_string_to_metric_families(text) for s in family.samples
        }
