"""The telemetry lake: the collector's log tables as Parquet files that grow run by run, read with
DuckDB on one machine or with Spark on a cluster, by the same SQL the database answers.

``write.update`` adds what the collector received since the last run; ``read.LakeDatabase``
offers the read side of the collector's database interface over the files, so monitoring and
curation run on the lake unchanged.
"""
