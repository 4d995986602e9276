"""A Spark session for edgekit's batch work (predictions, lake queries): local[*] by default,
its Python workers running this interpreter."""

from __future__ import annotations

import os
import sys

from ..errors import EdgekitError


def session(master: str = "local[*]", app: str = "edgekit"):
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise EdgekitError("--engine spark needs pyspark (and a Java runtime)",
                           "pip install 'edgekit[spark]' and apt-get install default-jre-headless") from None
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = (SparkSession.builder.master(master).appName(app)
               .config("spark.ui.enabled", "false").config("spark.sql.execution.arrow.pyspark.enabled", "true")
               .config("spark.sql.session.timeZone", "UTC")
               # edgekit says what it is doing; Spark's stage bars would interleave with it on stderr
               .config("spark.ui.showConsoleProgress", "false"))
    if master.startswith("local"):
        # 200 shuffle partitions are sized for a cluster: on one machine each of a report's many
        # small aggregations paid for them (a 7-day report's queries took 0.85x the time at 4)
        builder = builder.config("spark.sql.shuffle.partitions", str(2 * (os.cpu_count() or 2)))
    try:
        spark = builder.getOrCreate()
    except Exception as exc:  # no Java, a bad master URL
        raise EdgekitError(f"Spark did not start ({str(exc).splitlines()[0][:200]})",
                           "install a Java runtime (apt-get install default-jre-headless) or check --spark-master") \
            from None
    spark.sparkContext.setLogLevel("ERROR")
    return spark
