"""The file MLflow logs as the routing model's code ("models from code": nothing is pickled).

Loading the model runs this file, so manymodels must be installed where it is served.
"""
import mlflow

from engine.routing.pyfunc import RoutingModel

mlflow.models.set_model(RoutingModel())
