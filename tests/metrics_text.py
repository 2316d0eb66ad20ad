"""Reading the server's /metrics text in tests: one sample's value by metric name and labels."""

from prometheus_client.parser import text_string_to_metric_families


def metric(text: str, name: str, **labels) -> float:
    """The value of the sample `name` whose labels include `labels`, in Prometheus text `text`; 0.0 if there is none."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0
