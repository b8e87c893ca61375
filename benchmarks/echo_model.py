"""The serving benchmark's baseline: a pyfunc that returns its input (models from code)."""
import mlflow


class Echo(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input


mlflow.models.set_model(Echo())
