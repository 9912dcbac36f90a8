"""Datasets side of the package: the builder, the Parquet export, dataset cards and streaming reads of a build."""
