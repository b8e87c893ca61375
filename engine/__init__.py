"""manymodels: many-models parallel forecasting on Spark, Delta Lake and MLflow."""
__version__ = "0.1.0"
