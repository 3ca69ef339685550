"""Token shards on disk and the data sources that stream them."""
