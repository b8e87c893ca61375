"""The file MLflow logs as the routing model's code ("models from code": nothing is pickled).

Loading the model runs this file; the `engine` package it imports travels with the model
(`code_paths`, engine.routing.pyfunc), so manymodels need not be installed where it is served.
"""
import mlflow

from engine.routing.pyfunc import RoutingModel

mlflow.models.set_model(RoutingModel())
