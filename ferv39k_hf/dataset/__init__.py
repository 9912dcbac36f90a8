"""Turning clip records into datasets: the builder, the Parquet export and its shards, cards, the private push."""
