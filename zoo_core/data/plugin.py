"""The core's data sources: a default plugin (zoo_core.registry.DEFAULT_PLUGINS)."""

from zoo_core import hookimpl
from zoo_core.data.corpus import CorpusConfig, CorpusSource
from zoo_core.data.mixture import MixtureConfig, MixtureSource
from zoo_core.data.mqar import MQARConfig, MQARSource

zoo_api = 1


@hookimpl
def register_data_sources(register):
    register(
        "corpus",
        CorpusSource,
        CorpusConfig,
        "prepared token shards (or text/jsonl/parquet, prepared on first use) as parallel streams",
    )
    register(
        "mixture",
        MixtureSource,
        MixtureConfig,
        "several corpora sampled by weight (sources={dir: weight}), deterministic from the seed",
    )
    register("mqar", MQARSource, MQARConfig, "synthetic multi-query associative recall (Zoology); accuracy is recall")
