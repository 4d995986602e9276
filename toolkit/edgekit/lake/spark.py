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
    try:
        spark = (SparkSession.builder.master(master).appName(app)
                 .config("spark.ui.enabled", "false").config("spark.sql.execution.arrow.pyspark.enabled", "true")
                 .config("spark.sql.session.timeZone", "UTC").getOrCreate())
    except Exception as exc:  # no Java, a bad master URL
        raise EdgekitError(f"Spark did not start ({str(exc).splitlines()[0][:200]})",
                           "install a Java runtime (apt-get install default-jre-headless) or check --spark-master") \
            from None
    spark.sparkContext.setLogLevel("ERROR")
    return spark
